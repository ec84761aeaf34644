"""Error feedback: the first block's forecast miss, measured on every step, corrects the last-block forecast.

On a forecast step the first block's forecast ``F1`` said it would move from its last refreshed output ``h1_prev``
by ``F1 - h1_prev``; it actually moved by ``h1 - h1_prev``. The least-squares scale of the actual move onto the
forecast move, per sample,

    gamma = <h1 - h1_prev, F1 - h1_prev> / ||F1 - h1_prev||^2,

clamped to ``GAMMA_RANGE``, scales the last-block forecast's increment over its own last refreshed value
``L_prev``: ``L_prev + gamma * (forecast - L_prev)``. When the first block moves exactly as forecast, gamma is 1
and the forecast is unchanged. Where the forecast did not move (order 0, or a sample whose features stood still)
gamma is undefined and taken as 1.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

ERROR_FEEDBACK_MODES = ("none", "scale")
GAMMA_RANGE = (0.0, 2.0)
FEEDBACK_FORECASTS = ("last_block", "residual")  # the forecasts with one increment to scale


def check_error_feedback(mode, forecast: str) -> None:
    if mode not in ERROR_FEEDBACK_MODES:
        raise ValueError(f"CGTaylorConfig.error_feedback must be one of {ERROR_FEEDBACK_MODES}, got {mode!r}")
    if mode != "none" and forecast not in FEEDBACK_FORECASTS:
        raise ValueError(f"CGTaylorConfig.error_feedback={mode!r} needs forecast in {FEEDBACK_FORECASTS} (one "
                         f"last-block increment to scale), got forecast={forecast!r}")


def feedback_scale(forecast: torch.Tensor, actual: torch.Tensor, previous: torch.Tensor, group=None) -> torch.Tensor:
    """Per-sample gamma (a float tensor of the batch size, on the features' device), clamped to ``GAMMA_RANGE``.

    With ``group`` (context parallelism) the dot products are summed over every rank's shard first.
    """
    actual = actual.float()
    previous = previous.float().to(actual.device)
    predicted = (forecast.float().to(actual.device) - previous).flatten(1)
    moved = (actual - previous).flatten(1)
    sums = torch.stack([(moved * predicted).sum(1), (predicted * predicted).sum(1)])
    if group is not None:
        dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=group)
    gamma = sums[0] / sums[1]
    gamma = torch.where(sums[1] > 0, gamma, torch.ones_like(gamma))
    return gamma.clamp(*GAMMA_RANGE)


def apply_feedback(forecast: torch.Tensor, anchor: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """``anchor + gamma * (forecast - anchor)`` with one gamma per sample (the leading dimension).

    Written as ``forecast + (gamma - 1) * (forecast - anchor)`` so that gamma 1 returns the forecast bit for bit.
    """
    anchor = anchor.to(device=forecast.device, dtype=forecast.dtype)
    gamma = gamma.to(device=forecast.device, dtype=forecast.dtype).reshape(-1, *([1] * (forecast.dim() - 1)))
    return forecast + (gamma - 1) * (forecast - anchor)
