"""The gate explorer's computation: one or two samples generated with CG-Taylor for the settings a user picks,
against a full-compute reference that is computed once per model, conditions and step count.

A change of the gate's settings re-runs only the accelerated generation. Its FLOPs are not counted op by op
(``FlopCounterMode`` makes a generation several times slower); they follow from the gate's decisions and two
per-call counts measured once per model and batch: a full transformer call and a forecast call (the full call
less the blocks a forecast skips). ``FlopCounterMode`` counts matrix products and convolutions only, so the sum
equals what :func:`cgtaylor.meters.count_flops` reports for the same run (a test checks it).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, fields

import torch

from .. import zoo
from ..api import apply_cg_taylor, cg_taylor_stats, remove_cg_taylor
from ..blocks import find_blocks
from ..config import CGTaylorConfig
from ..meters import ExactFlops, count_flops
from ..metrics import fidelity
from .gate_run import GateRun


@dataclass(frozen=True)
class ExplorerSettings:
    """What the explorer's widgets set: the model, one condition, and the gate's settings."""

    model_name: str = "dit-digits"
    condition: object = None  # None: the model's first default condition
    threshold: float = 0.05
    warmup_steps: int = 3
    first_block_order: int = 1
    last_block_order: int = 1
    forecast: str = "residual"
    forecast_budget: float = 0.0  # the share of steps forecast, exactly; 0: no budget (the threshold alone decides)

    def config(self, num_inference_steps: int | None = None) -> CGTaylorConfig:
        """The gate's config; with the step count, so the last step is computed as in the experiment tables."""
        gate = {f.name for f in fields(CGTaylorConfig)}
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name in gate}
        values["forecast_budget"] = self.forecast_budget or None
        return CGTaylorConfig(**values, num_inference_steps=num_inference_steps)


@dataclass
class ExplorerRun:
    settings: ExplorerSettings
    gate: GateRun
    seconds: float  # wall time of this update: the accelerated generation (and the reference when not cached)

    def readout(self) -> str:
        s = self.gate.summary()
        return (f"{s['flops_speedup']:.2f}x fewer FLOPs, PSNR {s['psnr']:.1f} dB against full compute, "
                f"{s['computed_steps']}/{s['steps']} steps computed")


def call_flops(model, conditions) -> tuple[float, float]:
    """FLOPs of one full transformer call and of one forecast call (blocks 2..L skipped) on ``conditions``,
    counted on one-step generations."""
    transformer = model.transformer
    remove_cg_taylor(transformer)
    calls = []
    handle = transformer.register_forward_pre_hook(lambda module, args: calls.append(None))
    try:
        _, total = count_flops(lambda: model(conditions, num_inference_steps=1, seed=0), transformer)
    finally:
        handle.remove()
    skipped = [ExactFlops(block) for block in find_blocks(transformer).blocks[1:]]
    with contextlib.ExitStack() as stack:
        for meter in skipped:
            stack.enter_context(meter)
        model(conditions, num_inference_steps=1, seed=0)
    full = total / len(calls)
    return full, full - sum(meter.total for meter in skipped) / len(calls)


class GateExplorer:
    """Generates ``num_samples`` samples of a condition with CG-Taylor for given :class:`ExplorerSettings`.

    Models, full-compute references and per-call FLOPs are kept between runs, so a change of the threshold, the
    warm-up, the orders or the forecast mode costs one accelerated generation.
    """

    def __init__(self, num_samples: int = 1, seed: int = 0, num_inference_steps: int = 50, load=zoo.load):
        self.num_samples = num_samples
        self.seed = seed
        self.num_inference_steps = num_inference_steps
        self._load = load
        self._models: dict = {}
        self._references: dict = {}
        self._call_flops: dict = {}

    def model(self, name: str):
        if name not in self._models:
            self._models[name] = self._load(name)
        return self._models[name]

    def condition_choices(self, name: str, n: int = 10) -> list:
        return self.model(name).default_conditions(n, seed=0)

    def conditions(self, settings: ExplorerSettings) -> list:
        condition = settings.condition
        if condition is None:
            condition = self.condition_choices(settings.model_name, 1)[0]
        return [condition] * self.num_samples

    def reference(self, settings: ExplorerSettings) -> tuple[torch.Tensor, int]:
        """The full-compute output and its FLOPs, computed once per model, conditions and step count."""
        model, conditions = self.model(settings.model_name), self.conditions(settings)
        key = (settings.model_name, repr(conditions), self.num_inference_steps, self.seed)
        if key not in self._references:
            remove_cg_taylor(model.transformer)
            self._references[key] = count_flops(
                lambda: model(conditions, num_inference_steps=self.num_inference_steps, seed=self.seed),
                model.transformer)
        return self._references[key]

    def _per_call(self, settings: ExplorerSettings) -> tuple[float, float]:
        key = (settings.model_name, self.num_samples)
        if key not in self._call_flops:
            self._call_flops[key] = call_flops(self.model(settings.model_name), self.conditions(settings))
        return self._call_flops[key]

    def run(self, settings: ExplorerSettings) -> ExplorerRun:
        """The accelerated generation for ``settings``, scored against the (cached) reference."""
        start = time.perf_counter()
        config = settings.config(self.num_inference_steps)
        model, conditions = self.model(settings.model_name), self.conditions(settings)
        full, full_flops = self.reference(settings)
        full_call, forecast_call = self._per_call(settings)
        transformer = model.transformer
        apply_cg_taylor(transformer, config)
        try:
            accelerated = model(conditions, num_inference_steps=self.num_inference_steps, seed=self.seed)
            steps = cg_taylor_stats(transformer).to_dataframe()
        finally:
            remove_cg_taylor(transformer)
        flops = round(sum(full_call if computed else forecast_call for computed in steps["computed"]))
        gate = GateRun(full, accelerated, steps, full_flops, flops, fidelity(accelerated, full), config)
        return ExplorerRun(settings, gate, time.perf_counter() - start)
