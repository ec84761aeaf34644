"""The gate deciding ahead (``CGTaylorConfig(decide_ahead=True)``): each computed step plans how many of the next
steps are forecast, so a forecast step runs no probe block.

The paper's gate runs the first block on every step to measure its own forecast error there. On a forecast step
that block is pure overhead: 1/28 of a full step on DiT's 28 blocks, which a fixed schedule such as TaylorSeer's
does not pay; at 50 steps it moves a strict alternation of computed and forecast steps from 1.96x to 1.89x FLOPs
speedup. Deciding ahead measures the same error, only on computed steps (where the first block runs anyway): the
error of the first block's forecast at the distance ``h`` from its previous refresh, grown to each later distance
``j`` the way the error of an order-``p`` forecast grows, ``error * (j / h) ** (p + 1)``. The steps whose grown
error stays under the threshold (the threshold at that step, under a threshold schedule) are forecast, up to the
cap on forecasts in a row and never the last step; the step after them is computed and plans again. A forecast
step then runs no block at all (``forecast="last_block"``), or every block with its attention and MLP outputs
forecast, the first block's included (``"modules"``).
"""

from __future__ import annotations

from collections.abc import Sequence

AHEAD_FORECASTS = ("last_block", "modules")


def check_decide_ahead(config) -> None:
    value = config.decide_ahead
    if not isinstance(value, bool):
        raise ValueError(f"CGTaylorConfig.decide_ahead must be True or False, got {value!r}")
    if not value:
        return
    if config.forecast not in AHEAD_FORECASTS:
        raise ValueError(f"CGTaylorConfig.decide_ahead=True needs forecast in {AHEAD_FORECASTS}: a forecast step then "
                         f"runs no first block, whose output forecast={config.forecast!r} adds to its forecast")
    conflicts = {
        "compute_steps": config.compute_steps is not None,       # a forced schedule plans nothing
        "forecast_budget": config.forecast_budget is not None,   # the budget decides step by step
        "error_feedback": config.error_feedback != "none",       # feedback needs the first block at the step
        "probe_block": config.probe_block != 1,                  # blocks before a later probe would run anyway
    }
    bad = [name for name, conflicting in conflicts.items() if conflicting]
    if bad:
        raise ValueError(f"CGTaylorConfig.decide_ahead=True plans from the first block's error on computed steps and "
                         f"does not combine with {bad}: leave compute_steps and forecast_budget None, error_feedback "
                         f"'none' and probe_block 1")


def forecasts_ahead(*, error: float | None, measured_distance: int, order: int, thresholds: Sequence[float],
                    cap: int | None) -> int:
    """How many of the steps after a computed step to forecast.

    ``error``: the first block's forecast error measured at the computed step, ``measured_distance`` steps after the
    forecaster's previous refresh (None: nothing measured, so nothing planned). ``thresholds``: the threshold at each
    step that may be planned, in order; their count bounds the plan. ``cap``: forecasts in a row at most.
    """
    if error is None or measured_distance < 1:
        return 0
    limit = len(thresholds) if cap is None else min(cap, len(thresholds))
    planned = 0
    # `<` is False for a NaN error: nothing is planned
    while planned < limit and error * ((planned + 1) / measured_distance) ** (order + 1) < thresholds[planned]:
        planned += 1
    return planned
