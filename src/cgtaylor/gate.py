"""The confidence gate's decision for one step, as a plain function of plain numbers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GateDecision:
    compute: bool
    # first | last | warmup | no_history | budget | cap | error | forecast | scheduled; deciding ahead (decide_ahead):
    # planned (forecast as a computed step planned) | pending (before the first block) | refresh (the plan ran out)
    reason: str


def decide(
    *,
    step: int,
    num_steps: int | None,
    warmup_steps: int,
    first_block_error: float | None,
    threshold: float,
    last_block_ready: bool,
    consecutive_forecasts: int,
    max_consecutive_forecasts: int | None,
    compute_steps: tuple[int, ...] | None = None,
    budget_forced: bool | None = None,
    gate_last_step: bool = False,
) -> GateDecision:
    """Whether step ``step`` is computed in full. Returns Python bools only, never tensors.

    With a forced schedule (``compute_steps``) the listed steps are computed and every other step is forecast
    wherever the forecaster has history; the warm-up, last-step, cap and error rules do not apply.
    ``budget_forced`` is a forecast budget's verdict for this step (:meth:`.forecast_budget.Budget.forced`): True
    computes it, False forecasts it (before the cap: the budget is exact), None leaves it to the cap and the error.
    ``gate_last_step``: the last step is decided like any other (per-step threshold scales say what it costs), not
    always computed.
    """
    if step == 0:
        return GateDecision(True, "first")
    if compute_steps is not None:
        return _scheduled(step, compute_steps, last_block_ready)
    if num_steps is not None and step >= num_steps - 1 and not gate_last_step:
        return GateDecision(True, "last")
    if step < warmup_steps:
        return GateDecision(True, "warmup")
    if first_block_error is None or not last_block_ready:
        return GateDecision(True, "no_history")
    if budget_forced is not None:
        return GateDecision(budget_forced, "budget")
    if max_consecutive_forecasts is not None and consecutive_forecasts >= max_consecutive_forecasts:
        return GateDecision(True, "cap")
    if not first_block_error < threshold:  # NaN errors compute in full
        return GateDecision(True, "error")
    return GateDecision(False, "forecast")


def _scheduled(step: int, compute_steps: tuple[int, ...], last_block_ready: bool) -> GateDecision:
    if step in compute_steps:
        return GateDecision(True, "scheduled")
    if not last_block_ready:
        return GateDecision(True, "no_history")
    return GateDecision(False, "forecast")


class SharedDecisions:
    """Lets several cache contexts (cond / uncond passes) follow one context's decisions.

    The first context to start a trajectory leads: it decides from its own first-block error and records
    each decision by step index; the other contexts follow the recorded decision for the same step, and
    decide for themselves only where the leader recorded none.
    """

    def __init__(self) -> None:
        self.leader: str | None = None
        self.by_step: dict[int, GateDecision] = {}

    def start_trajectory(self, context: str) -> None:
        if self.leader is None or self.leader == context:
            self.leader = context
            self.by_step.clear()

    def is_leader(self, context: str) -> bool:
        return self.leader is None or self.leader == context

    def record(self, step: int, decision: GateDecision) -> None:
        self.by_step[step] = decision

    def lookup(self, step: int) -> GateDecision | None:
        return self.by_step.get(step)

    def reset(self) -> None:
        self.leader = None
        self.by_step.clear()
