"""The threshold search behind :func:`cgtaylor.calibrate_cg_taylor`: probe generations at chosen thresholds, each
scored against a reference generation, bracketed on a log scale and closed in on by regula falsi.

The reference is one generation with the accelerator removed (:func:`run_reference`); a :class:`ProbeSearch` runs
and remembers trials against it and keeps the cost account; :func:`search_speedup` and :func:`search_psnr` drive it
to a target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .api import apply_cg_taylor, cg_taylor_stats, remove_cg_taylor, reset_cg_taylor
from .calibration_report import Trial
from .config import CGTaylorConfig
from .meters import CheckedFlops, ExactFlops, flops_meter
from .metrics import psnr, psnr_per_sample

EXPAND_FACTOR = 4.0  # threshold step while bracketing
MIN_THRESHOLD = 1e-5  # below this the gate forecasts (almost) nothing: treat as threshold 0
MAX_THRESHOLD = 1e2  # above this the gate forecasts (almost) everything: try threshold inf


@dataclass
class ProbeReference:
    """The probe set generated with every step computed: what trials are scored against and their FLOPs compared to."""

    output: torch.Tensor
    flops: int
    memo_flops: bool  # trials may be counted with MemoFlops (it agreed with exact counting on every call here)


def run_reference(target, module: torch.nn.Module, generate: Callable[[], torch.Tensor], flops: str) -> ProbeReference:
    """Remove CG-Taylor from ``target`` and run ``generate`` once with its FLOPs in ``module`` counted exactly (and,
    for ``flops="memo"``, memoised too, to know whether the trials may be counted the cheaper way)."""
    remove_cg_taylor(target)
    meter = CheckedFlops(module) if flops == "memo" else ExactFlops(module)
    with meter:
        output = generate()
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"generate() must return the output tensor of the probe generation, "
                        f"got {type(output).__name__}")
    if meter.total <= 0:
        raise ValueError("generate() ran no FLOPs in the transformer: does it call this transformer?")
    return ProbeReference(output.detach(), meter.total, flops == "memo" and meter.memo_exact)


class ProbeSearch:
    """Runs and remembers probe generations against a reference; keeps the cost account.

    A run at threshold t also tells which other thresholds would take exactly the same decisions: a step is forecast
    iff its first-block error e < t, so every t' in (max e of the forecast steps, min e of the steps computed because
    of their error] gives the same run. Those intervals keep the search from paying for a run it can predict and
    tell it when no threshold between two runs can change anything (the speedup is a step function).
    """

    def __init__(self, target, module: torch.nn.Module, generate: Callable[[], torch.Tensor], base: CGTaylorConfig,
                 reference: ProbeReference, max_cost: float, data_range: float):
        self.target, self.module, self.generate, self.base = target, module, generate, base
        self.reference, self.reference_flops = reference.output, reference.flops
        self.meter = flops_meter(reference.memo_flops)
        self.max_cost, self.data_range = max_cost, data_range
        self.generations, self.cost = 1, 1.0  # the reference counts as one generation
        self.trials: dict[float, Trial] = {0.0: Trial(0.0, 1.0, math.inf, math.inf, self.reference_flops, 0, 0, 0.0)}
        self.order: list[Trial] = []

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
        with self.meter(self.module) as counted:
            output = self.generate()
        stats = cg_taylor_stats(self.target)
        per_sample = psnr_per_sample(output, self.reference, data_range=self.data_range)
        trial = Trial(
            threshold=threshold,
            speedup=self.reference_flops / max(counted.total, 1),
            psnr_min=float(per_sample.min()),
            psnr=psnr(output, self.reference, data_range=self.data_range),
            flops=int(counted.total),
            computed_steps=stats.computed_steps,
            total_steps=len(stats.records),
            cost=counted.total / self.reference_flops,
            same_above=threshold,
            same_upto=threshold,
        )
        if stats.records and len(stats.records) == len(counted.calls):
            trial.same_above, trial.same_upto = _same_decisions(stats.records)
        self.generations += 1
        self.cost += trial.cost
        self.trials[threshold] = trial
        self.order.append(trial)
        return trial


def _same_decisions(records) -> tuple[float, float]:
    """The thresholds (above, upto] that take the decisions ``records`` show. The statistics keep the last trajectory
    of each cache context: when they account for every call, the decisions of the whole generation are known."""
    leader = records[0].context  # the context that decides; the others follow its decisions
    rows = [r for r in records if r.context == leader and r.first_block_error is not None]
    forecast = [r.first_block_error for r in rows if not r.computed]
    gated = [r.first_block_error for r in rows
             if r.computed and r.reason == "error" and not math.isnan(r.first_block_error)]
    return max(forecast, default=0.0), min(gated, default=math.inf)


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


def centre(trial: Trial) -> float:
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


def _bracket(search: ProbeSearch, start: float, on_low_side: Callable[[Trial], bool],
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


def _bisect(search: ProbeSearch, lo: Trial, hi: Trial, f, accept, done) -> None:
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


def search_speedup(search: ProbeSearch, start: float, target: float, tolerance: float):
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


def search_psnr(search: ProbeSearch, start: float, floor: float, tolerance: float):
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
