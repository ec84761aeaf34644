"""Forced schedules: which S of N steps the end-to-end runs compute in full (``CGTaylorConfig.compute_steps``)."""

from __future__ import annotations

from ..api import cg_taylor_stats
from ..config import CGTaylorConfig
from .specs import ModelSpec


def interval_schedule(num_steps: int, warmup_steps: int, interval: int | None) -> tuple[int, ...]:
    """Steps ``0..warmup_steps-1``, then every ``interval``-th step after the warm-up (None: none), and the last."""
    steps = set(range(max(warmup_steps, 1))) | {num_steps - 1}
    if interval is not None:
        steps |= set(range(max(warmup_steps, 1) - 1 + interval, num_steps, interval))
    return tuple(sorted(steps))


def forced_compute_steps(num_steps: int, full_steps: int) -> tuple[int, ...]:
    """The ``full_steps`` of ``num_steps`` computed by the forced runs: a warm-up, then a regular interval.

    Among the (warm-up, interval) pairs that hit the count, the one with the shortest warm-up (full steps spread
    most evenly).
    """
    if not 2 <= full_steps <= num_steps:
        raise ValueError(f"full_steps must be between 2 (first and last step) and {num_steps}, got {full_steps}")
    best = None
    for interval in [None, *range(2, num_steps + 1)]:
        for warmup in range(1, num_steps + 1):
            steps = interval_schedule(num_steps, warmup, interval)
            if len(steps) == full_steps:
                if best is None or warmup < best[0]:
                    best = (warmup, steps)
                break
    assert best is not None  # warm-up alone reaches every count from 2 to N
    return best[1]


def schedule_config(spec: ModelSpec, num_steps: int, full_steps: int) -> CGTaylorConfig:
    """The spec's CG-Taylor settings with the forced schedule of ``full_steps`` of ``num_steps``."""
    return CGTaylorConfig(**spec.cg_taylor).with_updates(
        compute_steps=forced_compute_steps(num_steps, full_steps), num_inference_steps=num_steps)


def scaled_full_steps(full_steps: list[int], num_steps: int, reference_steps: int = 50) -> list[int]:
    """Full-step counts for ``num_steps`` with the same fractions as ``full_steps`` of ``reference_steps``."""
    if num_steps == reference_steps:
        return list(full_steps)
    scaled = [min(num_steps, max(2, round(s * num_steps / reference_steps))) for s in full_steps]
    return list(dict.fromkeys(scaled))


def computed_per_context(transformer) -> dict[str, int]:
    return {name: t.computed_steps for name, t in cg_taylor_stats(transformer).totals().items()}
