"""What a prompt is about, in the model's own terms, at no extra compute.

KNN-SSD represents a prompt by the mean of its final hidden states. Getting those from
llama.cpp costs the last layer over every prompt token (llama.cpp computes it only for
the rows that need logits), and its embeddings API adds the LM head over every token too
(+15% prefill on qwen2.5-coder-1.5b). edgessd instead reads what prefill already wrote:
the attention values (V rows) of the last few layers in the KV cache. A layer's V row is
a linear map of that layer's normalised input hidden state, so the mean of V over the
prompt is a linear image of the mean hidden state entering the layer. Reading it is a
copy out of the cache (patch 0004, ``llama_kv_v_mean``), well under a millisecond.

A feature is the concatenation, over the chosen layers, of each layer's mean V scaled
to unit length, and then scaled to unit length as a whole (cosine distance in the index).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ._capi import Context
from .errors import InvalidArgumentError

FEATURE_KIND = "kv-v-mean"


@dataclass(frozen=True)
class FeatureSpec:
    """Which cached values make a feature. Stored in the index sidecar: a feature is only
    comparable with features made by the same spec on the same model."""

    kind: str = FEATURE_KIND
    last_layers: int = 4  # the mean V of the model's last N layers, concatenated

    def layers(self, n_layer: int) -> list[int]:
        n = min(max(self.last_layers, 1), n_layer)
        return list(range(n_layer - n, n_layer))

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(d: dict) -> FeatureSpec:
        if not isinstance(d, dict) or d.get("kind") != FEATURE_KIND:
            raise InvalidArgumentError(f"unknown feature spec {d!r}")
        n = d.get("last_layers")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise InvalidArgumentError(f"feature spec needs last_layers >= 1, got {n!r}")
        return FeatureSpec(kind=FEATURE_KIND, last_layers=n)


def unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def cached_feature(ctx: Context, p0: int, p1: int, spec: FeatureSpec = FeatureSpec()) -> np.ndarray | None:
    """The feature of the text cached at positions ``p0 <= pos < p1``; None if none is cached."""
    parts = []
    for il in spec.layers(ctx.model.n_layer):
        v = ctx.kv_value_mean(il, p0, p1)
        if v is None:
            return None
        parts.append(unit(v.astype(np.float32)))
    return unit(np.concatenate(parts)).astype(np.float32)
