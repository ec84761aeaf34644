"""Find CG-Taylor's threshold from a target users understand: a FLOPs speedup, or a PSNR floor.

    result = calibrate_cg_taylor(transformer, lambda: model(probe_conditions, seed=0), target_speedup=3.0)
    result.config          # the CGTaylorConfig found; the transformer is left accelerated with it
    print(result.report.summary())

How it works. ``generate`` runs one generation of a small probe set (fixed seeds: it must be deterministic) and
returns its output. It is run once with the accelerator removed, as the reference output and the reference
FLOPs (counted in the transformer, :mod:`cgtaylor.meters`). Then the threshold is searched on a log scale: the FLOPs speedup grows
and the fidelity to the reference falls as the threshold grows (the gate forecasts more steps), so the target is
first bracketed by stepping the threshold by a factor of 4 from ``base_config.threshold``, then closed in on by
regula falsi (Illinois variant) on ``log(threshold)``, which falls back to bisection where the secant would not
make progress (the speedup is a step function: one full step more or less).

- ``target_speedup``: the trial whose probe speedup is nearest the target (relative ``tolerance``, default 5%)
  is returned. The search stops at the first trial within the tolerance. The threshold returned is the geometric
  centre of the thresholds that reproduce that trial's decisions on the probe set (see :class:`cgtaylor.threshold_search.ProbeSearch`), which keeps it
  away from the edges where the held-out speedup would jump.
- ``min_psnr`` (dB): the fastest trial whose *worst* probe sample (minimum per-sample PSNR against the reference)
  is at least ``min_psnr + psnr_margin`` is returned, so held-out samples also clear ``min_psnr``. Threshold 0 is
  the reference itself (every step computed: infinite PSNR, speedup 1) and is never run.

Cost. Every generation's FLOPs in the transformer are counted (``flops="memo"``: each module's once per input
shapes, then reused, where that agrees with exact counting on the reference; ``"exact"``: every call with
``FlopCounterMode``); the search stops before a trial could take the total past
``max_cost`` full generations of the probe set (default 12, the reference included). A trial's cost is bounded
by ``1 / speedup`` of the nearest smaller threshold already run (the speedup is monotone), 1 if there is none.

An unreachable target (a speedup above what threshold inf gives with this warm-up and these orders; or a PSNR
floor that only threshold 0, i.e. no forecast step, keeps) emits a :class:`CalibrationWarning` that names the best reachable value,
sets ``report.reached = False`` and ``report.best_reachable``, and returns the best trial (for a speedup: the
fastest; for a PSNR floor: threshold 0, i.e. no acceleration). ``strict=True`` raises
:class:`TargetUnreachableError` (a ``ValueError``) with the same message instead.

Only the threshold is searched; warm-up, orders and the forecast mode come from ``base_config`` (the paper's
per-model orders are a good start, see ``CGTaylorConfig.paper_preset``).

On return the transformer is accelerated with the config found (a previous CG-Taylor configuration is replaced);
call ``remove_cg_taylor`` to restore the plain model. On an exception the transformer is left plain.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import torch

from .api import apply_cg_taylor, remove_cg_taylor, reset_cg_taylor
from .calibration_report import CalibrationReport, CalibrationResult, CalibrationWarning, TargetUnreachableError, Trial
from .config import CGTaylorConfig
from .threshold_search import ProbeSearch, centre, run_reference, search_psnr, search_speedup


def _transformer_of(target) -> torch.nn.Module:
    if isinstance(target, torch.nn.Module):
        return target
    transformer = getattr(target, "transformer", None)
    if isinstance(transformer, torch.nn.Module):
        return transformer
    raise TypeError(f"calibrate_cg_taylor expects a diffusers transformer or pipeline, got {type(target).__name__}")


def calibrate_cg_taylor(
    transformer,
    generate: Callable[[], torch.Tensor],
    *,
    target_speedup: float | None = None,
    min_psnr: float | None = None,
    base_config: CGTaylorConfig | None = None,
    tolerance: float = 0.05,
    psnr_margin: float = 2.0,
    max_cost: float = 12.0,
    strict: bool = False,
    data_range: float = 1.0,
    flops: str = "memo",
) -> CalibrationResult:
    """Search CG-Taylor's threshold for a FLOPs speedup or a PSNR floor on a probe set (see the module docstring).

    Args:
        transformer: the diffusers transformer (or a pipeline with ``.transformer``) that ``generate`` runs.
        generate: zero-argument callable running one deterministic generation of the probe set, returning its output.
        target_speedup: wanted FLOPs speedup (> 1) over the full computation; exclusive with ``min_psnr``.
        min_psnr: PSNR floor in dB that every probe sample must clear (with ``psnr_margin``); exclusive with
            ``target_speedup``.
        base_config: every setting but the threshold (default ``CGTaylorConfig()``); its threshold is the first guess.
        tolerance: relative speedup tolerance (a speedup target counts as reached within it; a PSNR search stops
            when the bracket's speedups differ by less than it).
        psnr_margin: dB added to ``min_psnr`` on the probe set, so that held-out samples clear ``min_psnr``.
        max_cost: limit on the search's FLOPs, in full generations of the probe set, the reference included.
        strict: raise :class:`TargetUnreachableError` for an unreachable target instead of warning.
        data_range: value range of ``generate``'s output for PSNR (1.0 for images in [0, 1]).
        flops: ``"memo"`` counts each module's FLOPs once per input shapes and reuses the count (several times
            faster; used where it agrees with exact counting on the reference); ``"exact"`` counts every call.

    Returns:
        :class:`CalibrationResult` ``(config, report)``; the transformer is left accelerated with ``config``.
    """
    base = _checked_arguments(generate, target_speedup, min_psnr, base_config, tolerance, max_cost, flops)
    start = base.threshold if 0 < base.threshold < math.inf else 0.05

    module = _transformer_of(transformer)
    try:
        reference = run_reference(transformer, module, generate, flops)
        search = ProbeSearch(transformer, module, generate, base, reference, max_cost, data_range)
        if target_speedup is not None:
            target, value = "target_speedup", float(target_speedup)
            best, reached, best_reachable, message = search_speedup(search, start, value, tolerance)
        else:  # the floor on the probe set has a margin, so that held-out samples clear min_psnr
            target, value = "min_psnr", float(min_psnr)
            best, reached, best_reachable, message = search_psnr(search, start, value + psnr_margin, tolerance)
    except BaseException:
        remove_cg_taylor(transformer)
        raise

    threshold = centre(best) if target == "target_speedup" else best.threshold
    config = base.with_updates(threshold=threshold)
    report = CalibrationReport(
        target=target, target_value=value, reached=reached, threshold=threshold, speedup=best.speedup,
        psnr_min=best.psnr_min, psnr=best.psnr, generations=search.generations, cost=search.cost,
        max_cost=max_cost, reference_flops=search.reference_flops, best_reachable=best_reachable,
        message=message, trials=list(search.order),
    )
    _accelerate(transformer, config, report, strict)
    return CalibrationResult(config, report)


def _accelerate(transformer, config: CGTaylorConfig, report: CalibrationReport, strict: bool) -> None:
    """Leave ``transformer`` accelerated with the config found, after warning (or, ``strict``, raising with the
    transformer plain) when the target was not reached."""
    if not report.reached:
        if strict:
            remove_cg_taylor(transformer)
            raise TargetUnreachableError(report.message, report)
        warnings.warn(report.message, CalibrationWarning, stacklevel=3)
    apply_cg_taylor(transformer, config)
    reset_cg_taylor(transformer)


def _checked_arguments(generate, target_speedup, min_psnr, base_config, tolerance, max_cost, flops) -> CGTaylorConfig:
    """The base config, once every argument of :func:`calibrate_cg_taylor` is known to be usable."""
    if (target_speedup is None) == (min_psnr is None):
        given = [n for n, v in (("target_speedup", target_speedup), ("min_psnr", min_psnr)) if v is not None]
        raise ValueError(
            "calibrate_cg_taylor needs exactly one of target_speedup or min_psnr, got "
            + (" and ".join(given) if given else "neither")
        )
    if target_speedup is not None and not (isinstance(target_speedup, (int, float)) and target_speedup > 1):
        raise ValueError(f"target_speedup must be a number > 1 (a FLOPs speedup), got {target_speedup!r}")
    if min_psnr is not None and not (isinstance(min_psnr, (int, float)) and math.isfinite(min_psnr) and min_psnr > 0):
        # PSNR against a reference in the same value range is never negative, so a floor <= 0 accepts anything
        raise ValueError(f"min_psnr must be a finite number of dB > 0 (e.g. 35.0), got {min_psnr!r}")
    if not callable(generate):
        raise TypeError(f"generate must be a zero-argument callable that runs one generation of the probe set and "
                        f"returns its output, got {type(generate).__name__}")
    if flops not in ("memo", "exact"):
        raise ValueError(f"flops must be 'memo' or 'exact', got {flops!r}")
    if max_cost < 2:
        raise ValueError(f"max_cost must be >= 2 full generations (the reference and one trial), got {max_cost}")
    if not 0 < tolerance < 1:
        raise ValueError(f"tolerance must be in (0, 1), got {tolerance}")
    base = CGTaylorConfig() if base_config is None else base_config
    if not isinstance(base, CGTaylorConfig):
        raise TypeError(f"base_config must be a CGTaylorConfig, got {type(base).__name__}")
    if base.analysis:
        raise ValueError("base_config.analysis computes every step; calibrate with analysis=False")
    return base


CALIBRATION_KEYS = ("target_speedup", "min_psnr", "tolerance", "psnr_margin", "max_cost", "strict", "data_range",
                    "flops")


def calibrate_from_params(transformer, generate: Callable[[], torch.Tensor], params: dict,
                          num_inference_steps: int | None = None) -> CalibrationResult:
    """``calibrate_cg_taylor`` from one flat mapping (a Hydra ``method.params`` node of ``cg-taylor-target``).

    The keys in ``CALIBRATION_KEYS`` go to ``calibrate_cg_taylor``; the others are ``CGTaylorConfig`` fields of the
    base config (``threshold`` is the first guess). ``num_inference_steps`` fills the base config's when not given.
    """
    params = {k: v for k, v in dict(params).items()}
    calibration = {k: params.pop(k) for k in CALIBRATION_KEYS if k in params}
    if num_inference_steps is not None:
        params.setdefault("num_inference_steps", int(num_inference_steps))
    base = CGTaylorConfig.from_dict(params)
    return calibrate_cg_taylor(transformer, generate, base_config=base, **calibration)


__all__ = [
    "CALIBRATION_KEYS",
    "calibrate_from_params",
    "CalibrationReport",
    "CalibrationResult",
    "CalibrationWarning",
    "TargetUnreachableError",
    "Trial",
    "calibrate_cg_taylor",
]
