"""One condition generated in full and with CG-Taylor, side by side, with what the gate did."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from ..api import apply_cg_taylor, cg_taylor_stats, remove_cg_taylor
from ..config import CGTaylorConfig
from ..meters import count_flops
from ..metrics import fidelity


@dataclass
class GateRun:
    full: torch.Tensor
    accelerated: torch.Tensor
    steps: pd.DataFrame  # one row per (context, step): the gate's records
    full_flops: int
    accelerated_flops: int
    fidelity: dict[str, float]
    config: CGTaylorConfig

    @property
    def flops_speedup(self) -> float:
        return self.full_flops / self.accelerated_flops

    @property
    def computed_steps(self) -> int:
        leader = self.steps["context"].iloc[0]
        return int(self.steps[self.steps.context == leader]["computed"].sum())

    def summary(self) -> dict[str, float]:
        return {
            "threshold": self.config.threshold,
            "computed_steps": self.computed_steps,
            "steps": int((self.steps.context == self.steps["context"].iloc[0]).sum()),
            "flops_speedup": self.flops_speedup,
            **self.fidelity,
        }


def run_gate(model, conditions, config: CGTaylorConfig, *, seed: int = 0, num_inference_steps: int = 50,
             full: torch.Tensor | None = None, full_flops: int | None = None) -> GateRun:
    """Generate ``conditions`` with the zoo ``model`` in full (unless given) and with ``config``."""
    transformer = model.transformer
    remove_cg_taylor(transformer)
    if full is None or full_flops is None:
        full, full_flops = count_flops(lambda: model(conditions, num_inference_steps=num_inference_steps, seed=seed),
                                       transformer)
    apply_cg_taylor(transformer, config)
    try:
        accelerated, flops = count_flops(
            lambda: model(conditions, num_inference_steps=num_inference_steps, seed=seed), transformer
        )
        steps = cg_taylor_stats(transformer).to_dataframe()
    finally:
        remove_cg_taylor(transformer)
    return GateRun(full, accelerated, steps, full_flops, flops, fidelity(accelerated, full), config)
