"""Scalar weights of the forecast bases: how much each cached tensor counts in a forecast.

Every forecast here is linear in the cached features, so each basis reduces to a handful of float64 weights
computed from the refresh steps alone; the tensors are combined once with them. Steps are given newest first.

- ``hermite_weight``: HiCache (arXiv 2508.16984) replaces TaylorSeer's monomial ``x^k / k!`` by the scaled
  physicists' Hermite polynomial ``sigma^k H_k(sigma x) / k!``, with the contraction ``sigma`` damping the
  higher-order terms.
- ``least_squares_weights``: a polynomial of a given degree fitted to the last ``n >= degree + 1`` points,
  evaluated at the target (interpolation when ``n == degree + 1``).
- ``bdf2_heun_weights``: FoCa (arXiv 2508.16211), the feature sequence as an ODE in the step index: a
  variable-step BDF2 predictor, then a Heun (trapezoidal) corrector, with derivatives taken from the
  interpolant of the cached points so that uneven refresh spacing is handled exactly.
"""

from __future__ import annotations

import math

import numpy as np

HERMITE_SCALE = 0.5  # the contraction HiCache's code falls back to when none is given

def hermite_polynomial(k: int, z: float) -> float:
    """The physicists' Hermite polynomial ``H_k(z)`` (``H_0 = 1``, ``H_1 = 2z``, ``H_{k+1} = 2z H_k - 2k H_{k-1}``)."""
    previous, current = 1.0, 2.0 * z
    if k == 0:
        return previous
    for n in range(1, k):
        previous, current = current, 2.0 * z * current - 2.0 * n * previous
    return current


def hermite_weight(k: int, x: float, scale: float) -> float:
    """Weight of the k-th TaylorSeer factor at distance ``x`` from the last refresh: ``scale^k H_k(scale x) / k!``."""
    if k == 0:
        return 1.0
    return scale ** k * hermite_polynomial(k, scale * x) / math.factorial(k)


def _scaled_axis(steps, target: float) -> tuple[np.ndarray, float]:
    """Steps and target centred on the steps' mean and divided by their spread, so the fit is well conditioned."""
    points = np.asarray(steps, dtype=np.float64)
    centre = points.mean()
    spread = max(float(np.abs(points - centre).max()), 1.0)
    return (points - centre) / spread, (float(target) - centre) / spread


def least_squares_weights(steps, target: float, degree: int) -> list[float]:
    """Weights ``w`` with ``sum_j w_j y_j`` = the degree-``degree`` least-squares polynomial through
    ``(steps_j, y_j)`` evaluated at ``target``; the degree drops to ``len(steps) - 1`` while fewer points are in."""
    degree = min(degree, len(steps) - 1)
    axis, at = _scaled_axis(steps, target)
    design = np.vander(axis, degree + 1, increasing=True)  # points x (degree + 1)
    evaluation = np.vander(np.array([at]), degree + 1, increasing=True)[0]
    # the fitted coefficients are pinv(design) @ y, so the forecast is (evaluation @ pinv(design)) @ y
    return (evaluation @ np.linalg.pinv(design)).tolist()


def derivative_weights(steps, at: float) -> list[float]:
    """Weights ``w`` with ``sum_j w_j y_j`` = the derivative at ``at`` of the polynomial interpolating the points."""
    nodes = [float(s) for s in steps]
    weights = []
    for j, node in enumerate(nodes):
        total = 0.0
        for m, other in enumerate(nodes):
            if m == j:
                continue
            term = 1.0 / (node - other)
            for n, rest in enumerate(nodes):
                if n not in (j, m):
                    term *= (at - rest) / (node - rest)
            total += term
        weights.append(total)
    return weights


def bdf2_heun_weights(steps, target: float, order: int) -> list[float]:
    """FoCa's forecast at ``target`` as weights on the cached points (newest first, at least two of them).

    With the newest refresh ``y_n`` at ``t_n``, the one before ``y_p`` at ``t_p``, ``h = target - t_n`` and
    ``r = h / (t_n - t_p)``:

    - slope at the last refresh ``g_n``: derivative at ``t_n`` of the interpolant of the last ``order + 1``
      points (at least two);
    - BDF2 predictor (variable step): ``y* = ((1+r)^2 y_n - r^2 y_p + (1+r) h g_n) / (1 + 2r)``, the implicit
      BDF2 step with the unknown slope at the target replaced by ``g_n`` (``4/3 y_n - 1/3 y_p + 2/3 h g_n`` on
      an even grid);
    - slope at the target ``g*``: derivative at ``target`` of the quadratic through ``(t_p, y_p)``, ``(t_n, y_n)``,
      ``(target, y*)``;
    - Heun corrector: ``y_n + h/2 (g_n + g*)``.
    """
    if len(steps) < 2:
        raise ValueError(f"bdf2_heun needs at least two refresh steps, got {list(steps)}")
    newest, previous = float(steps[0]), float(steps[1])
    h = float(target) - newest
    if h == 0:
        return [1.0] + [0.0] * (len(steps) - 1)
    r = h / (newest - previous)
    points = min(max(order, 1) + 1, len(steps))
    slope = np.zeros(len(steps))
    slope[:points] = derivative_weights(steps[:points], newest)
    predictor = (1 + r) * h * slope / (1 + 2 * r)
    predictor[0] += (1 + r) ** 2 / (1 + 2 * r)
    predictor[1] -= r ** 2 / (1 + 2 * r)
    d_previous, d_newest, d_target = derivative_weights([previous, newest, float(target)], float(target))
    target_slope = d_target * predictor
    target_slope[0] += d_newest
    target_slope[1] += d_previous
    corrected = 0.5 * h * (slope + target_slope)
    corrected[0] += 1.0
    return corrected.tolist()
