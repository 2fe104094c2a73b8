"""Fingerprint of a model's class, config and weights (the cache's key space)."""

from __future__ import annotations

import hashlib

import torch

__all__ = ["model_fingerprint"]


def model_fingerprint(model, extra: str = "") -> str:
    """sha1 of the model class, config and every parameter/buffer (so a retrained model never hits
    a stale cache)."""
    h = hashlib.sha1(type(model).__name__.encode())
    cfg = getattr(model, "config", None)
    if cfg is not None:
        try:
            h.update(cfg.to_json_string(use_diff=False).encode())
        except (TypeError, ValueError):
            h.update(repr(cfg).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(dtype=torch.uint8).numpy().tobytes())
    h.update(extra.encode())
    return h.hexdigest()[:16]
