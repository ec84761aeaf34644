"""Wall-clock and memory of CG-Taylor on the paper's transformers at their real sizes (random weights).

Each model is built from its published configuration (``conf/real_scale/*.yaml``; nothing is downloaded) and
driven directly with random inputs of the paper's resolution, one transformer call per step (two for Wan's
cond/uncond passes, one doubled batch for DiT's guidance). What is measured:

- the time of a full step and of a forecast step (embeddings + first block + gate + Taylor forecast + head),
  by forcing the gate: threshold 0 computes every step, threshold inf forecasts every step after warm-up;
  ``c = forecast-step time / full-step time``;
- end-to-end time of N-step runs with forced schedules of S full steps, against the plain model, and the
  ideal speedup ``N / (S + (N - S) c)``;
- peak accelerator memory of the plain model, with CG-Taylor and with diffusers' ``TaylorSeerCacheConfig``.

A schedule with S full steps is forced with public settings only: threshold inf, so the gate trusts every
forecast, and a warm-up W plus a cap k on consecutive forecasts chosen so that the gate's own rule
(``cgtaylor.gate.decide`` with a zero error) computes exactly S steps. After each run the recorded statistics
are checked against S (a non-finite first-block error would make the gate compute, and the check says so).

``--reduced`` builds tiny fp32 versions of the same classes on the CPU (for the tests); its numbers say
nothing about real speed.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..api import apply_cg_taylor, cg_taylor_stats, remove_cg_taylor, reset_cg_taylor
from ..config import CGTaylorConfig
from ..gate import decide
from ..io import atomic_write_csv, atomic_write_text
from ..meters import peak_memory_bytes as _peak
from ..meters import reset_peak_memory as _peak_reset
from .arguments import checked
from .compiled import COMPILE_MODES, compile_transformer

CONF_DIR = Path(__file__).resolve().parents[3] / "conf" / "real_scale"
MODEL_ORDER = ("dit-xl-2-256", "flux1-dev", "wan2.1-t2v-1.3b")  # cheapest first: the budget favours finishing
PAPER_FULL_STEPS = (23, 15, 13, 11)  # FLUX rows of the paper, full steps out of 50
# Full steps of 50 that the zoo's CG-Taylor runs calibrated for 2x and 3x compute (results/tables/table_*.md:
# DiT 27/16, FLUX 25/16 before flux-digits was guidance-distilled and 25/15 since, Wan 26/15), so the real-scale
# speedup of those schedules can be read off too.
ZOO_FULL_STEPS = (25, 16, 27)
DEFAULT_BUDGET_S = 420.0


# ---------------------------------------------------------------------------------------------------------
# Specs
# ---------------------------------------------------------------------------------------------------------
@dataclass
class ModelSpec:
    name: str
    family: str  # dit | flux | wan
    transformer: dict
    inputs: dict
    cfg: str  # none | batch | calls
    num_inference_steps: int
    cg_taylor: dict
    taylorseer: dict
    reduced: bool = False

    @property
    def contexts(self) -> tuple[str, ...]:
        return ("cond", "uncond") if self.cfg == "calls" else ("cond",)


def load_spec(path: str | Path, reduced: bool = False) -> ModelSpec:
    """A model spec from ``conf/real_scale/<name>.yaml`` (or a path); ``reduced`` applies its ``reduced:`` part."""
    from omegaconf import OmegaConf

    path = Path(path)
    if not path.is_file() and (CONF_DIR / f"{path}.yaml").is_file():
        path = CONF_DIR / f"{path}.yaml"
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    transformer, inputs = dict(raw["transformer"]), dict(raw["inputs"])
    if reduced:
        transformer.update(raw.get("reduced", {}).get("transformer", {}))
        inputs.update(raw.get("reduced", {}).get("inputs", {}))
    if raw["family"] not in ("dit", "flux", "wan"):
        raise ValueError(f"{path}: family must be dit, flux or wan, got {raw['family']!r}")
    return ModelSpec(
        name=raw["name"],
        family=raw["family"],
        transformer=transformer,
        inputs=inputs,
        cfg=raw.get("cfg", "none"),
        num_inference_steps=int(raw.get("num_inference_steps", 50)),
        cg_taylor=dict(raw.get("cg_taylor", {})),
        taylorseer=dict(raw.get("taylorseer", {})),
        reduced=reduced,
    )


def build_transformer(spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The diffusers transformer of ``spec`` with random weights, created directly on ``device`` in ``dtype``."""
    from diffusers import DiTTransformer2DModel, FluxTransformer2DModel, WanTransformer3DModel

    cls = {"dit": DiTTransformer2DModel, "flux": FluxTransformer2DModel, "wan": WanTransformer3DModel}[spec.family]
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.transformer.items()}
    previous = torch.get_default_dtype()
    torch.manual_seed(0)
    try:
        torch.set_default_dtype(dtype)  # no fp32 copy of a 12B model on the way
        with torch.device(device):
            model = cls(**kwargs)
    finally:
        torch.set_default_dtype(previous)
    return model.eval().requires_grad_(False)


@contextlib.contextmanager
def cache_context(transformer: torch.nn.Module, name: str, **fields):
    """``transformer.cache_context`` where the model has it; DiT's class lacks it, so set the same context directly."""
    if hasattr(transformer, "cache_context"):
        with transformer.cache_context(name, **fields):
            yield
        return
    from diffusers.hooks.hooks import CacheContext, _set_cache_context

    _set_cache_context(transformer, CacheContext(name, **fields))
    try:
        yield
    finally:
        _set_cache_context(transformer, None)


def apply_taylorseer(transformer: torch.nn.Module, settings: dict, dtype: torch.dtype) -> None:
    from diffusers.hooks import TaylorSeerCacheConfig, apply_taylorseer_cache

    apply_taylorseer_cache(transformer, TaylorSeerCacheConfig(**settings, taylor_factors_dtype=dtype))


def remove_taylorseer(transformer: torch.nn.Module) -> None:
    from diffusers.hooks import HookRegistry
    from diffusers.hooks.taylorseer_cache import _TAYLORSEER_CACHE_HOOK

    HookRegistry.check_if_exists_or_initialize(transformer).remove_hook(_TAYLORSEER_CACHE_HOOK, recurse=True)


# ---------------------------------------------------------------------------------------------------------
# Driving a trajectory
# ---------------------------------------------------------------------------------------------------------
class Clock:
    """CUDA events on a GPU (synchronised when read), perf_counter elsewhere."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def seconds(self, start, end) -> float:
        if self.cuda:
            end.synchronize()
            return start.elapsed_time(end) / 1000.0
        return end - start

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


@dataclass
class RunTiming:
    total_s: float
    step_s: list[float]


class Driver:
    """Runs an N-step trajectory through the transformer with random inputs of the paper's shapes.

    Every call is made inside ``transformer.cache_context(name, step_index=i, num_inference_steps=N)`` so that
    CG-Taylor and diffusers' caches see the step index and the step count, as in the diffusers pipelines.
    """

    def __init__(self, spec: ModelSpec, transformer: torch.nn.Module, device: torch.device, dtype: torch.dtype,
                 seed: int = 0):
        self.spec, self.transformer, self.device, self.dtype = spec, transformer, device, dtype
        self.clock = Clock(device)
        g = torch.Generator().manual_seed(seed)

        def randn(*shape):
            return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

        cfg, inp, b = spec.transformer, spec.inputs, int(spec.inputs.get("batch", 1))
        if spec.family == "flux":
            gh, gw = inp["image_tokens_hw"]
            tokens = gh * gw
            self.latents = randn(b, tokens, cfg["in_channels"])
            ids = torch.zeros(gh, gw, 3)
            ids[..., 1] = torch.arange(gh)[:, None]
            ids[..., 2] = torch.arange(gw)[None, :]
            self.fixed = dict(
                encoder_hidden_states=randn(b, inp["text_tokens"], cfg["joint_attention_dim"]),
                pooled_projections=randn(b, cfg["pooled_projection_dim"]),
                img_ids=ids.reshape(tokens, 3).to(device=device, dtype=dtype),
                txt_ids=torch.zeros(inp["text_tokens"], 3, device=device, dtype=dtype),
                guidance=torch.full((b,), float(inp.get("guidance", 3.5)), device=device, dtype=dtype),
            )
        elif spec.family == "dit":
            size = cfg["sample_size"]
            self.latents = randn(b, cfg["in_channels"], size, size)
            null = cfg.get("num_embeds_ada_norm", 1000)
            labels = torch.arange(b) % max(null, 1)
            self.fixed = dict(class_labels=torch.cat([labels, torch.full_like(labels, null)]).to(device))
        else:
            f, h, w = inp["latent_fhw"]
            self.latents = randn(b, cfg["in_channels"], f, h, w)
            self.text = {"cond": randn(b, inp["text_tokens"], cfg["text_dim"]),
                         "uncond": randn(b, inp["text_tokens"], cfg["text_dim"])}
            self.fixed = {}
        self.batch = b

    def _velocity(self, x: torch.Tensor, step: int, num_steps: int, sigma: float) -> torch.Tensor:
        t, family = self.transformer, self.spec.family
        ctx = dict(step_index=step, num_inference_steps=num_steps)
        if family == "flux":
            ts = torch.full((self.batch,), sigma, device=self.device, dtype=self.dtype)
            with cache_context(t, "cond", **ctx):
                return t(hidden_states=x, timestep=ts, return_dict=False, **self.fixed)[0]
        if family == "dit":
            ts = torch.full((2 * self.batch,), int(round(999 * sigma)), device=self.device, dtype=torch.long)
            with cache_context(t, "cond", **ctx):
                out = t(torch.cat([x, x]), timestep=ts, return_dict=False, **self.fixed)[0]
            cond, uncond = out[:, : x.shape[1]].chunk(2)
            return uncond + 1.5 * (cond - uncond)
        ts = torch.full((self.batch,), 1000.0 * sigma, device=self.device, dtype=self.dtype)
        out = {}
        for name in ("cond", "uncond"):
            with cache_context(t, name, **ctx):
                out[name] = t(hidden_states=x, timestep=ts, encoder_hidden_states=self.text[name],
                              return_dict=False)[0]
        return out["uncond"] + 5.0 * (out["cond"] - out["uncond"])

    @torch.no_grad()
    def run(self, num_steps: int, step_times: bool = False, on_step=None) -> RunTiming:
        """One trajectory (Euler steps on sigma 1 -> 1/N); returns its time and, if asked, each step's time.

        ``on_step(i)``, if given, is called after step ``i``.
        """
        from diffusers.hooks import HookRegistry

        sigmas = torch.linspace(1.0, 1.0 / num_steps, num_steps).tolist() + [0.0]
        x = self.latents.clone()
        clock, marks = self.clock, []
        clock.sync()
        start = clock.mark()
        for i in range(num_steps):
            if step_times:
                marks.append(clock.mark())
            v = self._velocity(x, i, num_steps, sigmas[i])
            x = x + (sigmas[i + 1] - sigmas[i]) * v.to(x.dtype)
            if on_step is not None:
                on_step(i)
        end = clock.mark()
        total = clock.seconds(start, end)
        marks.append(end)
        steps = [clock.seconds(a, b) for a, b in zip(marks[:-1], marks[1:])] if step_times else []
        # As the diffusers pipelines do at the end of __call__.
        HookRegistry.check_if_exists_or_initialize(self.transformer).reset_stateful_hooks()
        self.last_finite = bool(torch.isfinite(x).all())
        self.last_sample = x
        return RunTiming(total, steps)


# ---------------------------------------------------------------------------------------------------------
# Forced schedules
# ---------------------------------------------------------------------------------------------------------
def simulate_schedule(num_steps: int, warmup_steps: int, max_consecutive_forecasts: int | None) -> list[bool]:
    """Which steps the gate computes when every forecast is trusted (error 0, threshold inf)."""
    computed, run = [], 0
    for step in range(num_steps):
        decision = decide(
            step=step, num_steps=num_steps, warmup_steps=warmup_steps, first_block_error=0.0,
            threshold=math.inf, last_block_ready=step > 0, consecutive_forecasts=run,
            max_consecutive_forecasts=max_consecutive_forecasts,
        )
        computed.append(decision.compute)
        run = 0 if decision.compute else run + 1
    return computed


def forced_schedule(num_steps: int, full_steps: int) -> tuple[int, int | None]:
    """(warmup_steps, max_consecutive_forecasts) that make a threshold-inf gate compute exactly ``full_steps``.

    Among the settings that hit the count, the one with the shortest warm-up (full steps spread most evenly).
    """
    if not 2 <= full_steps <= num_steps:
        raise ValueError(f"full_steps must be between 2 (first and last step) and {num_steps}, got {full_steps}")
    best = None
    for cap in [None, *range(1, num_steps)]:
        for warmup in range(1, num_steps + 1):
            if sum(simulate_schedule(num_steps, warmup, cap)) == full_steps:
                if best is None or warmup < best[0]:
                    best = (warmup, cap)
                break
    assert best is not None  # warm-up alone reaches every count from 2 to N
    return best


def schedule_config(spec: ModelSpec, num_steps: int, full_steps: int) -> CGTaylorConfig:
    warmup, cap = forced_schedule(num_steps, full_steps)
    return CGTaylorConfig(**spec.cg_taylor).with_updates(
        threshold=math.inf, warmup_steps=warmup, max_consecutive_forecasts=cap, num_inference_steps=num_steps)


def computed_per_context(transformer) -> dict[str, int]:
    return {name: t.computed_steps for name, t in cg_taylor_stats(transformer).totals().items()}


# ---------------------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------------------
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


def _count_hooked(module: torch.nn.Module, hook_name: str) -> int:
    return sum(1 for m in module.modules()
               if getattr(m, "_diffusers_hook", None) is not None and m._diffusers_hook.get_hook(hook_name) is not None)


def _is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


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

    def median(values):
        return statistics.median(values) if values else None

    # Plain model: per-step time and peak memory.
    _peak_reset(device)
    plain = driver.run(probe_steps, step_times=True)
    result.plain_step_s = median(plain.step_s[1:])
    result.peak_bytes["plain"] = _peak(device)

    # Threshold 0: every step computed, with the gate's own work (first-block error) included.
    config = CGTaylorConfig(**spec.cg_taylor).with_updates(threshold=0.0, num_inference_steps=probe_steps)
    if compile_mode != "none":  # compile the hooked model's computed and forecast steps before timing them
        apply_cg_taylor(transformer, config.with_updates(threshold=math.inf, warmup_steps=2))
        result.first_run_s["cg_taylor"] = driver.run(probe_steps).total_s
    apply_cg_taylor(transformer, config)
    full = driver.run(probe_steps, step_times=True)
    warm = config.warmup_steps
    result.full_step_s = median(full.step_s[warm:-1] or full.step_s[1:])

    # Threshold inf: every step after warm-up forecast (blocks 2..L skipped).
    config = config.with_updates(threshold=math.inf, warmup_steps=2)
    apply_cg_taylor(transformer, config)
    _peak_reset(device)
    forecast = driver.run(probe_steps, step_times=True)
    result.peak_bytes["cg_taylor"] = _peak(device)
    records = cg_taylor_stats(transformer).for_context(spec.contexts[0])
    result.cache_bytes = cg_taylor_stats(transformer).total_cache_bytes
    skipped = sorted({r.step for r in records if not r.computed})
    result.forecast_step_s = median([forecast.step_s[s] for s in skipped])
    if not skipped:
        result.notes.append("the threshold-inf probe forecast no step (non-finite first-block error?)")
    remove_cg_taylor(transformer)

    # Peak memory with diffusers' TaylorSeer on the same model and inputs.
    try:
        apply_taylorseer(transformer, spec.taylorseer, dtype)
        result.taylorseer_modules = _count_hooked(transformer, "taylorseer_cache")
        _peak_reset(device)
        driver.run(probe_steps)
        result.peak_bytes["taylorseer"] = _peak(device)
    except Exception as error:  # report, do not lose the other numbers
        if device.type == "cuda":
            torch.cuda.empty_cache()
        result.peak_bytes["taylorseer"] = None
        result.notes.append(f"TaylorSeer: {'out of memory' if _is_oom(error) else repr(error)[:200]}")
    finally:
        remove_taylorseer(transformer)
    log(f"[{spec.name}] plain step {result.plain_step_s:.4f} s, full step {result.full_step_s:.4f} s, "
        f"forecast step {result.forecast_step_s} s, c = {result.c}")

    # End-to-end: the plain model, then each forced schedule, while the predicted time fits the deadline.
    c = result.c if result.c is not None else 1.0
    plan = [("plain", num_steps)] + [("cg_taylor", s) for s in full_steps]
    baseline = None
    for kind, s in plan:
        predicted = (s + (num_steps - s) * c) * (result.full_step_s or 0.0)
        row = dict(model=spec.name, method=kind, steps=num_steps, full_steps=s, predicted_s=predicted)
        if kind != "plain" and time.perf_counter() + predicted > deadline:  # the baseline always runs
            row["note"] = "skipped: time budget"
            result.rows.append(row)
            log(f"[{spec.name}] skip {kind} S={s}: predicted {predicted:.1f} s exceeds the budget")
            continue
        if kind == "plain":
            timing = driver.run(num_steps)
        else:
            config = schedule_config(spec, num_steps, s)
            apply_cg_taylor(transformer, config)
            reset_cg_taylor(transformer)
            timing = driver.run(num_steps)
            counts = computed_per_context(transformer)
            row["computed"] = "/".join(str(v) for v in counts.values())
            row["schedule_ok"] = all(v == s for v in counts.values())
            row["warmup"], row["cap"] = config.warmup_steps, config.max_consecutive_forecasts
            remove_cg_taylor(transformer)
        row["time_s"] = timing.total_s
        row["finite"] = driver.last_finite
        if kind == "plain":
            baseline = timing.total_s
        if baseline:
            row["speedup"] = baseline / timing.total_s
        row["ideal"] = num_steps / (s + (num_steps - s) * c)
        if "speedup" in row:
            row["of_ideal"] = row["speedup"] / row["ideal"]
        result.rows.append(row)
        log(f"[{spec.name}] {kind} S={s}: {timing.total_s:.3f} s" + (
            f", speedup {row['speedup']:.2f}x (ideal {row['ideal']:.2f}x)" if "speedup" in row else ""))

    del driver, transformer
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


# ---------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------
def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def _gib(value) -> str:
    return "n/a" if value is None else f"{value / 2**30:.2f}"


def _fmt(value, spec=".3f") -> str:
    return "–" if value is None else format(value, spec)


def render_markdown(results: list[ModelResult], *, device: torch.device, dtype: torch.dtype, reduced: bool,
                    command: str, elapsed_s: float) -> str:
    import diffusers

    compile_mode = results[0].compile_mode if results else "none"

    lines = [
        "# CG-Taylor at real scale (random weights)" + (" — reduced CPU smoke run" if reduced else "")
        + (f", torch.compile: {compile_mode}" if compile_mode != "none" else ""),
        "",
        f"- Device: {device_description(device)}; dtype {str(dtype).replace('torch.', '')}; "
        f"torch {torch.__version__}, diffusers {diffusers.__version__}.",
        f"- Command: `{command}`; wall time {elapsed_s:.0f} s.",
        "- Transformers built from their published configurations (`conf/real_scale/`) with random weights and "
        "driven with random inputs of the paper's shapes; no text encoder, VAE or scheduler time is included.",
        "- Full step: CG-Taylor at threshold 0 (gate work included). Forecast step: threshold inf after warm-up "
        "(embeddings, first block, gate, Taylor forecast, head). c = forecast / full. Medians over steps.",
        "- End-to-end: one run each, schedules of S full steps of N forced with threshold inf + warm-up + a cap "
        "on consecutive forecasts; ideal = N / (S + (N - S) c).",
    ]
    if reduced:
        lines.append("- Reduced mode: tiny widths and depths on the CPU. These numbers check the code path only.")
    if compile_mode != "none":
        lines.append(f"- Every run calls the transformer compiled ({compile_mode}; `cgtaylor.bench.compiled`), plain and "
                     "CG-Taylor alike; timings start after a compiling run of each. First runs, compilation included: "
                     + "; ".join(f"{r.name} plain {_fmt(r.first_run_s.get('plain'), '.1f')} s, CG-Taylor "
                                 f"{_fmt(r.first_run_s.get('cg_taylor'), '.1f')} s" for r in results) + ".")
    lines += ["", "## Step cost", "",
              "| model | params (M) | plain step (s) | full step (s) | forecast step (s) | c |",
              "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.name} | {r.params / 1e6:.2f} | {_fmt(r.plain_step_s, '.4f')} | {_fmt(r.full_step_s, '.4f')} "
                     f"| {_fmt(r.forecast_step_s, '.4f')} | {_fmt(r.c)} |")
    lines += ["", "## End-to-end speedup", "",
              "| model | method | S / N | computed (per context) | time (s) | speedup | ideal | of ideal | note |",
              "|---|---|---:|---|---:|---:|---:|---:|---|"]
    for r in results:
        for row in r.rows:
            note = row.get("note", "")
            if row.get("schedule_ok") is False:
                note = (note + "; " if note else "") + "schedule not as forced"
            if row.get("finite") is False:
                note = (note + "; " if note else "") + "non-finite output"
            lines.append(
                f"| {row['model']} | {row['method']} | {row['full_steps']} / {row['steps']} | {row.get('computed', '')} "
                f"| {_fmt(row.get('time_s'))} | {_fmt(row.get('speedup'), '.2f')} | {_fmt(row.get('ideal'), '.2f')} "
                f"| {_fmt(row.get('of_ideal'), '.2f')} | {note} |")
    lines += ["", "## Peak memory (GiB allocated)", "",
              "| model | plain | CG-Taylor | TaylorSeer (modules hooked) | CG-Taylor cache (MiB) |", "|---|---:|---:|---:|---:|"]
    for r in results:
        cache = "–" if r.cache_bytes is None else f"{r.cache_bytes / 2**20:.3g}"
        lines.append(f"| {r.name} | {_gib(r.peak_bytes.get('plain'))} | {_gib(r.peak_bytes.get('cg_taylor'))} "
                     f"| {_gib(r.peak_bytes.get('taylorseer'))} ({r.taylorseer_modules}) | {cache} |")
    notes = [f"- {r.name}: {n}" for r in results for n in r.notes]
    if notes:
        lines += ["", "## Notes", "", *notes]
    return "\n".join(lines) + "\n"


def write_csv(results: list[ModelResult], path: Path) -> None:
    import pandas as pd

    rows = []
    for r in results:
        for row in r.rows:
            rows.append(dict(row, params=r.params, plain_step_s=r.plain_step_s, full_step_s=r.full_step_s,
                             forecast_step_s=r.forecast_step_s, c=r.c,
                             peak_plain=r.peak_bytes.get("plain"), peak_cg_taylor=r.peak_bytes.get("cg_taylor"),
                             peak_taylorseer=r.peak_bytes.get("taylorseer"), cache_bytes=r.cache_bytes,
                             taylorseer_modules=r.taylorseer_modules, compile=r.compile_mode,
                             first_run_plain_s=r.first_run_s.get("plain"),
                             first_run_cg_taylor_s=r.first_run_s.get("cg_taylor")))
    atomic_write_csv(pd.DataFrame(rows), path)


# ---------------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------------
def scaled_full_steps(full_steps: list[int], num_steps: int, reference_steps: int = 50) -> list[int]:
    """Full-step counts for ``num_steps`` with the same fractions as ``full_steps`` of ``reference_steps``."""
    if num_steps == reference_steps:
        return list(full_steps)
    scaled = [min(num_steps, max(2, round(s * num_steps / reference_steps))) for s in full_steps]
    return list(dict.fromkeys(scaled))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None,
                        help="markdown output (default results/real_scale.md on CUDA; required otherwise)")
    parser.add_argument("--models", default=",".join(MODEL_ORDER), help="comma-separated spec names or paths")
    parser.add_argument("--full-steps", default=",".join(map(str, PAPER_FULL_STEPS + ZOO_FULL_STEPS)),
                        help="full-step counts S of N to force, in order (default: the paper's FLUX rows "
                             "23,15,13,11, then the zoo's 25,16,27)")
    parser.add_argument("--steps", type=int, default=None, help="N (default: the spec's, 50; reduced: 8)")
    parser.add_argument("--probe-steps", type=int, default=None, help="steps of the step-cost probes (default 10; reduced 6)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help=f"stop starting new runs after this many seconds (default {DEFAULT_BUDGET_S:.0f}; reduced 60)")
    parser.add_argument("--compile", default="none", choices=COMPILE_MODES,
                        help="torch.compile the transformer: none, full (torch.compile(transformer)) or regional "
                             "(transformer.compile_repeated_blocks()); plain and CG-Taylor runs alike")
    parser.add_argument("--reduced", action="store_true", help="tiny fp32 models on the CPU (tests, smoke runs)")
    parser.add_argument("--device", default=None, help="default: cuda if available (cpu when --reduced)")
    parser.add_argument("--dtype", default=None, help="default bfloat16 (float32 when --reduced)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's; 1 when --reduced, tiny ops lose to threading)")
    return parser.parse_args(argv)


def main(argv=None) -> list[ModelResult]:
    args = checked(parse_args(argv))  # every flag checked before any model is built
    args.argv = list(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    device = torch.device(args.device or ("cpu" if args.reduced or not torch.cuda.is_available() else "cuda"))
    dtype = getattr(torch, args.dtype or ("float32" if args.reduced else "bfloat16"))
    if args.out is None:
        if device.type != "cuda":
            raise SystemExit("--out is required off the GPU (results/real_scale.md is for GPU measurements)")
        args.out = Path("results/real_scale.md")
    threads = torch.get_num_threads()
    if args.threads or (args.reduced and device.type == "cpu"):
        torch.set_num_threads(args.threads or 1)
    try:
        return _run(args, device, dtype, started)
    finally:
        torch.set_num_threads(threads)


def _run(args, device: torch.device, dtype: torch.dtype, started: float) -> list[ModelResult]:
    budget = args.budget_s if args.budget_s is not None else (60.0 if args.reduced else DEFAULT_BUDGET_S)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if not names:
        raise SystemExit(f"--models names no model; give comma-separated spec names ({', '.join(MODEL_ORDER)}) "
                         "or paths to spec files")
    specs = [load_spec(n, reduced=args.reduced) for n in names]
    full_steps = [int(s) for s in args.full_steps.split(",") if s.strip()]
    probe_steps = args.probe_steps or (6 if args.reduced else 10)
    print(f"bench_real_scale: {len(specs)} model(s) on {device_description(device)}, {dtype}; new runs start only "
          f"within a {budget:.0f} s budget (plus model construction and the last run; the default models took "
          f"333 s on one H200 with a 340 s budget).", flush=True)

    results = []
    for index, spec in enumerate(specs):
        num_steps = args.steps or (8 if args.reduced else spec.num_inference_steps)
        counts = scaled_full_steps(full_steps, num_steps, spec.num_inference_steps)
        remaining = budget - (time.perf_counter() - started)
        deadline = time.perf_counter() + remaining / (len(specs) - index)  # an equal share of what is left
        try:
            results.append(bench_model(spec, device, dtype, counts, num_steps=num_steps, probe_steps=probe_steps,
                                       deadline=deadline, compile_mode=args.compile))
        except Exception as error:
            if not _is_oom(error):
                raise
            print(f"[{spec.name}] out of memory: {error}", file=sys.stderr)
            failed = ModelResult(spec.name, 0, num_steps)
            failed.notes.append("out of memory")
            results.append(failed)
            gc.collect()
            torch.cuda.empty_cache()
        elapsed = _write(results, args, device, dtype, started)  # after each model: a stopped run keeps them

    print(f"wrote {args.out} and {args.out.with_suffix('.csv')} in {elapsed:.0f} s", flush=True)
    return results


def _write(results: list[ModelResult], args, device: torch.device, dtype: torch.dtype, started: float) -> float:
    elapsed = time.perf_counter() - started
    command = "python scripts/bench_real_scale.py " + " ".join(args.argv)
    text = render_markdown(results, device=device, dtype=dtype, reduced=args.reduced, command=command.strip(),
                           elapsed_s=elapsed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(text, args.out)
    write_csv(results, args.out.with_suffix(".csv"))
    return elapsed


__all__ = ["ModelSpec", "ModelResult", "Driver", "load_spec", "build_transformer", "simulate_schedule",
           "forced_schedule", "schedule_config", "bench_model", "render_markdown", "main"]
