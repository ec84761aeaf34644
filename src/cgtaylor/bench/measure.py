"""What the real-scale benchmark measures on one model: step costs, peak memory, forced end-to-end runs."""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field

import torch

from .. import _diffusers
from ..api import apply_cg_taylor, cg_taylor_stats, remove_cg_taylor, reset_cg_taylor
from ..config import CGTaylorConfig
from ..meters import peak_memory_bytes, reset_peak_memory
from .compiled import compile_transformer
from .driver import Driver
from .schedules import computed_per_context, schedule_config
from .specs import ModelSpec, build_transformer


@dataclass
class ModelResult:
    name: str
    params: int
    num_steps: int
    plain_step_s: float | None = None
    full_step_s: float | None = None
    forecast_step_s: float | None = None
    peak_bytes: dict = field(default_factory=dict)  # plain | cg_taylor | taylorseer -> bytes (None on CPU)
    cache_bytes: int | None = None
    taylorseer_modules: int = 0  # modules TaylorSeer hooked (cached or skipped)
    compile_mode: str = "none"  # none | full | regional (cgtaylor.bench.compiled)
    first_run_s: dict = field(default_factory=dict)  # plain | cg_taylor -> first compiled run, compilation included
    rows: list = field(default_factory=list)  # end-to-end runs
    notes: list = field(default_factory=list)

    @property
    def c(self) -> float | None:
        if self.full_step_s and self.forecast_step_s is not None:
            return self.forecast_step_s / self.full_step_s
        return None


def apply_taylorseer(transformer: torch.nn.Module, settings: dict, dtype: torch.dtype) -> None:
    from diffusers.hooks import TaylorSeerCacheConfig, apply_taylorseer_cache

    apply_taylorseer_cache(transformer, TaylorSeerCacheConfig(**settings, taylor_factors_dtype=dtype))


def remove_taylorseer(transformer: torch.nn.Module) -> None:
    from diffusers.hooks import HookRegistry

    HookRegistry.check_if_exists_or_initialize(transformer).remove_hook(_diffusers.taylorseer_hook_name(), recurse=True)


def _count_hooked(module: torch.nn.Module, hook_name: str) -> int:
    return sum(1 for m in module.modules() if hook_name in _diffusers.hook_names(m))




def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


def _median(values):
    return statistics.median(values) if values else None


def forecasting_config(config: CGTaylorConfig, num_steps: int) -> CGTaylorConfig:
    """``config`` forced to compute steps 0 and 1 (the ladders' history) and the last, forecasting the rest."""
    return config.with_updates(compute_steps=(0, 1, num_steps - 1))


def measure_step_costs(spec: ModelSpec, transformer, driver: Driver, result: ModelResult, probe_steps: int) -> None:
    """Plain, full and forecast step times, and the peak memory of the plain model and of CG-Taylor."""
    device = driver.device
    reset_peak_memory(device)
    plain = driver.run(probe_steps, step_times=True)
    result.plain_step_s = _median(plain.step_s[1:])
    result.peak_bytes["plain"] = peak_memory_bytes(device)

    # Threshold 0: every step computed, with the gate's own work (first-block error) included.
    config = CGTaylorConfig(**spec.cg_taylor).with_updates(threshold=0.0, num_inference_steps=probe_steps)
    if result.compile_mode != "none":  # compile the hooked model's computed and forecast steps before timing them
        apply_cg_taylor(transformer, forecasting_config(config, probe_steps))
        result.first_run_s["cg_taylor"] = driver.run(probe_steps).total_s
    apply_cg_taylor(transformer, config)
    full = driver.run(probe_steps, step_times=True)
    result.full_step_s = _median(full.step_s[config.warmup_steps:-1] or full.step_s[1:])

    # Every step but the first two and the last forecast (blocks 2..L skipped).
    apply_cg_taylor(transformer, forecasting_config(config, probe_steps))
    reset_peak_memory(device)
    forecast = driver.run(probe_steps, step_times=True)
    result.peak_bytes["cg_taylor"] = peak_memory_bytes(device)
    records = cg_taylor_stats(transformer).for_context(spec.contexts[0])
    result.cache_bytes = cg_taylor_stats(transformer).total_cache_bytes
    skipped = sorted({r.step for r in records if not r.computed})
    result.forecast_step_s = _median([forecast.step_s[s] for s in skipped])
    if not skipped:
        result.notes.append("the forecasting probe forecast no step (forecaster without history?)")
    remove_cg_taylor(transformer)


def measure_taylorseer_peak(spec: ModelSpec, transformer, driver: Driver, result: ModelResult, probe_steps: int,
                            dtype: torch.dtype) -> None:
    """Peak memory with diffusers' TaylorSeer on the same model and inputs (a failure is noted, not raised)."""
    device = driver.device
    try:
        apply_taylorseer(transformer, spec.taylorseer, dtype)
        result.taylorseer_modules = _count_hooked(transformer, _diffusers.taylorseer_hook_name())
        reset_peak_memory(device)
        driver.run(probe_steps)
        result.peak_bytes["taylorseer"] = peak_memory_bytes(device)
    except Exception as error:  # report, do not lose the other numbers
        if device.type == "cuda":
            torch.cuda.empty_cache()
        result.peak_bytes["taylorseer"] = None
        result.notes.append(f"TaylorSeer: {'out of memory' if is_out_of_memory(error) else repr(error)[:200]}")
    finally:
        remove_taylorseer(transformer)


def _forced_run(spec: ModelSpec, transformer, driver: Driver, num_steps: int, full_steps: int, row: dict):
    config = schedule_config(spec, num_steps, full_steps)
    apply_cg_taylor(transformer, config)
    reset_cg_taylor(transformer)
    timing = driver.run(num_steps)
    counts = computed_per_context(transformer)
    row["computed"] = "/".join(str(v) for v in counts.values())
    row["schedule_ok"] = all(v == full_steps for v in counts.values())
    row["compute_steps"] = " ".join(map(str, config.compute_steps))
    remove_cg_taylor(transformer)
    return timing


def run_end_to_end(spec: ModelSpec, transformer, driver: Driver, result: ModelResult, full_steps: list[int],
                   num_steps: int, deadline: float, log=print) -> None:
    """The plain model, then each forced schedule, while the predicted time fits the deadline."""
    c = result.c if result.c is not None else 1.0
    baseline = None
    for kind, s in [("plain", num_steps)] + [("cg_taylor", s) for s in full_steps]:
        predicted = (s + (num_steps - s) * c) * (result.full_step_s or 0.0)
        row = dict(model=spec.name, method=kind, steps=num_steps, full_steps=s, predicted_s=predicted)
        result.rows.append(row)
        if kind != "plain" and time.perf_counter() + predicted > deadline:  # the baseline always runs
            row["note"] = "skipped: time budget"
            log(f"[{spec.name}] skip {kind} S={s}: predicted {predicted:.1f} s exceeds the budget")
            continue
        if kind == "plain":
            timing = driver.run(num_steps)
            baseline = timing.total_s
        else:
            timing = _forced_run(spec, transformer, driver, num_steps, s, row)
        row["time_s"] = timing.total_s
        row["finite"] = driver.last_finite
        if baseline:
            row["speedup"] = baseline / timing.total_s
        row["ideal"] = num_steps / (s + (num_steps - s) * c)
        if "speedup" in row:
            row["of_ideal"] = row["speedup"] / row["ideal"]
        log(f"[{spec.name}] {kind} S={s}: {timing.total_s:.3f} s" + (
            f", speedup {row['speedup']:.2f}x (ideal {row['ideal']:.2f}x)" if "speedup" in row else ""))


def bench_model(spec: ModelSpec, device: torch.device, dtype: torch.dtype, full_steps: list[int], *,
                num_steps: int, probe_steps: int, deadline: float, compile_mode: str = "none",
                log=print) -> ModelResult:
    transformer = build_transformer(spec, device, dtype)
    params = sum(p.numel() for p in transformer.parameters())
    result = ModelResult(spec.name, params, num_steps, compile_mode=compile_mode)
    # Hooks are applied to and removed from `transformer`; the driver calls it, compiled as asked.
    driver = Driver(spec, compile_transformer(transformer, compile_mode), device, dtype)
    log(f"[{spec.name}] {params / 1e6:.2f} M parameters on {device} ({dtype}), compile: {compile_mode}; warm-up")
    warmup = driver.run(2)  # kernels, allocator, autotuning, compilation
    if compile_mode != "none":
        result.first_run_s["plain"] = warmup.total_s
    measure_step_costs(spec, transformer, driver, result, probe_steps)
    measure_taylorseer_peak(spec, transformer, driver, result, probe_steps, dtype)
    log(f"[{spec.name}] plain step {result.plain_step_s:.4f} s, full step {result.full_step_s:.4f} s, "
        f"forecast step {result.forecast_step_s} s, c = {result.c}")
    run_end_to_end(spec, transformer, driver, result, full_steps, num_steps, deadline, log)

    del driver, transformer
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result
