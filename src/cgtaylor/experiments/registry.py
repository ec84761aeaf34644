"""The methods of the comparison as data: each one's parameters (type and range), warm-up and search knob.

``METHODS[name]`` is a :class:`MethodSpec`. ``check_params(name, params)`` rejects unknown or out-of-range
parameters with a message that names them and what is accepted. Two facts per method drive the equal-footing
protocol (:mod:`.protocol`):

- ``warmup``: the parameter that holds the method's warm-up in sampling steps. Every step-skipping method has one,
  and the protocol sweeps all of them over the same per-model list (``model.warmup_grid``), so no method gets a
  warm-up the others cannot have.
- ``knob``: the continuous parameter (a threshold) that the protocol searches to land on a target speedup; larger is
  faster. Methods without one are enumerated over their discrete ``grid``. ``other_knobs`` are further parameters an
  entry may land on instead (CG-Taylor's ``forecast_budget``), each with its range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..config import MAX_FIT_POINTS, TAYLOR_FORMULAS
from ..error_feedback import ERROR_FEEDBACK_MODES
from ..gate_scope import GATE_SCOPES

_ANY = object()


@dataclass(frozen=True)
class Param:
    """One accepted parameter: its Python type(s), an inclusive range or a set of choices."""

    types: tuple
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    nullable: bool = False

    def describe(self) -> str:
        if self.choices is not None:
            text = f"one of {list(self.choices)}"
        else:
            names = "/".join(t.__name__ for t in self.types)
            bounds = []
            if self.low is not None:
                bounds.append(f">= {self.low:g}")
            if self.high is not None:
                bounds.append(f"<= {self.high:g}")
            text = names + (" " + " and ".join(bounds) if bounds else "")
        return text + (" or null" if self.nullable else "")

    def accepts(self, value) -> bool:
        if value is None:
            return self.nullable
        if self.choices is not None:
            return value in self.choices
        if isinstance(value, bool) and bool not in self.types:
            return False
        if not isinstance(value, self.types):
            return False
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isnan(value):
                return False
            if self.low is not None and value < self.low:
                return False
            if self.high is not None and value > self.high:
                return False
        return True


def _int(low=None, high=None, nullable=False) -> Param:
    return Param((int,), low, high, nullable=nullable)


def _float(low=None, high=None, nullable=False) -> Param:
    return Param((int, float), low, high, nullable=nullable)


_THRESHOLD = _float(0.0)
_STEPS = _int(0, 1000)
_BOOL = Param((bool,))


@dataclass(frozen=True)
class MethodSpec:
    name: str
    summary: str
    params: Mapping[str, Param]
    warmup: str | None = None  # parameter holding the warm-up in steps
    knob: str | None = None  # continuous parameter searched to a target speedup (larger: faster)
    knob_range: tuple[float, float] | None = None
    other_knobs: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # knob -> range, chosen by an entry
    grid: Mapping[str, tuple] = field(default_factory=dict)  # discrete parameters enumerated by the protocol
    calibrated: str | None = None  # parameter fitted on the model by a calibration run
    lands_on: str | None = None  # parameter that is the speedup itself: the protocol sets it to each target
    model_params_of: str | None = None  # another method whose per-model parameters (conf/model/*.yaml) apply to it
    source: str = ""


METHODS: dict[str, MethodSpec] = {}


def _register(spec: MethodSpec) -> None:
    METHODS[spec.name] = spec


_register(MethodSpec("full", "every block at every step", {}, source="reference"))
_register(MethodSpec(
    "fewer-steps", "fewer sampling steps at matched FLOPs", {"speedup": _float(1.0, 100.0), "steps": _int(1, 1000)},
    lands_on="speedup", source="baseline"))
_register(MethodSpec(
    "fora", "fixed-interval reuse of the last block's output (FORA)",
    {"interval": _int(1, 50), "warmup_steps": _STEPS},
    warmup="warmup_steps", grid={"interval": (2, 3, 4, 5)}, source="project (FORA's rule)"))
_register(MethodSpec(
    "taylorseer", "per-module Taylor forecasts on a fixed interval (diffusers TaylorSeerCacheConfig)",
    {"cache_interval": _int(1, 50), "max_order": _int(0, 4), "disable_cache_before_step": _STEPS,
     "disable_cache_after_step": _int(0, 1000, nullable=True), "use_lite_mode": _BOOL,
     "cache_identifiers": Param((list, tuple), nullable=True), "skip_predict_identifiers": Param((list, tuple), nullable=True),
     "taylor_factors_dtype": Param((str,), choices=("float32", "bfloat16", "float16"))},
    warmup="disable_cache_before_step", grid={"cache_interval": (2, 3, 4, 5), "max_order": (1, 2)}, source="diffusers"))
_register(MethodSpec(
    "fbcache", "first-block residual cache (diffusers FirstBlockCacheConfig)",
    {"threshold": _THRESHOLD, "warmup_steps": _STEPS},
    warmup="warmup_steps", knob="threshold", knob_range=(0.005, 4.0), source="diffusers"))
_register(MethodSpec(
    "magcache", "magnitude-ratio residual cache (diffusers MagCacheConfig)",
    {"threshold": _THRESHOLD, "max_skip_steps": _int(1, 100), "retention_ratio": _float(0.0, 1.0),
     "warmup_steps": _STEPS, "mag_ratios": Param((list, tuple, dict)), "calibrate": _BOOL},
    warmup="warmup_steps", knob="threshold", knob_range=(0.002, 8.0), grid={"max_skip_steps": (6,)},
    calibrated="mag_ratios", source="diffusers"))
_register(MethodSpec(
    "teacache", "accumulated rescaled input change (TeaCache)",
    {"threshold": _THRESHOLD, "warmup_steps": _STEPS, "coefficients": Param((list, tuple)), "calibrate": _BOOL},
    warmup="warmup_steps", knob="threshold", knob_range=(0.005, 8.0), calibrated="coefficients",
    source="project (TeaCache's rule, polynomial fitted here)"))
_CG_TAYLOR_PARAMS = {
    "threshold": _THRESHOLD, "warmup_steps": _STEPS, "first_block_order": _int(0, 4), "last_block_order": _int(0, 4),
    "forecast": Param((str,), choices=("residual", "last_block", "modules")),
    "taylor_formula": Param((str,), choices=TAYLOR_FORMULAS), "hermite_scale": _float(1e-6, 100.0),
    "fit_points": _int(1, MAX_FIT_POINTS, nullable=True),
    "max_consecutive_forecasts": _int(1, 1000, nullable=True), "num_inference_steps": _int(1, 1000, nullable=True),
    "cache_dtype": Param((str,), nullable=True), "cache_device": Param((str,), nullable=True), "analysis": _BOOL,
    "probe_block": _int(1, 1000), "compute_steps": Param((list, tuple), nullable=True),
    "threshold_schedule": Param((list, tuple), nullable=True),
    "error_feedback": Param((str,), choices=ERROR_FEEDBACK_MODES), "gate_scope": Param((str,), choices=GATE_SCOPES),
    "forecast_budget": Param((int, float), 0.0, 0.999, nullable=True), "decide_ahead": _BOOL,
    # a list of per-step scales, or "fit": fitted for the entry's forecaster on the model (methods.fitted_step_scales)
    "step_scales": Param((list, tuple, str), nullable=True),
}
_register(MethodSpec(
    "cg-taylor", "Confidence-Gated Taylor", _CG_TAYLOR_PARAMS,
    warmup="warmup_steps", knob="threshold", knob_range=(1e-4, 2.0), other_knobs={"forecast_budget": (0.02, 0.95)},
    source="this package"))
_register(MethodSpec(
    "cg-taylor-target", "CG-Taylor with its threshold found for a target speedup or PSNR floor",
    {**_CG_TAYLOR_PARAMS, "target_speedup": _float(1.0, 100.0, nullable=True), "min_psnr": _float(0.0, 200.0, nullable=True),
     "psnr_margin": _float(0.0, 100.0), "tolerance": _float(0.0, 1.0), "max_cost": _float(1.0, 1000.0)},
    lands_on="target_speedup", model_params_of="cg-taylor", source="this package"))
for _variant, _summary in (("dbcache", "cache-dit DBCache"), ("dbcache-taylorseer", "cache-dit DBCache + TaylorSeer"),
                           ("dbcache-foca", "cache-dit DBCache + FoCa")):
    _register(MethodSpec(
        f"cache-dit-{_variant}", _summary,
        {"threshold": _THRESHOLD, "warmup_steps": _STEPS, "fn_compute_blocks": _int(0, 100),
         "bn_compute_blocks": _int(0, 100), "taylorseer_order": _int(1, 4), "max_continuous_cached_steps": _int(-1, 1000)},
        warmup="warmup_steps", knob="threshold", knob_range=(0.005, 4.0), source="cache-dit"))

METHOD_NAMES = tuple(METHODS)


def spec(name: str) -> MethodSpec:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {list(METHOD_NAMES)}")
    return METHODS[name]


def knob_of(name: str, knob: str | None = None) -> tuple[str | None, tuple[float, float] | None]:
    """The parameter an entry of method ``name`` lands on, and its range: ``knob`` where given (the method's own knob
    or one of its ``other_knobs``), else the method's knob."""
    method = spec(name)
    if knob is None or knob == method.knob:
        return method.knob, method.knob_range
    if knob not in method.other_knobs:
        accepted = ([method.knob] if method.knob else []) + list(method.other_knobs)
        raise ValueError(f"method {name!r} cannot land on knob {knob!r}; accepted: {accepted}")
    return knob, tuple(method.other_knobs[knob])


def check_params(name: str, params: Mapping[str, Any]) -> dict:
    """``params`` if every one is known to method ``name`` and in range; else a ValueError naming them."""
    method = spec(name)
    unknown = sorted(set(params) - set(method.params))
    if unknown:
        raise ValueError(f"method {name!r} got unknown parameter(s) {unknown}; accepted: {sorted(method.params)}")
    for key, value in params.items():
        rule = method.params[key]
        if not rule.accepts(value):
            raise ValueError(f"method {name!r}: parameter {key!r} must be {rule.describe()}, got {value!r}")
    scales = params.get("step_scales")
    if isinstance(scales, str) and scales != "fit":
        raise ValueError(f"method {name!r}: parameter 'step_scales' must be a list of per-step scales, 'fit' (fitted "
                         f"for the entry's forecaster) or null, got {scales!r}")
    return dict(params)
