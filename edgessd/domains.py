"""The KNN domain index: anchors (K-means centroids of prompt features) -> domain -> skip sets.

On disk, one directory per model: ``index.json`` (the sidecar: schema, model sha256,
feature spec, anchors, each domain's skip sets with the acceptance measured for them,
the out-of-domain threshold) and ``anchors-<sha>.bin`` (an hnswlib index, cosine space;
the sidecar names it and holds its sha256). A save writes the new .bin first, then swaps
the sidecar in atomically, then removes .bin files it no longer names: a crash at any
point leaves a sidecar that names an intact index.

Skip sets depend on the model, not the device, so an index is calibrated once per model
(``edgessd calibrate``). The device enters through the planner, which picks the draft
length and whether to speculate at all.
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import EdgessdError
from .features import FeatureSpec
from .fsutil import atomic_path, cache_dir, file_lock, sha256_file, write_json_atomic
from .skipset import SkipSet, parse_skip_spec

SCHEMA = 1
SIDECAR = "index.json"
MAX_LEARNED = 256  # online anchors kept per model (the oldest go first)


class IndexFileError(EdgessdError):
    """A domain index on disk is missing, corrupt, from another model, or of another schema."""


@dataclass(frozen=True)
class DomainSet:
    """One calibrated skip set of a domain, with the acceptance measured for it."""

    skip: SkipSet
    mean_accepted: float   # accepted drafts per cycle, measured by real speculative decoding
    alpha: float           # per-token acceptance (accepted / (accepted + rejections))
    draft_len: int         # d used when measuring

    def to_json(self) -> dict:
        return {"skip": self.skip.spec(), "n_skipped": self.skip.n_skipped, "mean_accepted": self.mean_accepted,
                "alpha": self.alpha, "draft_len": self.draft_len}

    @staticmethod
    def from_json(d: dict) -> DomainSet:
        return DomainSet(parse_skip_spec(d["skip"]), float(d["mean_accepted"]), float(d["alpha"]),
                         int(d["draft_len"]))


@dataclass(frozen=True)
class Route:
    """Where a prompt landed."""

    domain: str            # the chosen domain (a calibrated one, or a learned anchor's)
    distance: float        # cosine distance to the nearest anchor
    in_domain: bool        # distance within the calibrated out-of-domain threshold
    votes: dict[str, float]  # similarity-weighted votes of the k nearest anchors


@dataclass
class DomainIndex:
    model_sha256: str
    feature: FeatureSpec
    dim: int
    anchors: np.ndarray                 # float32 [n, dim], unit rows
    anchor_domains: list[str]           # [n] domain of each anchor
    domains: dict[str, list[DomainSet]]  # domain -> sets, best first
    ood_distance: float                 # a nearest-anchor distance above this is out of domain
    k: int = 3
    learned: list[str] = field(default_factory=list)  # learned domains, oldest first
    meta: dict = field(default_factory=dict)          # calibration settings and timings
    _hnsw: object | None = field(default=None, repr=False)
    _evicted: set = field(default_factory=set, repr=False)  # learned domains this process dropped

    # -- queries ----------------------------------------------------------------------------------
    def _index(self):
        if self._hnsw is None:
            import hnswlib

            idx = hnswlib.Index(space="cosine", dim=self.dim)
            idx.init_index(max_elements=max(len(self.anchors), 1), ef_construction=200, M=16)
            if len(self.anchors):
                idx.add_items(self.anchors, np.arange(len(self.anchors)))
            idx.set_ef(max(50, 2 * self.k))
            self._hnsw = idx
        return self._hnsw

    def route(self, feature: np.ndarray, k: int | None = None) -> Route:
        """The domain of the k nearest anchors (votes weighted by similarity)."""
        k = min(k or self.k, len(self.anchors))
        if np.shape(feature) != (self.dim,):
            raise IndexFileError(f"the index holds {self.dim}-dim features, got shape {np.shape(feature)}")
        labels, dists = self._index().knn_query(np.asarray(feature, np.float32)[None, :], k=k)
        votes: dict[str, float] = {}
        for lab, dist in zip(labels[0], dists[0]):
            dom = self.anchor_domains[int(lab)]
            votes[dom] = votes.get(dom, 0.0) + max(1.0 - float(dist), 1e-6)
        nearest = float(dists[0][0])
        # a learned anchor answers for itself only when it is the nearest one
        first = self.anchor_domains[int(labels[0][0])]
        domain = first if first in self.learned else max(votes, key=votes.__getitem__)
        return Route(domain, nearest, nearest <= self.ood_distance, votes)

    def best_set(self, domain: str) -> DomainSet:
        return self.domains[domain][0]

    # -- learning ---------------------------------------------------------------------------------
    def learn(self, feature: np.ndarray, found: DomainSet) -> str:
        """Add ``feature`` as an anchor of a new learned domain with the set found online.

        Keeps at most MAX_LEARNED learned anchors: the oldest is dropped first.
        """
        name = f"learned-{int(time.time() * 1e3):x}-{len(self.learned)}"
        self.domains[name] = [found]
        self.learned.append(name)
        self.anchors = np.vstack([self.anchors, np.asarray(feature, np.float32)[None, :]])
        self.anchor_domains.append(name)
        self._bound()
        return name

    def _bound(self) -> None:
        """Drop the oldest learned anchors beyond MAX_LEARNED."""
        while len(self.learned) > MAX_LEARNED:
            old = self.learned.pop(0)
            self._evicted.add(old)
            keep = [i for i, d in enumerate(self.anchor_domains) if d != old]
            self.anchors = self.anchors[keep]
            self.anchor_domains = [self.anchor_domains[i] for i in keep]
            del self.domains[old]
        self._hnsw = None

    def _merge_learned(self, other: DomainIndex) -> None:
        """Take the anchors another process learned and saved (same model and feature), oldest first."""
        if other.dim != self.dim or other.feature != self.feature:
            return
        for name in other.learned:
            if name in self.domains or name in self._evicted:
                continue
            rows = [i for i, d in enumerate(other.anchor_domains) if d == name]
            self.anchors = np.vstack([self.anchors, other.anchors[rows]])
            self.anchor_domains += [name] * len(rows)
            self.domains[name] = other.domains[name]
            self.learned.append(name)
        self.learned.sort(key=lambda n: n.split("-")[1] if n.count("-") >= 2 else n)
        self._bound()

    # -- files ------------------------------------------------------------------------------------
    def sidecar(self, index_file: str, index_sha256: str) -> dict:
        return {
            "schema": SCHEMA, "model_sha256": self.model_sha256, "feature": self.feature.to_json(), "dim": self.dim,
            "k": self.k, "ood_distance": self.ood_distance, "index_file": index_file, "index_sha256": index_sha256,
            "anchors": self.anchor_domains, "learned": self.learned,
            "domains": {d: [s.to_json() for s in sets] for d, sets in self.domains.items()}, "meta": self.meta,
        }

    def save(self, directory: Path) -> Path:
        """Write the index into ``directory`` (see the module docstring for the crash-safe order)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with file_lock(directory / ".lock"):
            if (directory / SIDECAR).exists():  # another process may have learned anchors meanwhile
                with contextlib.suppress(IndexFileError):
                    self._merge_learned(_load_unlocked(directory, self.model_sha256))
            with atomic_path(directory / "anchors.tmp.bin") as tmp:
                self._index().save_index(str(tmp))
                sha = sha256_file(tmp)
                name = f"anchors-{sha[:16]}.bin"
            # atomic_path renamed it to anchors.tmp.bin; give it its content name (atomic too)
            (directory / "anchors.tmp.bin").replace(directory / name)
            write_json_atomic(directory / SIDECAR, self.sidecar(name, sha))
            for old in directory.glob("anchors-*.bin"):
                if old.name != name:
                    with contextlib.suppress(OSError):
                        old.unlink()
        return directory / SIDECAR


def index_dir(model_sha256: str) -> Path:
    """Where the user's index of a model lives (calibrated or learned)."""
    return cache_dir() / "index" / model_sha256[:16]


def _need(d: dict, key: str, kind: type | tuple[type, ...], where: Path):
    v = d.get(key)
    if not isinstance(v, kind) or isinstance(v, bool) and kind is not bool:
        raise IndexFileError(f"{where}: field {key!r} is missing or has the wrong type")
    return v


def load_index(directory: Path, *, model_sha256: str | None = None) -> DomainIndex:
    """Read and check an index directory; IndexFileError says what is wrong with it.

    Reads under the directory's lock, so a concurrent save is never seen half done.
    """
    directory = Path(directory)
    if not (directory / SIDECAR).exists():
        raise IndexFileError(f"no domain index at {directory}")
    if _is_shipped(directory):  # never written, so no lock: nothing is created in the package
        return _load_unlocked(directory, model_sha256)
    try:
        with file_lock(directory / ".lock"):
            return _load_unlocked(directory, model_sha256)
    except PermissionError:  # a read-only copy elsewhere: nobody saves there either
        return _load_unlocked(directory, model_sha256)


def _is_shipped(directory: Path) -> bool:
    from .registry import shipped_dir

    return directory.resolve().parent == (shipped_dir("models") / "index").resolve()


def _load_unlocked(directory: Path, model_sha256: str | None) -> DomainIndex:
    side = directory / SIDECAR
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexFileError(f"no domain index at {directory}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise IndexFileError(f"{side}: unreadable ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise IndexFileError(f"{side}: not an index sidecar")
    if data.get("schema") != SCHEMA:
        raise IndexFileError(f"{side}: schema {data.get('schema')!r}, this edgessd reads {SCHEMA}")
    sha = _need(data, "model_sha256", str, side)
    if model_sha256 is not None and sha != model_sha256:
        raise IndexFileError(f"{side}: made for another model ({sha[:12]}…)")
    try:
        feature = FeatureSpec.from_json(data.get("feature"))
    except EdgessdError as e:
        raise IndexFileError(f"{side}: {e}") from None
    dim = _need(data, "dim", int, side)
    k = _need(data, "k", int, side)
    ood = _need(data, "ood_distance", (int, float), side)
    names = _need(data, "anchors", list, side)
    learned = _need(data, "learned", list, side)
    raw_domains = _need(data, "domains", dict, side)
    if dim < 1 or k < 1 or not 0 <= ood <= 2 or not names:
        raise IndexFileError(f"{side}: dim, k, ood_distance or anchors out of range")
    try:
        domains = {str(dn): [DomainSet.from_json(s) for s in sets] for dn, sets in raw_domains.items()}
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, EdgessdError) as e:
        raise IndexFileError(f"{side}: bad domain entry ({e})") from None
    if any(not isinstance(n, str) or n not in domains or not domains[n] for n in names + learned):
        raise IndexFileError(f"{side}: an anchor names a domain with no skip set")
    bin_name = _need(data, "index_file", str, side)
    if "/" in bin_name or "\\" in bin_name or not bin_name.startswith("anchors-"):
        raise IndexFileError(f"{side}: bad index_file {bin_name!r}")
    path = directory / bin_name
    try:
        if sha256_file(path) != data.get("index_sha256"):
            raise IndexFileError(f"{path}: does not match its checksum")
        check_hnsw_header(path, dim, len(names))
    except OSError as e:
        raise IndexFileError(f"{path}: unreadable ({e.strerror or e})") from None
    import hnswlib

    idx = hnswlib.Index(space="cosine", dim=dim)
    try:
        idx.load_index(str(path), max_elements=len(names))
        anchors = np.asarray(idx.get_items(list(range(len(names)))), np.float32)
    except (RuntimeError, ValueError, IndexError) as e:
        raise IndexFileError(f"{path}: unreadable hnswlib index ({e})") from None
    if anchors.shape != (len(names), dim):
        raise IndexFileError(f"{path}: holds {anchors.shape}, the sidecar says {len(names)} x {dim}")
    idx.set_ef(max(50, 2 * k))
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    return DomainIndex(sha, feature, dim, anchors, [str(n) for n in names], domains, float(ood), k,
                       [str(n) for n in learned], meta, idx)


def check_hnsw_header(path: Path, dim: int, count: int) -> None:
    """IndexFileError unless hnswlib's file holds ``count`` vectors of ``dim`` floats.

    hnswlib trusts the dim it is given and would read past its buffers otherwise. Its
    header starts with six size_t: offsetLevel0, max_elements, cur_element_count,
    size_data_per_element, label_offset, offsetData; a vector is label_offset - offsetData bytes.
    """
    import struct

    with open(path, "rb") as f:
        head = f.read(48)
        size = f.seek(0, 2)
    if len(head) < 48:
        raise IndexFileError(f"{path}: too short for an hnswlib index")
    off0, _max, cur, per, label_off, data_off = struct.unpack("<6Q", head)
    if cur != count:
        raise IndexFileError(f"{path}: holds {cur} anchors, the sidecar names {count}")
    if label_off - data_off != 4 * dim:
        raise IndexFileError(f"{path}: holds {(label_off - data_off) // 4}-dim vectors, the sidecar says {dim}")
    if off0 + cur * per > size:
        raise IndexFileError(f"{path}: truncated")


def kmeans(x: np.ndarray, k: int, *, seed: int = 0, iters: int = 50) -> np.ndarray:
    """K-means++ centroids of unit rows ``x`` (cosine: centroids re-normalised), NumPy only."""
    rng = np.random.default_rng(seed)
    n = len(x)
    k = min(k, n)
    centers = [x[rng.integers(n)]]
    for _ in range(1, k):
        d2 = np.min(np.stack([np.sum((x - c) ** 2, axis=1) for c in centers]), axis=0)
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
        centers.append(x[rng.choice(n, p=p)])
    c = np.stack(centers)
    for _ in range(iters):
        assign = np.argmax(x @ c.T, axis=1)
        new = np.stack([x[assign == j].mean(axis=0) if np.any(assign == j) else c[j] for j in range(k)])
        new /= np.maximum(np.linalg.norm(new, axis=1, keepdims=True), 1e-12)
        if np.allclose(new, c):
            break
        c = new
    return c.astype(np.float32)


def shipped_index_dir(model_sha256: str) -> Path:
    """An index calibrated by edgessd's developers and shipped with the package (models/index/):
    read-only, and read without a lock (nothing saves there; learned anchors go to index_dir)."""
    from .registry import shipped_dir

    return shipped_dir("models") / "index" / model_sha256[:16]
