"""A gate threshold that moves along the trajectory: ``threshold * scale(progress)``.

``schedule = (start_scale, end_scale)`` scales the threshold linearly in ``progress = step / (num_steps - 1)``:
``start_scale`` at the first step, ``end_scale`` at the last. ``start < end`` is stricter early (the high-noise
steps that decide the image) and looser late. Where the step count is unknown the progress cannot be known,
so the start scale holds for the whole run (the stricter end of a schedule that loosens: no step is forecast on
a guess about how far the run has come).
"""

from __future__ import annotations

from .checks import positive_scales
from .step_scales import step_scale

ACCEPTED = "None or a pair (start_scale, end_scale) of finite numbers > 0"


def as_threshold_schedule(value) -> tuple[float, float] | None:
    """``value`` checked and converted to a pair of floats (None stays None)."""
    return positive_scales(value, "CGTaylorConfig.threshold_schedule", ACCEPTED, 2, 2)


def progress(step: int, num_steps: int | None) -> float | None:
    """How far step ``step`` is along a run of ``num_steps`` steps, 0 at the first and 1 at the last."""
    if num_steps is None:
        return None
    if num_steps <= 1:
        return 0.0
    return min(max(step / (num_steps - 1), 0.0), 1.0)


def effective_threshold(threshold: float, schedule: tuple[float, float] | None, step: int,
                        num_steps: int | None, step_scales: tuple[float, ...] | None = None) -> float:
    """The threshold the gate compares the error with at ``step``: ``threshold`` times the schedule's scale and the
    step's own scale (:mod:`cgtaylor.step_scales`); ``threshold`` itself without either."""
    threshold = threshold * step_scale(step_scales, step, num_steps)
    if schedule is None:
        return threshold
    start, end = schedule
    where = progress(step, num_steps)
    scale = start if where is None else start + (end - start) * where
    return threshold * scale
