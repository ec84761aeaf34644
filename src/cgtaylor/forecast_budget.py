"""A forecast budget: the gate forecasts an exact share of each run's steps and still chooses which.

A gate with one threshold forecasts as many steps as its errors allow, so its speedup moves from prompt to prompt
(on dit-digits, a threshold landed at 1.93x over four images runs at 1.72x over forty). ``forecast_budget = share``
fixes the count instead: a run of ``num_steps`` steps forecasts ``round(share * num_steps)`` of them (at most every
step the gate may forecast: not the first, a warm-up or the last), whatever the prompt, so its FLOPs are known
before it starts. Within that count the first block's error still decides where the forecasts go:

- while the budget leaves a choice, the threshold is scaled by the run's pace, the share of the remaining gated steps
  the budget still needs forecast over the share it planned, to the power ``PACE_GAIN``
  (:meth:`Budget.threshold_scale`): a run behind its budget forecasts at larger errors, a run ahead of it only at
  smaller ones;
- once no forecast is left, every remaining step is computed; once the forecasts left fill every remaining gated
  step, every one of them is forecast (``max_consecutive_forecasts`` then gives way: the budget is exact).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# How hard the threshold follows the pace. At 1, a threshold set below the run's errors keeps computing until the
# budget forces all its forecasts into one block at the end of the run, where a Taylor forecast many steps out
# diverges; at 6 the forecasts spread over the run, and the fidelity at a given budget depends little on the
# threshold (on dit-digits within about 1.5 dB over a factor of 3 in threshold).
PACE_GAIN = 6.0

ACCEPTED = "None or a number in [0, 1) (the share of a run's steps that are forecast)"


def check_forecast_budget(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value < 1:
        raise ValueError(f"CGTaylorConfig.forecast_budget must be {ACCEPTED}, got {value!r}")
    return float(value)


def gated_steps(num_steps: int, warmup_steps: int) -> int:
    """How many steps of a run the gate may forecast: step 0, the warm-up and the last step are always computed."""
    return max(num_steps - 1 - max(int(warmup_steps), 1), 0)


@dataclass(frozen=True)
class Budget:
    """One run's budget: ``forecasts`` of its ``gated`` steps (those the gate may forecast) are forecast."""

    forecasts: int
    gated: int

    @classmethod
    def for_run(cls, share: float, num_steps: int, warmup_steps: int) -> "Budget":
        gated = gated_steps(num_steps, warmup_steps)
        return cls(min(int(math.floor(share * num_steps + 0.5)), gated), gated)

    def gated_left(self, step: int, num_steps: int) -> int:
        """Gated steps from ``step`` on, this one included."""
        return max(num_steps - 1 - step, 0)

    def pace(self, forecasts_done: int, step: int, num_steps: int) -> float:
        """The share of the remaining gated steps still to forecast, over the share planned for the whole run
        (1: on plan; 0: nothing left to forecast)."""
        left = self.forecasts - forecasts_done
        gated_left = self.gated_left(step, num_steps)
        if self.forecasts <= 0 or left <= 0 or gated_left <= 0:
            return 0.0
        return (left / gated_left) / (self.forecasts / self.gated)

    def threshold_scale(self, forecasts_done: int, step: int, num_steps: int) -> float:
        """What the gate's threshold is multiplied by at ``step`` while the budget leaves it a choice."""
        return self.pace(forecasts_done, step, num_steps) ** PACE_GAIN

    def forced(self, forecasts_done: int, step: int, num_steps: int) -> bool | None:
        """True: this step must be computed (nothing left to forecast); False: it must be forecast (the forecasts
        left fill every remaining gated step); None: the gate chooses."""
        left = self.forecasts - forecasts_done
        if left <= 0:
            return True
        if left >= self.gated_left(step, num_steps):
            return False
        return None
