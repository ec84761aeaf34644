"""Argument checks shared by the package's entry points: each raises naming the argument and what it accepts."""

from __future__ import annotations

import math
import numbers

import torch

# dtypes the models and the Taylor caches compute in (float8 types hold values but most ops reject them)
COMPUTE_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def positive_int(name: str, value, minimum: int = 1) -> int:
    """``value`` as an int when it is a whole number >= ``minimum`` (an integral float such as 50.0 included)."""
    whole = isinstance(value, numbers.Integral) or (isinstance(value, float) and math.isfinite(value)
                                                     and value.is_integer())
    if isinstance(value, bool) or not whole or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def compute_dtype(name: str, value) -> torch.dtype:
    """A floating torch dtype from a dtype or its name ('bfloat16', 'torch.float16'); one of ``COMPUTE_DTYPES``."""
    dtype = value
    if isinstance(value, str):
        dtype = getattr(torch, value.strip().replace("torch.", ""), None)
    if dtype not in COMPUTE_DTYPES:
        accepted = ", ".join(str(d).replace("torch.", "") for d in COMPUTE_DTYPES)
        raise ValueError(f"{name} must be one of the torch dtypes {accepted} (a torch.dtype or its name), "
                         f"got {value!r}")
    return dtype


def positive_scales(value, name: str, accepted: str, min_length: int, max_length: int | None = None) -> tuple | None:
    """``value`` (None, or a list of finite numbers > 0 of an accepted length) as a tuple of floats; else a
    ValueError naming ``name`` and what it ``accepted``."""
    if value is None:
        return None
    scales = None if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") else list(value)
    numeric = scales is not None and all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scales)
    if (not numeric or len(scales) < min_length or (max_length is not None and len(scales) > max_length)
            or not all(math.isfinite(s) and s > 0 for s in scales)):
        shown = value if scales is None or len(scales) <= 8 else f"{scales[:8]}... ({len(scales)} values)"
        raise ValueError(f"{name} must be {accepted}, got {shown!r}")
    return tuple(float(s) for s in scales)
