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
