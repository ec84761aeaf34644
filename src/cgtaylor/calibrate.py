"""Find CG-Taylor's threshold from a target users understand: a FLOPs speedup, or a PSNR floor.

    result = calibrate_cg_taylor(transformer, lambda: model(probe_conditions, seed=0), target_speedup=3.0)
    result.config          # the CGTaylorConfig found; the transformer is left accelerated with it
    print(result.report.summary())

How it works. ``generate`` runs one generation of a small probe set (fixed seeds: it must be deterministic) and
returns its output. It is run once with the accelerator removed, as the reference output and the reference
FLOPs (``count_flops`` on the transformer). Then the threshold is searched on a log scale: the FLOPs speedup grows
and the fidelity to the reference falls as the threshold grows (the gate forecasts more steps), so the target is
first bracketed by stepping the threshold by a factor of 4 from ``base_config.threshold``, then closed in on by
regula falsi (Illinois variant) on ``log(threshold)``, which falls back to bisection where the secant would not
make progress (the speedup is a step function: one full step more or less).

- ``target_speedup``: the trial whose probe speedup is nearest the target (relative ``tolerance``, default 5%)
  is returned. The search stops at the first trial within the tolerance. The threshold returned is the geometric
  centre of the thresholds that reproduce that trial's decisions on the probe set (see ``_Search``), which keeps it
  away from the edges where the held-out speedup would jump.
- ``min_psnr`` (dB): the fastest trial whose *worst* probe sample (minimum per-sample PSNR against the reference)
  is at least ``min_psnr + psnr_margin`` is returned, so held-out samples also clear ``min_psnr``. Threshold 0 is
  the reference itself (every step computed: infinite PSNR, speedup 1) and is never run.

Cost. Every generation's FLOPs in the transformer are counted (``flops="memo"``: once per input shapes and
decision, then reused; ``"exact"``: every call with ``count_flops``); the search stops before a trial could take the total past
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
from dataclasses import dataclass, field
from typing import Callable

import torch

from .api import apply_cg_taylor, cg_taylor_stats, remove_cg_taylor, reset_cg_taylor
from .config import CGTaylorConfig

from .metrics import count_flops, flop_counter, input_signature, psnr, psnr_per_sample

EXPAND_FACTOR = 4.0  # threshold step while bracketing
MIN_THRESHOLD = 1e-5  # below this the gate forecasts (almost) nothing: treat as threshold 0
MAX_THRESHOLD = 1e2  # above this the gate forecasts (almost) everything: try threshold inf


class CalibrationWarning(UserWarning):
    """The target cannot be reached on the probe set; the report names the best reachable value."""


class TargetUnreachableError(ValueError):
    def __init__(self, message: str, report: "CalibrationReport"):
        super().__init__(message)
        self.report = report


@dataclass
class Trial:
    """One probe generation at ``threshold`` (threshold 0 is the reference: not run, cost 0)."""

    threshold: float
    speedup: float  # reference FLOPs / this run's FLOPs
    psnr_min: float  # worst per-sample PSNR against the reference (dB)
    psnr: float  # PSNR over the whole probe batch (dB)
    flops: int
    computed_steps: int
    total_steps: int
    cost: float  # flops / reference flops
    same_above: float = 0.0  # every threshold in (same_above, same_upto] takes the same decisions on this probe
    same_upto: float = 0.0


@dataclass
class CalibrationReport:
    target: str  # "target_speedup" | "min_psnr"
    target_value: float
    reached: bool
    threshold: float
    speedup: float  # on the probe set, of the returned config
    psnr_min: float  # worst per-sample PSNR on the probe set (dB), of the returned config
    psnr: float
    generations: int  # probe generations run, the reference included
    cost: float  # their FLOPs in full-generation equivalents (sum of flops / reference flops)
    max_cost: float
    reference_flops: int
    best_reachable: float | None = None  # set when the target is not reached: best speedup / PSNR floor reachable
    message: str = ""
    trials: list[Trial] = field(default_factory=list)  # in the order run

    @property
    def threshold_trace(self) -> list[float]:
        return [t.threshold for t in self.trials]

    def summary(self) -> str:
        unit = "x" if self.target == "target_speedup" else " dB"
        lines = [
            f"CG-Taylor calibration for {self.target} = {self.target_value:g}{unit}: "
            + ("reached" if self.reached else "NOT reached"),
            f"  threshold {self.threshold:.6g}: probe speedup {self.speedup:.3f}x, worst-sample PSNR "
            f"{self.psnr_min:.2f} dB (batch {self.psnr:.2f} dB)",
            f"  search: {self.generations} generations, cost {self.cost:.2f} full-generation equivalents "
            f"(limit {self.max_cost:g})",
            "  trace: " + ", ".join(f"{t.threshold:.4g} -> {t.speedup:.2f}x/{t.psnr_min:.1f} dB" for t in self.trials),
        ]
        if self.message:
            lines.append("  " + self.message)
        return "\n".join(lines)


@dataclass
class CalibrationResult:
    config: CGTaylorConfig
    report: CalibrationReport


def _transformer_of(target) -> torch.nn.Module:
    if isinstance(target, torch.nn.Module):
        return target
    transformer = getattr(target, "transformer", None)
    if isinstance(transformer, torch.nn.Module):
        return transformer
    raise TypeError(f"calibrate_cg_taylor expects a diffusers transformer or pipeline, got {type(target).__name__}")


class _MemoFlops:
    """Per-call FLOPs of the transformer, counted with ``FlopCounterMode`` once per (input shapes, computed or
    forecast) and reused: a CG-Taylor call's FLOPs depend only on those (the gate's own work is elementwise, which
    ``FlopCounterMode`` does not count). Several times cheaper than counting every call; ``flops="exact"`` counts
    every call instead."""

    def __init__(self, module: torch.nn.Module, decision: Callable[[], bool]):
        self.module, self.decision = module, decision
        self.memo: dict = {}
        self.total = 0

    def count(self, fn):
        pending: list = []

        def pre(module, args, kwargs):
            key = input_signature(args, kwargs)
            counter = None
            if (key, True) not in self.memo or (key, False) not in self.memo:
                counter = flop_counter()
                counter.__enter__()
            pending.append((key, counter))

        def post(module, args, kwargs, output):
            key, counter = pending.pop()
            computed = self.decision()
            if counter is not None:
                counter.__exit__(None, None, None)
                self.memo[(key, computed)] = counter.get_total_flops()
            self.total += self.memo[(key, computed)]

        handles = [self.module.register_forward_pre_hook(pre, with_kwargs=True),
                   self.module.register_forward_hook(post, with_kwargs=True)]
        try:
            return fn()
        finally:
            for handle in handles:
                handle.remove()


class _Search:
    """Runs and remembers probe generations; keeps the cost account.

    A run at threshold t also tells which other thresholds would take exactly the same decisions: a step is forecast
    iff its first-block error e < t, so every t' in (max e of the forecast steps, min e of the steps computed because
    of their error] gives the same run. Those intervals keep the search from paying for a run it can predict and
    tell it when no threshold between two runs can change anything (the speedup is a step function).
    """

    def __init__(self, target, module, generate, base: CGTaylorConfig, max_cost: float, data_range: float,
                 flops: str = "memo"):
        self.data_range, self.flops_mode = data_range, flops
        self._memo = _MemoFlops(module, self._last_decision)
        self.target, self.module, self.generate, self.base, self.max_cost = target, module, generate, base, max_cost
        remove_cg_taylor(target)
        self.accelerated = False
        reference, self.reference_flops = self._count(generate)
        if not isinstance(reference, torch.Tensor):
            raise TypeError(f"generate() must return the output tensor of the probe generation, got {type(reference).__name__}")
        if self.reference_flops <= 0:
            raise ValueError("generate() ran no FLOPs in the transformer: does it call this transformer?")
        self.reference = reference.detach()
        self.generations, self.cost = 1, 1.0
        self.trials: dict[float, Trial] = {0.0: Trial(0.0, 1.0, math.inf, math.inf, self.reference_flops, 0, 0, 0.0)}
        self.order: list[Trial] = []

    def _last_decision(self) -> bool:
        return not self.accelerated or cg_taylor_stats(self.target).records[-1].computed

    def _count(self, fn):
        if self.flops_mode == "exact":
            return count_flops(fn, self.module)
        before = self._memo.total
        result = self._memo.count(fn)
        return result, self._memo.total - before

    def known(self, threshold: float) -> Trial | None:
        """A run that takes the same decisions as ``threshold`` would, if one is known."""
        for trial in self.trials.values():
            if trial.threshold == threshold or trial.same_above < threshold <= trial.same_upto:
                return trial
        return None

    def cost_bound(self, threshold: float) -> float:
        below = [t for t in self.trials.values() if t.threshold < threshold]
        return 1.0 / max(t.speedup for t in below) if below else 1.0

    def affordable(self, threshold: float) -> bool:
        return self.known(threshold) is not None or self.cost + self.cost_bound(threshold) <= self.max_cost + 1e-9

    def run(self, threshold: float) -> Trial:
        known = self.known(threshold)
        if known is not None:
            return known
        apply_cg_taylor(self.target, self.base.with_updates(threshold=threshold))
        reset_cg_taylor(self.target)
        self.accelerated = True
        calls = [0]
        handle = self.module.register_forward_pre_hook(lambda module, args: calls.__setitem__(0, calls[0] + 1))
        try:
            output, flops = self._count(self.generate)
        finally:
            handle.remove()
        stats = cg_taylor_stats(self.target)
        per_sample = psnr_per_sample(output, self.reference, data_range=self.data_range)
        trial = Trial(
            threshold=threshold,
            speedup=self.reference_flops / max(flops, 1),
            psnr_min=float(per_sample.min()),
            psnr=psnr(output, self.reference, data_range=self.data_range),
            flops=int(flops),
            computed_steps=stats.computed_steps,
            total_steps=len(stats.records),
            cost=flops / self.reference_flops,
            same_above=threshold,
            same_upto=threshold,
        )
        # The statistics keep the last trajectory of each cache context: when they account for every call,
        # the decisions of the whole generation are known, and with them the equivalent thresholds.
        if stats.records and len(stats.records) == calls[0]:
            leader = stats.records[0].context  # the context that decides; the others follow its decisions
            rows = [r for r in stats.records if r.context == leader and r.first_block_error is not None]
            forecast = [r.first_block_error for r in rows if not r.computed]
            gated = [r.first_block_error for r in rows if r.computed and r.reason == "error"
                     and not math.isnan(r.first_block_error)]
            trial.same_above = max(forecast, default=0.0)
            trial.same_upto = min(gated, default=math.inf)
        self.generations += 1
        self.cost += trial.cost
        self.trials[threshold] = trial
        self.order.append(trial)
        return trial


def _between(lo: float, hi: float, guess: float | None) -> float:
    """A threshold strictly inside (lo, hi) on the log scale: ``guess`` (a log threshold) kept 10% from either end."""
    a, b = math.log(lo), math.log(hi)
    x = (a + b) / 2 if guess is None or not math.isfinite(guess) else min(max(guess, a + 0.1 * (b - a)), b - 0.1 * (b - a))
    return math.exp(x)


def _secant(lo: float, f_lo: float, hi: float, f_hi: float) -> float | None:
    """Root of the line through (log lo, f_lo), (log hi, f_hi): a log threshold."""
    if not (math.isfinite(f_lo) and math.isfinite(f_hi)) or f_lo == f_hi:
        return None
    a, b = math.log(lo), math.log(hi)
    return a - f_lo * (b - a) / (f_hi - f_lo)


def _centre(trial: Trial) -> float:
    """The geometric centre of the thresholds that reproduce ``trial``: the same run on the probe set, and the
    farthest from the thresholds where one more or one fewer step would be forecast."""
    if 0 < trial.same_above < trial.same_upto < math.inf:
        return math.sqrt(trial.same_above * trial.same_upto)
    return trial.threshold


def _up(trial: Trial) -> float:
    """The next threshold above ``trial`` that can change the outcome (inf when only inf can)."""
    step = max(trial.threshold * EXPAND_FACTOR, trial.same_upto * (1 + 1e-6))
    return step if step <= MAX_THRESHOLD else math.inf


def _down(trial: Trial) -> float:
    """The next threshold below ``trial`` that can change the outcome."""
    return min(trial.threshold / EXPAND_FACTOR, trial.same_above)


def _bracket(search: _Search, start: float, on_low_side: Callable[[Trial], bool],
             found: Callable[[Trial], bool] = lambda trial: False) -> tuple[Trial, Trial | None, Trial | None]:
    """Step the threshold by EXPAND_FACTOR (past what a run shows to be equivalent) from ``start`` until one
    trial lies on each side of the target: ``lo`` (``on_low_side``; threshold 0 to begin with) and ``hi``.
    Stops early at a trial that is ``found``, at one that behaves as threshold inf, or when out of budget.
    Returns ``(lo, hi or None, found trial or None)``."""
    lo, hi = search.trials[0.0], None
    threshold = start
    while search.affordable(threshold):
        trial = search.run(threshold)
        if found(trial):
            return lo, hi, trial
        if on_low_side(trial):
            lo = trial
            if hi is not None or math.isinf(trial.same_upto):
                break
            threshold = _up(trial)
        else:
            hi = trial
            if lo.threshold > 0:
                break
            threshold = _down(trial)
            if threshold < MIN_THRESHOLD:
                break
    return lo, hi, None


def _bisect(search: _Search, lo: Trial, hi: Trial, f, accept, done) -> None:
    """Regula falsi (Illinois) on log threshold between ``lo`` (f > 0) and ``hi`` (f <= 0) while affordable.

    Only thresholds in (lo.same_upto, hi.same_above] can give a new outcome; when that interval is empty the
    step between the two runs is as fine as this probe allows.
    """
    f_lo, f_hi, side = f(lo), f(hi), 0
    while not done(lo, hi):
        left, right = max(lo.same_upto, lo.threshold), min(hi.same_above, hi.threshold)
        if not (0 < left < right and math.isfinite(right)) or right / left <= 1 + 1e-6:
            return
        threshold = _between(left, right, _secant(lo.threshold, f_lo, hi.threshold, f_hi))
        if not search.affordable(threshold):
            return
        trial = search.run(threshold)
        if accept(trial):
            return
        if f(trial) > 0:
            lo, f_lo = trial, f(trial)
            if side == -1:
                f_hi /= 2
            side = -1
        else:
            hi, f_hi = trial, f(trial)
            if side == 1:
                f_lo /= 2
            side = 1


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
        flops: ``"memo"`` counts each transformer call's FLOPs once per (input shapes, computed or forecast) and
            reuses the count (several times faster); ``"exact"`` counts every call with ``count_flops``.

    Returns:
        :class:`CalibrationResult` ``(config, report)``; the transformer is left accelerated with ``config``.
    """
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
    start = base.threshold if 0 < base.threshold < math.inf else 0.05

    module = _transformer_of(transformer)
    try:
        search = _Search(transformer, module, generate, base, max_cost, data_range, flops)
        if target_speedup is not None:
            best, reached, best_reachable, message = _search_speedup(search, start, float(target_speedup), tolerance)
            target, value = "target_speedup", float(target_speedup)
        else:
            floor = float(min_psnr) + psnr_margin
            best, reached, best_reachable, message = _search_psnr(search, start, floor, tolerance)
            target, value = "min_psnr", float(min_psnr)
    except BaseException:
        remove_cg_taylor(transformer)
        raise

    threshold = _centre(best) if target == "target_speedup" else best.threshold
    config = base.with_updates(threshold=threshold)
    report = CalibrationReport(
        target=target, target_value=value, reached=reached, threshold=threshold, speedup=best.speedup,
        psnr_min=best.psnr_min, psnr=best.psnr, generations=search.generations, cost=search.cost,
        max_cost=max_cost, reference_flops=search.reference_flops, best_reachable=best_reachable,
        message=message, trials=list(search.order),
    )
    if not reached:
        if strict:
            remove_cg_taylor(transformer)
            raise TargetUnreachableError(message, report)
        warnings.warn(message, CalibrationWarning, stacklevel=2)
    apply_cg_taylor(transformer, config)
    reset_cg_taylor(transformer)
    return CalibrationResult(config, report)


def _search_speedup(search: _Search, start: float, target: float, tolerance: float):
    def error(trial: Trial) -> float:  # > 0: too slow
        return math.log(target) - math.log(trial.speedup)

    def within(trial: Trial) -> bool:
        return abs(trial.speedup / target - 1) <= tolerance

    lo, hi, hit = _bracket(search, start, on_low_side=lambda trial: error(trial) > 0, found=within)
    if hit is not None:
        return hit, True, None, ""
    if hi is None and lo.threshold > 0 and math.isinf(lo.same_upto):  # behaves as threshold inf: nothing faster
        message = (
            f"target_speedup {target:g}x is not reachable with warmup_steps={search.base.warmup_steps}, "
            f"orders {search.base.first_block_order}/{search.base.last_block_order}: the best reachable "
            f"speedup on the probe set is {lo.speedup:.3f}x (threshold {lo.threshold:.4g}, which "
            f"forecasts every step the gate may); returning that config"
        )
        return lo, False, lo.speedup, message
    if lo.threshold > 0 and hi is not None:
        _bisect(search, lo, hi, error, within, lambda lo, hi: False)
    best = min(search.order, key=lambda t: (abs(error(t)), -t.psnr_min))
    if within(best):
        return best, True, None, ""
    message = (
        f"target_speedup {target:g}x not reached within {tolerance:.1%} on the probe set: "
        f"the nearest speedup found is {best.speedup:.3f}x (threshold {best.threshold:.4g}); "
        f"{search.generations} generations, cost {search.cost:.2f} of {search.max_cost:g} full generations"
    )
    return best, False, best.speedup, message


def _search_psnr(search: _Search, start: float, floor: float, tolerance: float):
    def margin(trial: Trial) -> float:  # >= 0: keeps the floor
        return trial.psnr_min - floor

    lo, hi, _ = _bracket(search, start, on_low_side=lambda trial: margin(trial) >= 0)
    if lo.threshold > 0 and hi is not None:
        _bisect(search, lo, hi, margin, lambda trial: False,
                lambda lo, hi: hi.speedup / lo.speedup - 1 <= tolerance)
    # The fastest trial that keeps the floor (the reference, threshold 0, always does); at equal speed the better.
    best = max((t for t in search.trials.values() if margin(t) >= 0), key=lambda t: (t.speedup, t.psnr_min, -t.threshold))
    if best.speedup > 1.0:
        return best, True, None, ""
    accelerated = [t for t in search.order if t.speedup > 1.0]
    closest = max(accelerated, key=lambda t: t.psnr_min, default=None)
    message = (
        f"min_psnr with margin ({floor:g} dB worst probe sample) is kept only without acceleration: "
        + (f"the best worst-sample PSNR of a run that forecast any step was {closest.psnr_min:.2f} dB "
           f"({closest.speedup:.3f}x, threshold {closest.threshold:.4g})" if closest else "no run that forecast a step was affordable")
        + "; returning threshold 0 (every step computed)"
    )
    return search.trials[0.0], False, (closest.psnr_min if closest else None), message


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
