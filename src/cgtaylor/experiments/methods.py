"""Every method of the comparison, applied to a diffusers transformer by name.

``apply_method(transformer, name, params, num_inference_steps=50)`` -> :class:`AppliedMethod` registers the method's
hooks (``AppliedMethod.remove()`` restores the plain model); ``make_generator(model, name, params)`` -> a
:class:`MethodGenerator` that samples with it (``gen(conditions, seed)``) and runs the calibration a method needs.

Methods and their parameters (types, ranges, warm-up and search knob) are declared in :mod:`.registry`;
``apply_method`` checks them there and applies each method through one small function below. Peers come from
diffusers (``taylorseer``, ``fbcache``, ``magcache``; with the warm-up and per-context ratios of
:mod:`.diffusers_peers`), from cache-dit (``cache-dit-*``, :mod:`.cache_dit_peer`), or are the project's own where no
package has them (``fora``, ``teacache``: :mod:`.hooks`). ``cg-taylor-target`` resolves to ``cg-taylor`` with a
threshold searched on calibration conditions for a ``target_speedup`` or ``min_psnr``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..api import apply_cg_taylor, cg_taylor_stats
from ..checks import compute_dtype
from ..config import CGTaylorConfig
from ..io import atomic_write_text, computed_once, read_json_record
from . import diffusers_peers
from . import hooks as skip_hooks
from .registry import METHOD_NAMES, METHODS, check_params

CALIBRATED = {name: spec.calibrated for name, spec in METHODS.items() if spec.calibrated}


@dataclass
class AppliedMethod:
    name: str
    params: dict
    transformer: torch.nn.Module
    num_inference_steps: int
    extra: dict = field(default_factory=dict)

    @property
    def is_cg_taylor(self) -> bool:
        return self.name == "cg-taylor"

    def remove(self) -> None:
        if self.name.startswith("cache-dit-"):
            from .cache_dit_peer import remove_cache_dit

            remove_cache_dit(self.transformer)
        skip_hooks.remove_all_hooks(self.transformer)


def _apply_fewer_steps(applied: AppliedMethod, params: dict) -> None:
    if "speedup" in params:
        applied.num_inference_steps = max(1, round(applied.num_inference_steps / float(params["speedup"])))
    elif "steps" in params:
        applied.num_inference_steps = int(params["steps"])
    else:
        raise ValueError("method 'fewer-steps' needs `speedup` or `steps`")


def _apply_fora(applied: AppliedMethod, params: dict) -> None:
    skip_hooks.apply_block_skip(applied.transformer, skip_hooks.ForaPolicy(**params))


def _apply_teacache(applied: AppliedMethod, params: dict) -> None:
    if "coefficients" not in params and not params.get("calibrate"):
        raise ValueError("teacache needs `coefficients` fitted on the model (make_generator fits them)")
    policy = skip_hooks.TeaCachePolicy(num_inference_steps=applied.num_inference_steps, **params)
    skip_hooks.apply_block_skip(applied.transformer, policy)
    applied.extra["policy"] = policy


def _apply_fbcache(applied: AppliedMethod, params: dict) -> None:
    diffusers_peers.apply_fbcache(applied.transformer, params.get("threshold", 0.05), params.get("warmup_steps", 0))


def _apply_magcache(applied: AppliedMethod, params: dict) -> None:
    values = dict(params)
    calibrate = bool(values.pop("calibrate", False))
    if "mag_ratios" not in values and not calibrate:
        raise ValueError("magcache needs `mag_ratios` calibrated on the model (make_generator calibrates them)")
    if "warmup_steps" in values and "retention_ratio" in values:
        raise ValueError("magcache takes its warm-up as `warmup_steps` or `retention_ratio`, not both")
    diffusers_peers.apply_magcache(applied.transformer, num_inference_steps=applied.num_inference_steps,
                                   mag_ratios=values.pop("mag_ratios", [1.0] * applied.num_inference_steps),
                                   calibrate=calibrate, **values)


def _apply_taylorseer(applied: AppliedMethod, params: dict) -> None:
    from diffusers.hooks import TaylorSeerCacheConfig, apply_taylorseer_cache

    values = dict(params)
    values["taylor_factors_dtype"] = compute_dtype("taylorseer taylor_factors_dtype",
                                                   values.get("taylor_factors_dtype", "float32"))
    for key in ("cache_identifiers", "skip_predict_identifiers"):
        if values.get("use_lite_mode"):
            values.pop(key, None)  # lite mode has its own patterns
        elif values.get(key) is not None:
            values[key] = list(values[key])
    apply_taylorseer_cache(applied.transformer, TaylorSeerCacheConfig(**values))


def _apply_cg_taylor(applied: AppliedMethod, params: dict) -> None:
    values = dict(params)
    values.setdefault("num_inference_steps", applied.num_inference_steps)
    apply_cg_taylor(applied.transformer, CGTaylorConfig.from_dict(values))


def _apply_cache_dit(applied: AppliedMethod, params: dict) -> None:
    from .cache_dit_peer import apply_cache_dit

    values = dict(params)
    apply_cache_dit(applied.transformer, applied.name.removeprefix("cache-dit-"),
                    threshold=values.pop("threshold", 0.08), warmup_steps=values.pop("warmup_steps", 0),
                    num_inference_steps=applied.num_inference_steps, **values)


def _refuse_target(applied: AppliedMethod, params: dict) -> None:
    raise ValueError("cg-taylor-target needs a calibration run: use make_generator (it resolves to cg-taylor)")


_APPLY = {
    "full": lambda applied, params: None, "fewer-steps": _apply_fewer_steps, "fora": _apply_fora,
    "teacache": _apply_teacache, "fbcache": _apply_fbcache, "magcache": _apply_magcache,
    "taylorseer": _apply_taylorseer, "cg-taylor": _apply_cg_taylor, "cg-taylor-target": _refuse_target,
    **{name: _apply_cache_dit for name in METHOD_NAMES if name.startswith("cache-dit-")},
}
_OWN_CONTEXT = ("full", "fewer-steps", "cg-taylor")  # handle calls without a cache context themselves


def apply_method(
    transformer: torch.nn.Module, name: str, params: dict | None = None, *, num_inference_steps: int = 50
) -> AppliedMethod:
    """Register method ``name`` with ``params`` on ``transformer`` (after removing any hooks already there)."""
    params = check_params(name, dict(params or {}))
    skip_hooks.remove_all_hooks(transformer)
    applied = AppliedMethod(name, params, transformer, int(num_inference_steps))
    _APPLY[name](applied, params)
    if name not in _OWN_CONTEXT and not name.startswith("cache-dit-"):
        skip_hooks.add_default_context(transformer)
    return applied


# ----------------------------------------------------------------------------------------------------------------------
# Calibration
# ----------------------------------------------------------------------------------------------------------------------
def calibrate(model, name: str, *, num_inference_steps: int, conditions, seed: int) -> dict:
    """What ``name`` must learn from a full-compute run of ``model``: MagCache's magnitude ratios (diffusers'
    calibration mode) or TeaCache's rescaling polynomial. ``{}`` for the other methods."""
    transformer = model.transformer
    if name == "magcache":
        skip_hooks.remove_all_hooks(transformer)
        ratios = diffusers_peers.magcache_ratios(
            transformer, lambda: model(conditions, num_inference_steps=num_inference_steps, seed=seed))
        return {"mag_ratios": next(iter(ratios.values())) if len(ratios) == 1 else ratios}
    if name == "teacache":
        applied = apply_method(transformer, "teacache", {"calibrate": True}, num_inference_steps=num_inference_steps)
        try:
            model(conditions, num_inference_steps=num_inference_steps, seed=seed)
        finally:
            applied.remove()
        return {"coefficients": skip_hooks.fit_teacache_polynomial(applied.extra["policy"].calibration)}
    return {}


def cached_calibration(model, name: str, *, num_inference_steps: int, conditions, seed: int, path: Path | None) -> dict:
    """``calibrate`` with its answer kept in the JSON file ``path`` (per model, method and step count)."""
    if name not in CALIBRATED:
        return {}

    def compute() -> dict:
        return calibrate(model, name, num_inference_steps=num_inference_steps, conditions=conditions, seed=seed)

    if path is None:
        return compute()
    return computed_once(path, lambda p: read_json_record(p, (CALIBRATED[name],)), compute, _write_json)


def _write_json(values: dict, path) -> None:
    atomic_write_text(json.dumps(values), path)


# ----------------------------------------------------------------------------------------------------------------------
# Generators
# ----------------------------------------------------------------------------------------------------------------------
class MethodGenerator:
    """Samples from ``model`` with a method applied: ``gen(conditions, seed)`` -> samples in [0, 1]."""

    def __init__(self, model, name: str, params: dict, num_inference_steps: int):
        self.model = model
        self.name = name
        self.params = dict(params)
        self.reference_steps = int(num_inference_steps)
        self.applied: AppliedMethod | None = None
        self.attach()

    @property
    def num_inference_steps(self) -> int:
        return self.applied.num_inference_steps if self.applied else self.reference_steps

    def attach(self) -> "MethodGenerator":
        self.applied = apply_method(
            self.model.transformer, self.name, self.params, num_inference_steps=self.reference_steps
        )
        return self

    def remove(self) -> None:
        if self.applied is not None:
            self.applied.remove()
        self.applied = None

    def __call__(self, conditions, seed: int = 0) -> torch.Tensor:
        if self.applied is None:
            self.attach()
        return self.model(conditions, num_inference_steps=self.num_inference_steps, seed=seed)

    def cg_taylor_stats(self):
        return cg_taylor_stats(self.model.transformer) if self.name == "cg-taylor" else None


def make_generator(
    model,
    name: str,
    params: dict | None = None,
    *,
    num_inference_steps: int = 50,
    calibration_conditions=None,
    calibration_seed: int = 1000,
    calibration_file: str | os.PathLike | None = None,
) -> MethodGenerator:
    """A generator for ``model`` (a zoo model or a :mod:`.models` pipeline wrapper) with method ``name`` applied.

    MagCache and TeaCache are first calibrated on ``calibration_conditions`` (default: 4 of the model's default
    conditions at ``calibration_seed``) unless ``params`` already hold ``mag_ratios`` / ``coefficients``; the result is
    kept in ``calibration_file`` when given.
    """
    params = dict(params or {})
    if params.get("step_scales") == FIT:
        params["step_scales"] = fitted_step_scales(model, params, num_inference_steps, calibration_conditions,
                                                   calibration_seed, calibration_file)
    if name == "cg-taylor-target":
        return _target_generator(model, params, num_inference_steps, calibration_conditions, calibration_seed,
                                 calibration_file)
    key = CALIBRATED.get(name)
    if key is not None and key not in params:
        conditions = calibration_conditions or model.default_conditions(4, seed=calibration_seed)
        params.update(
            cached_calibration(
                model, name, num_inference_steps=num_inference_steps, conditions=conditions,
                seed=calibration_seed, path=calibration_file,
            )
        )
    return MethodGenerator(model, name, params, num_inference_steps)


FIT = "fit"  # ``step_scales: fit`` in a CG-Taylor entry: the scales are fitted for its forecaster on the model
STEP_SCALE_CONDITIONS = 2  # the fit runs one generation per step: on the first two calibration conditions
# options that fit_step_scales sets itself (or that only move the threshold): the form is every other option
_NOT_THE_FORM = ("threshold", "warmup_steps", "max_consecutive_forecasts", "step_scales", "forecast_budget",
                 "decide_ahead", "threshold_schedule", "analysis", "error_feedback", "target_speedup", "min_psnr",
                 "psnr_margin", "tolerance", "max_cost")


def fitted_step_scales(model, params: dict, num_inference_steps: int, conditions, seed: int,
                       calibration_file) -> list[float]:
    """The per-step threshold scales of ``params``' forecaster on ``model`` (:func:`cgtaylor.fit_step_scales`), kept
    in a JSON file per forecaster form next to ``calibration_file``."""
    from ..step_scales import fit_step_scales

    form = {k: v for k, v in params.items() if k not in _NOT_THE_FORM}
    conditions = list(conditions or model.default_conditions(4, seed=seed))[:STEP_SCALE_CONDITIONS]
    path = _file_per_params(calibration_file, form, f"step-scales-{num_inference_steps}")

    def fit() -> dict:
        try:
            found = fit_step_scales(model.transformer,
                                    lambda: model(conditions, num_inference_steps=num_inference_steps, seed=seed),
                                    CGTaylorConfig.from_dict(form), num_inference_steps)
        finally:
            skip_hooks.remove_all_hooks(model.transformer)
        return {"step_scales": list(found.scales), "steps": found.rows(), "form": form,
                "num_inference_steps": num_inference_steps, "conditions": len(conditions)}

    return [float(s) for s in _kept(path, ("step_scales",), fit)["step_scales"]]


def _file_per_params(calibration_file, values: dict, stem: str | None = None) -> Path | None:
    """A JSON file next to ``calibration_file`` named by ``stem`` (default: that file's own) and a digest of
    ``values``; None without a calibration file."""
    if calibration_file is None:
        return None
    digest = hashlib.sha1(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return Path(calibration_file).with_name(f"{stem or Path(calibration_file).stem}-{digest}.json")


def _kept(path: Path | None, required: tuple[str, ...], compute) -> dict:
    """``compute()``, kept in ``path`` (read from it when it holds ``required``) where there is one."""
    if path is None:
        return compute()
    return computed_once(path, lambda p: read_json_record(p, required), compute, _write_json)


def _target_generator(model, params, num_inference_steps, conditions, seed, calibration_file) -> MethodGenerator:
    """Search CG-Taylor's threshold for the target in ``params`` (kept in a JSON file per params), then run it."""
    from ..calibrate import CALIBRATION_KEYS, calibrate_from_params

    conditions = conditions or model.default_conditions(4, seed=seed)
    path = _file_per_params(calibration_file, params)

    def search() -> dict:
        try:
            result = calibrate_from_params(
                model.transformer,
                lambda: model(conditions, num_inference_steps=num_inference_steps, seed=seed),
                params,
                num_inference_steps=num_inference_steps,
            )
        finally:
            skip_hooks.remove_all_hooks(model.transformer)
        return {"threshold": result.config.threshold, "reached": result.report.reached,
                "probe_speedup": result.report.speedup, "summary": result.report.summary()}

    found = _kept(path, ("threshold",), search)
    cg_params = {k: v for k, v in params.items() if k not in CALIBRATION_KEYS}
    cg_params["threshold"] = float(found["threshold"])
    generator = MethodGenerator(model, "cg-taylor", cg_params, num_inference_steps)
    generator.calibration = found
    return generator
