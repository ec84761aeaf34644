"""Over what the gate measures its error, and whether a cache context decides for itself.

- ``"shared"``: one error over the whole batch; under CFG the second cache context (uncond) follows the decisions
  of the first (cond) through :class:`cgtaylor.gate.SharedDecisions`. The method as published.
- ``"per_branch"``: each cache context decides from its own batch-wide error.
- ``"per_sample"``: each cache context decides for itself from one error per sample of its batch. The blocks run
  for the whole batch, so the step is computed when any sample's error is at or above the threshold: the gate
  decides on the largest per-sample error, and every sample's error is recorded so that the cost of agreement
  (samples that would have been forecast but are computed for another one) can be measured.
"""

from __future__ import annotations

import math

import torch

from .parallel import relative_l1, relative_l1_per_sample

GATE_SCOPES = ("shared", "per_branch", "per_sample")


def check_gate_scope(scope) -> None:
    if scope not in GATE_SCOPES:
        raise ValueError(f"CGTaylorConfig.gate_scope must be one of {GATE_SCOPES}, got {scope!r}")


def follows_leader(scope: str) -> bool:
    """Whether a non-leading cache context takes the leading context's decisions."""
    return scope == "shared"


def measure_error(scope: str, forecast: torch.Tensor, actual: torch.Tensor,
                  group=None) -> tuple[float, list[float] | None]:
    """The error the gate decides on, and the per-sample errors where ``scope`` measures them."""
    if scope != "per_sample":
        return relative_l1(forecast, actual, group), None
    errors = relative_l1_per_sample(forecast, actual, group)
    return largest(errors), errors


def largest(errors: list[float]) -> float:
    """The largest error; NaN where any is NaN (a NaN error computes the step in full)."""
    return math.nan if any(math.isnan(e) for e in errors) else max(errors)
