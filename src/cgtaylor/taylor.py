"""A Taylor ladder: finite-difference factors of one feature over the steps at which it was computed."""

from __future__ import annotations

import math
from functools import partial
from typing import Callable

import torch

from .forecast_bases import HERMITE_SCALE, bdf2_heun_weights, hermite_weight, least_squares_weights


class TaylorLadder:
    """Holds ``order + 1`` factors of one feature and forecasts it at a later step.

    ``update(feature, step)`` refreshes the factors with a freshly computed feature; ``forecast(step)``
    extrapolates. With ``formula="newton"`` factor ``i`` is the i-th divided difference over the last ``i + 1``
    refresh steps, so a ladder of order k reproduces any degree-k polynomial exactly once k+1 refreshes are in,
    whatever the spacing. With ``formula="taylorseer"`` every difference is divided by the last interval only
    and the forecast is ``sum_i F[i] (t - s)^i / i!``, as in TaylorSeer. ``formula="hermite"`` keeps TaylorSeer's
    factors and weighs them with HiCache's scaled Hermite polynomials ``scale^i H_i(scale (t - s)) / i!``.
    """

    def __init__(self, order: int, formula: str = "newton", dtype: torch.dtype | None = None, device=None,
                 hermite_scale: float = HERMITE_SCALE):
        self.order = order
        self.formula = formula
        self.hermite_scale = hermite_scale
        self.dtype = dtype
        self.device = device
        self.factors: list[torch.Tensor] = []
        self.steps: list[int] = []  # refresh steps, newest first

    @property
    def ready(self) -> bool:
        return bool(self.factors)

    @property
    def last_step(self) -> int | None:
        return self.steps[0] if self.steps else None

    @property
    def shape(self) -> torch.Size | None:
        return self.factors[0].shape if self.factors else None

    @property
    def nbytes(self) -> int:
        return sum(f.numel() * f.element_size() for f in self.factors)

    def clear(self) -> None:
        self.factors = []
        self.steps = []

    def _prepared(self, feature: torch.Tensor, step: int) -> torch.Tensor:
        """``feature`` detached, in the cache's dtype and device, once ``step`` is checked to be a new one."""
        if self.steps and step <= self.steps[0]:
            raise ValueError(f"Taylor ladder refreshed at step {step} after step {self.steps[0]}: steps must increase")
        return feature.detach().to(dtype=self.dtype or feature.dtype, device=self.device or feature.device)

    def update(self, feature: torch.Tensor, step: int) -> None:
        feature = self._prepared(feature, step)
        steps = [step] + self.steps[: self.order]
        factors = [feature]
        for i in range(min(self.order, len(self.factors))):
            span = step - (steps[i + 1] if self.formula == "newton" else steps[1])
            factors.append((factors[i] - self.factors[i]) / span)
        self.factors = factors
        self.steps = steps

    def forecast(self, step: int) -> torch.Tensor:
        if not self.factors:
            raise RuntimeError("Taylor ladder has no factors yet: refresh it before forecasting")
        result = self.factors[0]
        weight = 1.0
        for i in range(1, len(self.factors)):
            if self.formula == "newton":
                weight *= step - self.steps[i - 1]
            elif self.formula == "hermite":
                weight = hermite_weight(i, step - self.steps[0], self.hermite_scale)
            else:
                weight = (step - self.steps[0]) ** i / math.factorial(i)
            result = result + self.factors[i] * weight
        return result


WeightRule = Callable[[list, int], list]  # (refresh steps newest first, target step) -> one weight per feature


class HistoryLadder(TaylorLadder):
    """A ladder whose factors are the last ``points`` computed features themselves, newest first; the forecast
    is ``sum_j w_j feature_j`` with scalar weights from ``rule`` (:mod:`cgtaylor.forecast_bases`).

    ``minimum`` is how many refreshes the rule needs before it extrapolates; with fewer, the newest feature is
    returned as it is (as a ladder of order 0 would).
    """

    def __init__(self, points: int, rule: WeightRule, minimum: int = 1, dtype: torch.dtype | None = None,
                 device=None):
        super().__init__(points - 1, formula="history", dtype=dtype, device=device)
        self.points = points
        self.rule = rule
        self.minimum = minimum

    def update(self, feature: torch.Tensor, step: int) -> None:
        feature = self._prepared(feature, step)
        self.factors = [feature] + self.factors[: self.points - 1]
        self.steps = [step] + self.steps[: self.points - 1]

    def forecast(self, step: int) -> torch.Tensor:
        if not self.factors:
            raise RuntimeError("Taylor ladder has no factors yet: refresh it before forecasting")
        if len(self.factors) < self.minimum:
            return self.factors[0]
        weights = self.rule(self.steps, step)
        result = self.factors[0] * weights[0]
        for weight, feature in zip(weights[1:], self.factors[1:]):
            result = result + feature * weight
        return result


def make_ladder(order: int, formula: str = "newton", *, hermite_scale: float = HERMITE_SCALE,
                fit_points: int | None = None, dtype: torch.dtype | None = None, device=None) -> TaylorLadder:
    """The forecaster of one feature for a ``CGTaylorConfig.taylor_formula``: a factor ladder for ``"newton"``,
    ``"taylorseer"`` and ``"hermite"``, a :class:`HistoryLadder` of past features for ``"least_squares"`` (the
    last ``fit_points`` refreshes, default ``order + 1``) and ``"bdf2_heun"`` (``max(order, 1) + 1`` refreshes)."""
    if formula == "least_squares":
        return HistoryLadder(fit_points or order + 1, partial(least_squares_weights, degree=order),
                             dtype=dtype, device=device)
    if formula == "bdf2_heun":
        return HistoryLadder(max(order, 1) + 1, partial(bdf2_heun_weights, order=order), minimum=2,
                             dtype=dtype, device=device)
    return TaylorLadder(order, formula=formula, dtype=dtype, device=device, hermite_scale=hermite_scale)
