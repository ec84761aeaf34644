"""Configuration of Confidence-Gated Taylor forecasting."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch

from .checks import compute_dtype
from .decide_ahead import check_decide_ahead
from .error_feedback import check_error_feedback
from .forecast_bases import HERMITE_SCALE
from .forecast_budget import check_forecast_budget
from .gate_scope import check_gate_scope
from .step_scales import as_step_scales
from .threshold_schedule import as_threshold_schedule

FORECAST_MODES = ("last_block", "residual", "modules")
TAYLOR_FORMULAS = ("newton", "taylorseer", "hermite", "least_squares", "bdf2_heun")
MAX_ORDER = 4
MAX_FIT_POINTS = 16


def _require_int(name: str, value, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"CGTaylorConfig.{name} must be an integer, got {value!r}")
    upper = "" if high is None else f" and <= {high}"
    if value < low or (high is not None and value > high):
        raise ValueError(f"CGTaylorConfig.{name} must be >= {low}{upper}, got {value}")


def _as_dtype(value) -> torch.dtype | None:
    return None if value is None else compute_dtype("CGTaylorConfig.cache_dtype (or None: as the features)", value)


def _as_schedule(steps, num_inference_steps: int | None) -> tuple[int, ...] | None:
    """``compute_steps`` as a sorted tuple of distinct step indices (None stays None)."""
    if steps is None:
        return None
    accepted = "None or a list of step indices >= 0 that includes 0"
    if isinstance(steps, (str, bytes)) or not hasattr(steps, "__iter__"):
        raise ValueError(f"CGTaylorConfig.compute_steps must be {accepted}, got {steps!r}")
    steps = list(steps)
    bad = [s for s in steps if isinstance(s, bool) or not isinstance(s, int) or s < 0]
    if bad:
        raise ValueError(f"CGTaylorConfig.compute_steps must be {accepted}; {bad} are not step indices")
    if 0 not in steps:
        raise ValueError(f"CGTaylorConfig.compute_steps must include step 0 (the first step has nothing to forecast "
                         f"from), got {steps}")
    if num_inference_steps is not None and max(steps) >= num_inference_steps:
        raise ValueError(f"CGTaylorConfig.compute_steps must be steps below num_inference_steps={num_inference_steps}"
                         f", got {sorted(s for s in steps if s >= num_inference_steps)}")
    return tuple(sorted(set(steps)))


def _check_basis_options(config) -> None:
    scale = config.hermite_scale
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"CGTaylorConfig.hermite_scale must be a finite number > 0, got {scale!r}")
    if config.fit_points is None:
        return
    if config.taylor_formula != "least_squares":
        raise ValueError(f"CGTaylorConfig.fit_points applies to taylor_formula='least_squares' only; leave it None "
                         f"with taylor_formula={config.taylor_formula!r}")
    _require_int("fit_points", config.fit_points, max(config.first_block_order, config.last_block_order) + 1,
                 MAX_FIT_POINTS)


@dataclass
class CGTaylorConfig:
    """Settings of the confidence gate and the two Taylor forecasters.

    Args:
        threshold: relative L1 error ``mean|F1(t) - h1| / mean|h1|`` of the first block's own forecast under
            which a step is forecast instead of computed. 0 computes every step.
        warmup_steps: leading steps that are always computed in full.
        first_block_order: Taylor order of the first block's forecaster (the gate's probe).
        last_block_order: Taylor order of the forecaster that stands in for the skipped blocks.
        forecast: ``"last_block"`` forecasts the last block's output (the paper); ``"residual"`` forecasts
            ``last - first`` and adds the first block's output computed at this step; ``"modules"`` runs every
            block but forecasts its attention and MLP outputs (each with a ladder of ``last_block_order``), so the
            current step's modulation is applied exactly (:mod:`cgtaylor.module_forecast`; a larger cache).
        taylor_formula: ``"newton"`` evaluates the ladder as Newton's divided-difference interpolation over the
            actual refresh steps (exact on polynomials of the ladder's order, any spacing); ``"taylorseer"``
            is the TaylorSeer recursion ``sum F[i] (t-s)^i / i!`` with differences over the last interval.
            Both agree at order 0 and 1. ``"hermite"`` weighs TaylorSeer's factors with HiCache's scaled
            Hermite polynomials (arXiv 2508.16984); ``"least_squares"`` fits a polynomial of the ladder's order to
            the last ``fit_points`` refreshes; ``"bdf2_heun"`` is FoCa's BDF2 predictor with a Heun corrector
            (arXiv 2508.16211) on the refreshes' actual steps (:mod:`cgtaylor.forecast_bases`).
        hermite_scale: HiCache's contraction ``sigma`` in ``sigma^k H_k(sigma x) / k!`` (``"hermite"`` only).
        fit_points: how many past refreshes ``"least_squares"`` fits (>= order + 1 of both ladders; None: order + 1,
            i.e. interpolation). The cache then holds that many features per forecaster.
        max_consecutive_forecasts: cap on forecast steps in a row (None: no cap).
        probe_block: which block the gate measures, counted from 1 (1: the first block, the method). Blocks
            before it always run; the blocks after it, up to the last, are skipped on forecast steps, and the
            residual forecast is taken from its output. Must be below the model's block count (the last block
            is the one forecast); ``apply_cg_taylor`` checks it against the model.
        compute_steps: a forced schedule: the step indices computed in full, every other step forecast (the
            gate then measures and records its error but decides nothing). Replaces the threshold, warm-up,
            cap and last-step rules; must include step 0 (nothing to forecast from before it); steps beyond the
            run are never reached. None: the gate decides.
        num_inference_steps: step count, used when neither the cache context nor a pipeline tells it; the
            last step is always computed in full when it is known.
        cache_dtype / cache_device: where the Taylor factors are kept (None: as the features).
        analysis: compute every step in full while recording what the gate would have decided and both
            forecast errors; the forecasters are refreshed exactly as the gate would have refreshed them.
        threshold_schedule: ``(start_scale, end_scale)``: the threshold at step s is ``threshold * scale``, the
            scale linear from ``start_scale`` at the first step to ``end_scale`` at the last
            (:mod:`cgtaylor.threshold_schedule`; where the step count is unknown the start scale holds). None:
            one threshold for the whole run. Not with ``compute_steps`` (a forced schedule has no threshold).
        error_feedback: ``"none"``, or ``"scale"``: on a forecast step, scale the last-block forecast's increment
            by how far the first block moved against its own forecast, per sample (:mod:`cgtaylor.error_feedback`).
        gate_scope: ``"shared"`` (under CFG the uncond pass follows the cond pass's decisions; one error over
            the batch), ``"per_branch"`` (each cache context decides from its own error) or ``"per_sample"``
            (each context decides on the largest per-sample error) (:mod:`cgtaylor.gate_scope`).
        forecast_budget: the share of each run's steps that is forecast, exactly: ``round(share * steps)`` steps
            (at most every step after the warm-up but the last), whatever the prompt, so the run's FLOPs are fixed
            before it starts. The gate still chooses which steps: its threshold is scaled by how far the run is
            behind or ahead of its budget (:mod:`cgtaylor.forecast_budget`). Needs the step count (a pipeline, the
            cache context or ``num_inference_steps``). Not with ``compute_steps``. None: no budget.
        decide_ahead: each computed step plans how many of the next steps are forecast, from the first block's
            forecast error measured there and grown with the distance, so a forecast step runs no first block
            (:mod:`cgtaylor.decide_ahead`). Needs ``forecast`` ``"last_block"`` or ``"modules"`` and probe_block 1;
            not with ``compute_steps``, ``forecast_budget`` or ``error_feedback``. Without a known step count a
            plan covers at most ``max_consecutive_forecasts`` steps (one without a cap).
        step_scales: one threshold scale per sampling step, fitted by :func:`cgtaylor.fit_step_scales` to how much a
            forecast at each step moves the output: the gate forecasts step s when the error is under
            ``threshold * step_scales[s]`` (times any schedule or budget scale), and gates the last step too
            (:mod:`cgtaylor.step_scales`). A run must have as many steps as there are scales. Not with
            ``compute_steps``. None: one threshold for every step, the last always computed.

    A config is immutable once built (the hooks read it while sampling, and every value was checked here):
    ``config.with_updates(threshold=0.1)`` gives a checked copy.
    """

    threshold: float = 0.05
    warmup_steps: int = 3
    first_block_order: int = 1
    last_block_order: int = 1
    forecast: str = "residual"
    taylor_formula: str = "newton"
    hermite_scale: float = HERMITE_SCALE
    fit_points: int | None = None
    max_consecutive_forecasts: int | None = None
    probe_block: int = 1
    compute_steps: tuple[int, ...] | None = None
    num_inference_steps: int | None = None
    cache_dtype: torch.dtype | str | None = None
    cache_device: torch.device | str | None = None
    analysis: bool = False
    threshold_schedule: tuple[float, float] | None = None
    error_feedback: str = "none"
    gate_scope: str = "shared"
    forecast_budget: float | None = None
    decide_ahead: bool = False
    step_scales: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)):
            raise ValueError(f"CGTaylorConfig.threshold must be a number >= 0, got {self.threshold!r}")
        if math.isnan(self.threshold) or self.threshold < 0:
            raise ValueError(f"CGTaylorConfig.threshold must be a number >= 0 (inf allowed), got {self.threshold!r}")
        self.threshold = float(self.threshold)
        _require_int("warmup_steps", self.warmup_steps, 0)
        _require_int("first_block_order", self.first_block_order, 0, MAX_ORDER)
        _require_int("last_block_order", self.last_block_order, 0, MAX_ORDER)
        if self.forecast not in FORECAST_MODES:
            raise ValueError(f"CGTaylorConfig.forecast must be one of {FORECAST_MODES}, got {self.forecast!r}")
        if self.taylor_formula not in TAYLOR_FORMULAS:
            raise ValueError(
                f"CGTaylorConfig.taylor_formula must be one of {TAYLOR_FORMULAS}, got {self.taylor_formula!r}"
            )
        _check_basis_options(self)
        if self.max_consecutive_forecasts is not None:
            _require_int("max_consecutive_forecasts", self.max_consecutive_forecasts, 1)
        if self.num_inference_steps is not None:
            _require_int("num_inference_steps", self.num_inference_steps, 1)
        _require_int("probe_block", self.probe_block, 1)
        self.compute_steps = _as_schedule(self.compute_steps, self.num_inference_steps)
        self.cache_dtype = _as_dtype(self.cache_dtype)
        if self.cache_device is not None:
            try:
                self.cache_device = torch.device(self.cache_device)
            except (RuntimeError, TypeError) as error:
                raise ValueError(
                    f"CGTaylorConfig.cache_device must be None or a torch device (e.g. 'cpu', 'cuda:0'), "
                    f"got {self.cache_device!r}"
                ) from error
        if not isinstance(self.analysis, bool):
            raise ValueError(f"CGTaylorConfig.analysis must be True or False, got {self.analysis!r}")
        self._check_gate_variants()
        object.__setattr__(self, "_checked", True)

    def _check_gate_variants(self) -> None:
        self.threshold_schedule = as_threshold_schedule(self.threshold_schedule)
        if self.threshold_schedule is not None and self.compute_steps is not None:
            raise ValueError("CGTaylorConfig.threshold_schedule must be None when compute_steps is set (a forced "
                             f"schedule replaces the threshold), got {self.threshold_schedule!r}")
        check_error_feedback(self.error_feedback, self.forecast)
        check_gate_scope(self.gate_scope)
        self.forecast_budget = check_forecast_budget(self.forecast_budget)
        if self.forecast_budget is not None and self.compute_steps is not None:
            raise ValueError("CGTaylorConfig.forecast_budget must be None when compute_steps is set (a forced "
                             f"schedule fixes every step itself), got {self.forecast_budget!r}")
        check_decide_ahead(self)
        self.step_scales = as_step_scales(self.step_scales)
        if self.step_scales is not None:
            if self.compute_steps is not None:
                raise ValueError("CGTaylorConfig.step_scales must be None when compute_steps is set (a forced schedule "
                                 "replaces the threshold they scale)")
            if self.num_inference_steps is not None and self.num_inference_steps != len(self.step_scales):
                raise ValueError(f"CGTaylorConfig.step_scales holds {len(self.step_scales)} scales, one per step, but "
                                 f"num_inference_steps is {self.num_inference_steps}")

    @property
    def gates_last_step(self) -> bool:
        """Whether the gate decides the last step too (step scales say what forecasting it costs) rather than always
        computing it."""
        return self.step_scales is not None

    def __setattr__(self, name: str, value) -> None:
        if self.__dict__.get("_checked"):
            raise AttributeError(f"CGTaylorConfig is immutable, so {name} cannot be set after construction; "
                                 f"make a checked copy with config.with_updates({name}=...)")
        object.__setattr__(self, name, value)

    @classmethod
    def from_dict(cls, values: dict) -> "CGTaylorConfig":
        """Build from a plain mapping (a Hydra node, JSON); an unknown key raises naming the accepted ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown CGTaylorConfig option(s) {unknown}; accepted: {sorted(known)}")
        return cls(**dict(values))

    def with_updates(self, **changes) -> "CGTaylorConfig":
        return replace(self, **changes)

    @classmethod
    def preset(cls, name: str, family: str, **overrides) -> "CGTaylorConfig":
        """Named settings for a model family (``"dit"``, ``"flux"``, ``"wan"``): ``"paper"`` (the paper's) or
        ``"best"`` (the comparison's best variant at 2x); see :mod:`cgtaylor.presets`."""
        from .presets import preset_values

        return cls(**dict(preset_values(name, family), **overrides))

    @classmethod
    def paper_preset(cls, model: str, **overrides) -> "CGTaylorConfig":
        """The paper's settings (50 steps) for ``"dit"``, ``"flux"`` or ``"wan"``; thresholds at the low end."""
        return cls.preset("paper", model, **overrides)
