"""The compiled run of one model against its eager run: same output, same decisions, compiled once.

``probe_compile`` runs CG-Taylor eagerly, then compiled (``full`` or ``regional``), then a second generation, a
changed threshold and a changed step count with ``torch._dynamo.config.error_on_recompile`` set, and reports
the difference, the compiled graphs run per step, the host syncs per step and dynamo's counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..api import apply_cg_taylor, cg_taylor_stats, remove_cg_taylor
from ..config import CGTaylorConfig
from .compiled import GraphCounter, compile_transformer, count_host_syncs, dynamo_counts, reset_dynamo
from .driver import Driver
from .specs import build_transformer


@dataclass
class CompileProbe:
    model: str
    mode: str
    backend: str
    num_steps: int
    threshold: float
    max_abs_diff: float  # compiled against eager CG-Taylor output, same inputs
    same_decisions: bool
    eager_s: float  # one eager CG-Taylor generation
    first_compiled_s: float  # the first compiled generation, compilation included
    compiled_s: float  # the second compiled generation
    counts_first: dict  # dynamo_counts() after the first compiled generation
    counts_after: dict  # ... after a second generation, a changed threshold and a changed step count
    graphs_per_step: dict  # "computed" / "forecast" -> compiled graphs run per step (sorted distinct values)
    syncs_per_step: dict  # "computed" / "forecast" -> host syncs per step in the eager run
    decisions: list = field(default_factory=list)

    @property
    def recompiles(self) -> int:
        return self.counts_after["frames_compiled"] - self.counts_first["frames_compiled"]


def decisions(transformer) -> list[tuple]:
    """(context, step, computed, reason, first-block error) of every call in the last generation."""
    return [(r.context, r.step, r.computed, r.reason, r.first_block_error) for r in cg_taylor_stats(transformer).records]


def mixed_threshold(spec, transformer, num_steps: int, seed: int = 0) -> float:
    """A threshold midway between two of the first-block errors of an every-step-computed run.

    Half the steps after warm-up fall under it, so a run takes both decisions; midway, so that rounding
    differences (compiled kernels, sums over shards) cannot flip a decision.
    """
    apply_cg_taylor(transformer, CGTaylorConfig(**spec.cg_taylor).with_updates(
        threshold=0.0, analysis=True, warmup_steps=2, num_inference_steps=num_steps))
    weight = next(transformer.parameters())
    Driver(spec, transformer, weight.device, weight.dtype, seed=seed).run(num_steps)
    errors = sorted(e for *_, e in decisions(transformer) if e is not None)
    remove_cg_taylor(transformer)
    if len(errors) < 2:
        raise ValueError(f"{num_steps} steps leave fewer than 2 first-block errors to put a threshold between")
    middle = len(errors) // 2
    return (errors[middle - 1] + errors[middle]) / 2


def _per_step(counts_after_step: list[int], computed: list[bool]) -> dict[str, list[int]]:
    deltas = [b - a for a, b in zip([0] + counts_after_step[:-1], counts_after_step)]
    return {kind: sorted({d for d, c in zip(deltas, computed) if c == (kind == "computed")})
            for kind in ("computed", "forecast")}


def _computed_steps(transformer) -> list[bool]:
    """Per step, whether the leading context computed it (followers take the same decisions)."""
    records = cg_taylor_stats(transformer).records
    leader = records[0].context
    return [r.computed for r in records if r.context == leader]


def probe_compile(spec, mode: str, *, backend: str = "inductor", num_steps: int = 8, other_steps: int = 6,
                  device=torch.device("cpu"), dtype=torch.float32, **gate_options) -> CompileProbe:
    """Eager CG-Taylor, then the same compiled (``mode``), then three more generations that must not recompile.
    ``gate_options``: further ``CGTaylorConfig`` fields (e.g. ``forecast_budget``)."""
    transformer = build_transformer(spec, device, dtype)
    config = CGTaylorConfig(**spec.cg_taylor).with_updates(
        threshold=mixed_threshold(spec, transformer, num_steps), warmup_steps=2, **gate_options)
    apply_cg_taylor(transformer, config)
    driver = Driver(spec, transformer, device, dtype)

    syncs = []
    with count_host_syncs() as sync_counter:
        eager = driver.run(num_steps, on_step=lambda i: syncs.append(sync_counter.count))
    reference, reference_decisions = driver.last_sample, decisions(transformer)
    computed = _computed_steps(transformer)

    reset_dynamo()
    counter = GraphCounter(backend)
    driver.transformer = compile_transformer(transformer, mode, backend=counter)
    graphs = []
    first = driver.run(num_steps, on_step=lambda i: graphs.append(counter.graphs_run))
    sample, compiled_decisions = driver.last_sample, decisions(transformer)
    counts_first = dynamo_counts()
    with torch._dynamo.config.patch(error_on_recompile=True):
        second = driver.run(num_steps)  # a second generation
        # Applied to what the driver calls (for `full`, the torch.compile wrapper), as a user would.
        apply_cg_taylor(driver.transformer, config.with_updates(threshold=2 * config.threshold))
        driver.run(num_steps)  # another threshold
        apply_cg_taylor(driver.transformer, config)
        driver.run(other_steps)  # another step count
    return CompileProbe(
        model=spec.name, mode=mode, backend=backend, num_steps=num_steps, threshold=config.threshold,
        max_abs_diff=float((sample - reference).abs().max()),
        same_decisions=[d[:4] for d in compiled_decisions] == [d[:4] for d in reference_decisions],
        eager_s=eager.total_s, first_compiled_s=first.total_s, compiled_s=second.total_s,
        counts_first=counts_first, counts_after=dynamo_counts(),
        graphs_per_step=_per_step(graphs, computed), syncs_per_step=_per_step(syncs, computed),
        decisions=reference_decisions,
    )
