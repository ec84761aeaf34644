"""A Taylor ladder: finite-difference factors of one feature over the steps at which it was computed."""

from __future__ import annotations

import math

import torch


class TaylorLadder:
    """Holds ``order + 1`` factors of one feature and forecasts it at a later step.

    ``update(feature, step)`` refreshes the factors with a freshly computed feature; ``forecast(step)``
    extrapolates. With ``formula="newton"`` factor ``i`` is the i-th divided difference over the last ``i + 1``
    refresh steps, so a ladder of order k reproduces any degree-k polynomial exactly once k+1 refreshes are in,
    whatever the spacing. With ``formula="taylorseer"`` every difference is divided by the last interval only
    and the forecast is ``sum_i F[i] (t - s)^i / i!``, as in TaylorSeer.
    """

    def __init__(self, order: int, formula: str = "newton", dtype: torch.dtype | None = None, device=None):
        self.order = order
        self.formula = formula
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

    def update(self, feature: torch.Tensor, step: int) -> None:
        if self.steps and step <= self.steps[0]:
            raise ValueError(f"Taylor ladder refreshed at step {step} after step {self.steps[0]}: steps must increase")
        feature = feature.detach().to(dtype=self.dtype or feature.dtype, device=self.device or feature.device)
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
            else:
                weight = (step - self.steps[0]) ** i / math.factorial(i)
            result = result + self.factors[i] * weight
        return result
