"""A gate that knows which steps matter: per-step threshold scales fitted to how much a forecast at each step moves
the final output (``CGTaylorConfig(step_scales=...)``).

The first block's forecast error measures how far a forecast misses at a step, not what that miss costs: a sampler
passes an error at one step on to the output far more than at another (on the zoo's models the cost per unit of
error varies by one to two orders of magnitude along a run: `results-extended/README.md`, "Which steps matter"), and
one threshold cannot see that. ``fit_step_scales`` measures it once per model and forecaster: for each step ``s``
it runs the probe generation with every step computed but ``s`` (forecast), and takes the output's relative L2 error
over the first block's forecast error measured at ``s``: the step's gain. The scale of step ``s`` is the geometric mean of the
gains over that gain, so the gate forecasts ``s`` when ``first_block_error * gain(s)`` (the output error it predicts)
is under ``threshold * mean gain``. Scales are kept within ``[1 / SCALE_LIMIT, SCALE_LIMIT]``.

With step scales the last step is gated like every other (the scales say what forecasting it costs), where the
plain gate always computes it. A run's step count must equal the number of scales: they are fitted per step count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import torch

from .checks import positive_scales

SCALE_LIMIT = 100.0
ACCEPTED = "None or a list of finite numbers > 0, one per sampling step (fit_step_scales measures them)"


def as_step_scales(value) -> tuple[float, ...] | None:
    """``value`` checked and converted to a tuple of floats (None stays None)."""
    return positive_scales(value, "CGTaylorConfig.step_scales", ACCEPTED, 2)


def step_scale(scales: tuple[float, ...] | None, step: int, num_steps: int | None) -> float:
    """The scale of ``step`` (1 without scales); a run whose step count differs from the scales' is refused."""
    if scales is None:
        return 1.0
    if num_steps is None:
        raise ValueError("CGTaylorConfig.step_scales needs the run's step count, and neither the cache context nor a "
                         "pipeline told it: call through a pipeline, or set num_inference_steps")
    if num_steps != len(scales):
        raise ValueError(f"CGTaylorConfig.step_scales holds {len(scales)} scales (fitted for {len(scales)} steps), but "
                         f"this run has {num_steps} steps: fit them for {num_steps} steps with fit_step_scales")
    return scales[min(max(step, 0), num_steps - 1)]


def scales_from_gains(gains: dict[int, float], num_steps: int) -> tuple[float, ...]:
    """Per-step scales from measured gains (steps without a measurement get 1): the geometric mean of the gains over
    each step's gain, within ``[1 / SCALE_LIMIT, SCALE_LIMIT]``."""
    measured = {s: g for s, g in gains.items() if math.isfinite(g) and g > 0}
    if not measured:
        return tuple(1.0 for _ in range(num_steps))
    centre = math.exp(sum(math.log(g) for g in measured.values()) / len(measured))
    scales = []
    for step in range(num_steps):
        gain = gains.get(step)
        if gain is None or math.isnan(gain):
            scales.append(1.0)
        elif gain <= 0:
            scales.append(SCALE_LIMIT)  # a forecast that left the output unchanged
        else:
            scales.append(min(max(centre / gain, 1 / SCALE_LIMIT), SCALE_LIMIT))
    return tuple(scales)


@dataclass
class StepSensitivity:
    """What ``fit_step_scales`` measured, per step: the output's relative L2 error when only that step is forecast,
    the first block's forecast error there, their ratio (the gain) and the scale the gate uses."""

    num_steps: int
    output_errors: dict[int, float]
    first_block_errors: dict[int, float]
    gains: dict[int, float]
    scales: tuple[float, ...]

    def rows(self) -> list[dict]:
        return [{"step": s, "output_error": self.output_errors.get(s), "first_block_error": self.first_block_errors.get(s),
                 "gain": self.gains.get(s), "scale": self.scales[s]} for s in range(self.num_steps)]


def _relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    return float((output.float() - reference.float()).norm() / reference.float().norm().clamp_min(1e-12))


def fit_step_scales(transformer, generate: Callable[[], torch.Tensor], base_config, num_inference_steps: int,
                    progress: bool = False) -> StepSensitivity:
    """Measure each step's gain with ``base_config``'s forecaster and return the scales (``.scales``) to pass as
    ``CGTaylorConfig(step_scales=...)``. ``generate`` runs the probe generation (fixed seeds) and returns its output;
    it runs once in full and once per step that can be forecast (``num_inference_steps - 1`` runs at most), so use a
    small probe set. The transformer is left without CG-Taylor."""
    from tqdm.auto import tqdm

    from .api import apply_cg_taylor, cg_taylor_stats, remove_cg_taylor

    steps = int(num_inference_steps)
    if steps < 3:
        raise ValueError(f"fit_step_scales needs num_inference_steps >= 3 (step 0 is always computed), got {steps}")
    remove_cg_taylor(transformer)
    reference = generate()
    probe = replace(base_config, threshold=math.inf, compute_steps=None, num_inference_steps=steps, decide_ahead=False,
                    forecast_budget=None, threshold_schedule=None, step_scales=None, max_consecutive_forecasts=None,
                    analysis=False, error_feedback="none", warmup_steps=0)
    output_errors, first_errors, gains = {}, {}, {}
    try:
        for step in tqdm(range(1, steps), desc="step sensitivity", disable=not progress):
            apply_cg_taylor(transformer, replace(probe, compute_steps=[s for s in range(steps) if s != step]))
            output = generate()
            records = [r for r in cg_taylor_stats(transformer).records if r.step == step]
            remove_cg_taylor(transformer)
            errors = [r.first_block_error for r in records if not r.computed and r.first_block_error is not None]
            if not errors:
                continue  # not forecast (no history yet): the gate cannot forecast it either
            output_errors[step] = _relative_error(output, reference)
            first_errors[step] = sum(errors) / len(errors)
            gains[step] = output_errors[step] / first_errors[step] if first_errors[step] > 0 else math.inf
    finally:
        remove_cg_taylor(transformer)
    return StepSensitivity(steps, output_errors, first_errors, gains, scales_from_gains(gains, steps))
