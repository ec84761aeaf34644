"""Paired bootstrap intervals and the verdicts they decide.

``paired_difference(a, b)`` -> :class:`Interval` of the mean of ``a - b`` over paired samples (the same seed and
condition under two methods), from ``resamples`` bootstrap resamples of the pairs (percentile interval).
``verdict(interval)`` is ``"ahead"`` when the interval lies above zero, ``"behind"`` when below, else ``"level"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def bootstrap_mean(values, *, resamples: int = 10000, level: float = 0.95, seed: int = 0) -> Interval:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"bootstrap needs a non-empty 1-D sample, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("bootstrap sample has non-finite values; cap PSNR of identical outputs first")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(int(resamples), len(x)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(x.mean()), float(low), float(high), len(x))


def paired_difference(a, b, **options) -> Interval:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have the same shape, got {a.shape} and {b.shape}")
    return bootstrap_mean(a - b, **options)


def verdict(interval: Interval) -> str:
    if interval.low > 0:
        return "ahead"
    if interval.high < 0:
        return "behind"
    return "level"
