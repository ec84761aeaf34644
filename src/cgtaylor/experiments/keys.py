"""How stored results are named and written: a content digest of the settings that made a file (so a changed
setting never reads a stale file), the JSON form of values JSON cannot write, and the stamp of the weights."""

from __future__ import annotations

import hashlib
import json

import torch


def digest(value, n: int = 12) -> str:
    """The first ``n`` hex digits of the SHA-1 of ``value`` as sorted-key JSON (other values written as ``str``)."""
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:n]


def json_default(value):
    """JSON for the values a row holds that JSON cannot write: 0-d tensors and numpy scalars as numbers, dtypes and
    anything else as text."""
    if isinstance(value, torch.dtype):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def weights_stamp(model_cfg: dict) -> str | None:
    """Which weights a result was measured with: a content hash of a zoo model's weights, else the checkpoint path."""
    if model_cfg.get("source") != "zoo":
        return model_cfg.get("path")
    from ..zoo import weights_id

    try:
        return weights_id(model_cfg.get("zoo_name", model_cfg["name"]))
    except FileNotFoundError:
        return None
