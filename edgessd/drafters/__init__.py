"""Drafters: proposers of tokens for the full model to check. Each proposes and observes.

A drafter that returns None means "decode this step plainly".
"""
from __future__ import annotations

from .base import Draft, Drafter, DraftRequest, NoDrafter
from .layerskip import LayerSkipDrafter
from .lookup import LookupDrafter, find_continuation

__all__ = ["Draft", "Drafter", "DraftRequest", "NoDrafter", "LayerSkipDrafter", "LookupDrafter", "find_continuation"]
