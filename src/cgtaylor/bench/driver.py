"""Driving an N-step trajectory through a bare transformer with random inputs of the paper's shapes."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch

from .. import _diffusers
from .families import family
from .specs import ModelSpec


@contextlib.contextmanager
def cache_context(transformer: torch.nn.Module, name: str, **fields):
    """``transformer.cache_context`` where the model has it; DiT's class lacks it, so set the same context directly."""
    if hasattr(transformer, "cache_context"):
        with transformer.cache_context(name, **fields):
            yield
        return
    from diffusers.hooks.hooks import CacheContext

    _diffusers.set_cache_context(transformer, CacheContext(name, **fields))
    try:
        yield
    finally:
        _diffusers.set_cache_context(transformer, None)


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
    CG-Taylor and diffusers' caches see the step index and the step count, as in the diffusers pipelines. How a
    family is called and guided is the data of ``bench.families`` and the spec's ``cfg`` mode.
    """

    def __init__(self, spec: ModelSpec, transformer: torch.nn.Module, device: torch.device, dtype: torch.dtype,
                 seed: int = 0):
        self.spec, self.transformer, self.device, self.dtype = spec, transformer, device, dtype
        self.family = family(spec.family)
        self.clock = Clock(device)
        g = torch.Generator().manual_seed(seed)

        def randn(*shape):
            return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

        self.batch = int(spec.inputs.get("batch", 1))
        self.inputs = self.family.make_inputs(spec.transformer, spec.inputs, self.batch, randn, device, dtype)
        self.latents = self.inputs.latents

    def _timesteps(self, sigma: float, batch: int) -> torch.Tensor:
        value = self.family.timestep_scale * sigma
        if self.family.integer_timesteps:
            return torch.full((batch,), int(round(value)), device=self.device, dtype=torch.long)
        return torch.full((batch,), value, device=self.device, dtype=self.dtype)

    def _call(self, context: str, x: torch.Tensor, timestep: torch.Tensor, ctx: dict) -> torch.Tensor:
        kwargs = dict(self.inputs.fixed, **self.inputs.per_context.get(context, {}))
        with cache_context(self.transformer, context, **ctx):
            return self.transformer(hidden_states=x, timestep=timestep, return_dict=False, **kwargs)[0]

    def _velocity(self, x: torch.Tensor, step: int, num_steps: int, sigma: float) -> torch.Tensor:
        ctx = dict(step_index=step, num_inference_steps=num_steps)
        mode = self.spec.cfg
        if mode == "none":
            return self._call("cond", x, self._timesteps(sigma, self.batch), ctx)
        if mode == "batch":
            out = self._call("cond", torch.cat([x, x]), self._timesteps(sigma, 2 * self.batch), ctx)
            cond, uncond = out[:, : x.shape[1]].chunk(2)  # DiT also predicts its variance: channels beyond x's
        else:
            timestep = self._timesteps(sigma, self.batch)
            cond, uncond = (self._call(name, x, timestep, ctx) for name in ("cond", "uncond"))
        return uncond + self.family.guidance_scale * (cond - uncond)

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
