"""Measuring one row of a table against ``full`` on a fixed workload (conditions x seeds x steps).

The method samples every seed under FLOP counting (the transformer calls that actually run: :class:`MemoFlops`
where it agreed with exact counting on the full reference, else :class:`ExactFlops`), a full-step counter and a
cache-memory meter; fidelity is scored against the reference and, optionally, with the zoo evaluator. Then full and
the method are timed interleaved in this process (``repeats`` pairs, medians). ``cg-taylor`` rows also carry the
per-call overhead of a forecast step against its FLOPs share (the ideal).
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
import warnings
from dataclasses import dataclass

import torch

from ..meters import CacheBytesMeter, CallTimer, CheckedFlops, FullStepCounter, flops_meter
from ..metrics import fidelity
from . import hooks as skip_hooks
from .methods import make_generator
from .models import evaluate_samples


def machine_info() -> dict:
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "device": "cpu",
    }


@dataclass
class _Sampled:
    """What sampling every seed with a method gave: outputs, FLOPs, cache bytes, full steps, and for the first seed
    the FLOPs of each transformer call and whether CG-Taylor computed it."""

    output: torch.Tensor
    flops: int
    cache_bytes: int
    full_steps: float
    call_flops: list[int]
    computed: list[bool]


@dataclass
class RowMeasurement:
    """How a table measures its rows: ``model`` on ``num_conditions`` conditions x ``seeds`` x ``steps``."""

    model: object
    num_conditions: int
    seeds: list[int]
    steps: int
    repeats: int  # interleaved timing pairs (0: not timed)
    evaluate: bool  # score samples with the zoo evaluator
    calibration_conditions: int

    def conditions(self) -> list:
        return self.model.default_conditions(self.num_conditions, seed=0)

    def full_reference(self, seed: int) -> dict:
        """Output, FLOPs (exact; ``memo_flops_exact``: whether memoised counting agreed), calls and time of ``seed``
        sampled in full."""
        transformer = self.model.transformer
        skip_hooks.remove_all_hooks(transformer)
        with CheckedFlops(transformer) as flops:
            output = self.model(self.conditions(), num_inference_steps=self.steps, seed=seed)
        start = time.perf_counter()
        self.model(self.conditions(), num_inference_steps=self.steps, seed=seed)
        seconds = time.perf_counter() - start
        return {"output": output, "flops": flops.total, "calls": len(flops.calls), "seconds": seconds,
                "memo_flops_exact": flops.memo_exact}

    def measure(self, row: dict, refs: list[dict], record: dict, calibration_file) -> dict:
        """``record`` (the row's identity) completed with the measurements of ``row`` against ``refs``."""
        conditions = self.conditions()
        if row["method"] == "full":
            return self._baseline(record, refs, conditions)
        generator = make_generator(
            self.model, row["method"], row["params"], num_inference_steps=self.steps,
            calibration_conditions=self.model.default_conditions(self.calibration_conditions, 1000),
            calibration_seed=1000, calibration_file=calibration_file,
        )
        try:
            sampled = self._sample(generator, conditions, refs, row["method"])
            scores = fidelity(sampled.output, torch.cat([r["output"] for r in refs]))
            wall, call_times = self._time(generator, conditions)
        finally:
            generator.remove()
        full_flops = sum(r["flops"] for r in refs)
        speedup = full_flops / sampled.flops if sampled.flops else math.inf
        valid = sampled.flops < full_flops
        result = dict(
            record,
            flops=sampled.flops,
            full_flops=full_flops,
            flops_speedup=speedup,
            wall_speedup=wall,
            wall_over_flops=wall / speedup if speedup and not math.isnan(wall) else math.nan,
            full_steps=sampled.full_steps,
            cache_bytes=int(sampled.cache_bytes),
            valid=bool(valid),
            note="" if valid else "invalid: FLOPs not below full",
            **scores,
        )
        if getattr(generator, "calibration", None) is not None:
            result["calibrated_threshold"] = generator.params["threshold"]
            result["calibration_reached"] = generator.calibration.get("reached")
        if sampled.computed and len(sampled.computed) == len(sampled.call_flops):
            result.update(forecast_overhead(sampled.computed, sampled.call_flops, call_times))
        result.update(self._evaluate(sampled.output, conditions))
        return dict(result, **machine_info())

    def _baseline(self, record: dict, refs: list[dict], conditions) -> dict:
        full_flops = sum(r["flops"] for r in refs)
        result = dict(record, flops=full_flops, full_flops=full_flops, flops_speedup=1.0, wall_speedup=1.0,
                      full_steps=float(self.steps), cache_bytes=0, valid=True, note="baseline",
                      psnr=math.inf, ssim=1.0, rel_l2=0.0)
        result.update(self._evaluate(torch.cat([r["output"] for r in refs]), conditions))
        return dict(result, **machine_info())

    def _sample(self, generator, conditions, refs: list[dict], method: str) -> _Sampled:
        transformer = self.model.transformer
        outputs, flops, cache_bytes, call_flops, computed = [], 0, 0, [], []
        steps = FullStepCounter(transformer)
        meter = flops_meter(all(r.get("memo_flops_exact") for r in refs))
        with CacheBytesMeter(transformer) as cache, steps:
            for seed in self.seeds:
                with meter(transformer) as calls:
                    outputs.append(generator(conditions, seed))
                flops += calls.total
                stats = generator.cg_taylor_stats()
                if stats is not None:
                    cache_bytes = max(cache_bytes, stats.total_cache_bytes)
                if seed == self.seeds[0]:  # the seed that is timed
                    call_flops = calls.calls
                    computed = [r.computed for r in stats.records] if stats is not None else []
        if generator.cg_taylor_stats() is None:
            cache_bytes = cache.peak
        full_steps = steps.full_steps(len(self.seeds), generator.num_inference_steps)
        if method == "fewer-steps":
            full_steps = float(generator.num_inference_steps)
        return _Sampled(torch.cat(outputs), flops, cache_bytes, full_steps, call_flops, computed)

    def _evaluate(self, output, conditions) -> dict:
        if not self.evaluate:
            return {}
        conds = list(conditions) * len(self.seeds)
        with warnings.catch_warnings():  # few samples: the feature covariances are singular (said in the tables)
            warnings.simplefilter("ignore")
            return evaluate_samples(self.model, output, conds)

    def _time(self, generator, conditions) -> tuple[float, list[float]]:
        """Median full time over median method time, interleaved in this process (first seed's batch), and the
        method's per-call times of the last repeat."""
        if self.repeats <= 0:
            return math.nan, []
        model, transformer, seed = self.model, self.model.transformer, self.seeds[0]
        full_times, method_times, call_times = [], [], []
        for _ in range(self.repeats):
            generator.remove()
            start = time.perf_counter()
            model(conditions, num_inference_steps=self.steps, seed=seed)
            full_times.append(time.perf_counter() - start)
            generator.attach()
            with CallTimer(transformer) as timer:
                start = time.perf_counter()
                generator(conditions, seed)
                method_times.append(time.perf_counter() - start)
            call_times = timer.times
        return statistics.median(full_times) / statistics.median(method_times), call_times


def forecast_overhead(computed: list[bool], call_flops: list[int], call_times: list[float]) -> dict:
    """A forecast call's share of a full call, in FLOPs (the ideal: first block + head) and in measured time."""
    full_idx = [i for i, c in enumerate(computed) if c and i > 0]  # the first call carries one-off costs
    fc_idx = [i for i, c in enumerate(computed) if not c]
    if not full_idx or not fc_idx:
        return {}
    flops_ratio = statistics.median(call_flops[i] for i in fc_idx) / statistics.median(call_flops[i] for i in full_idx)
    out = {"forecast_flops_share": flops_ratio}
    if len(call_times) == len(computed):
        time_ratio = statistics.median(call_times[i] for i in fc_idx) / statistics.median(call_times[i] for i in full_idx)
        out.update(forecast_time_share=time_ratio, forecast_overhead=time_ratio / flops_ratio)
    return out
