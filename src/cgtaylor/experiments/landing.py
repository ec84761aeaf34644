"""Landing a method on a target speedup, and picking its best setting there: pure functions over measurements.

``land_knob(measure, target, low, high, known=...)`` searches a continuous knob whose speedup grows with its value (a
threshold) until the measured speedup sits within ``tolerance`` of ``target``, the way the calibration does: it
brackets the target by steps of ``expand`` in log space, then interpolates in (log knob, log speedup) inside the
bracket, bisecting where interpolation stalls. The speedup of a gate is a step function of its threshold, so a
bracket can close without a point inside the tolerance; the search then stops and says so.

``pick(points, target, tolerance)`` takes the point with the best selection score among those within the
tolerance of the target, or, where none is, the nearest (flagged ``on_target=False``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Landing:
    value: float
    speedup: float
    on_target: bool
    evaluations: int
    at_bound: bool  # the search ran into the knob's range: the range may be too short


def within(speedup: float, target: float, tolerance: float) -> bool:
    return abs(speedup / target - 1.0) <= tolerance


def land_knob(measure: Callable[[float], float], target: float, low: float, high: float, *, tolerance: float = 0.04,
              max_evaluations: int = 6, start: float | None = None, known: dict[float, float] | None = None,
              expand: float = 3.0, jump: float = 0.03) -> Landing:
    """Search ``measure(value) -> speedup`` (non-decreasing in ``value``) for ``target`` within ``[low, high]``."""
    if not (0 < low < high):
        raise ValueError(f"knob range must satisfy 0 < low < high, got [{low}, {high}]")
    if target <= 0 or tolerance < 0 or max_evaluations < 1:
        raise ValueError(f"need target > 0, tolerance >= 0, max_evaluations >= 1; got {target}, {tolerance}, "
                         f"{max_evaluations}")
    seen = known if known is not None else {}  # shared with the caller: searches for several targets reuse points
    evaluations = 0

    def probe(value: float) -> float:
        nonlocal evaluations
        value = min(max(value, low), high)
        if value not in seen:
            seen[value] = measure(value)
            evaluations += 1
        return seen[value]

    def best() -> float:
        return min(seen, key=lambda v: (abs(math.log(seen[v] / target)), v))

    def landing(value: float, at_bound: bool = False) -> Landing:
        return Landing(value, seen[value], within(seen[value], target, tolerance), evaluations, at_bound)

    if not seen:
        probe(start if start is not None else math.sqrt(low * high))
    moved = []  # which end of the bracket each probe inside it replaced ("low" or "high")
    while evaluations < max_evaluations:
        if within(seen[best()], target, tolerance):
            return landing(best())
        below = [v for v in seen if seen[v] < target]
        above = [v for v in seen if seen[v] > target]
        a = max(below) if below else None
        b = min(above) if above else None
        if a is None:  # every point is too fast: lower the knob
            if min(seen) <= low:
                return landing(best(), at_bound=True)
            probe(min(seen) / expand)
            continue
        if b is None:  # every point is too slow: raise the knob
            if max(seen) >= high:
                return landing(best(), at_bound=True)
            probe(max(seen) * expand)
            continue
        if b / a < 1.0 + jump:  # the speedup jumps across the target between two nearly equal knob values
            break
        la, lb, sa, sb = math.log(a), math.log(b), math.log(seen[a]), math.log(seen[b])
        if len(moved) >= 2 and moved[-1] == moved[-2]:
            # interpolation keeps replacing the same end, as it does across a step of the speedup: bisect
            guess = (la + lb) / 2
        else:
            guess = la + (math.log(target) - sa) * (lb - la) / (sb - sa) if sb > sa else (la + lb) / 2
            margin = 0.1 * (lb - la)  # stay inside the bracket so that it keeps shrinking
            guess = min(max(guess, la + margin), lb - margin)
        moved.append("low" if probe(math.exp(guess)) < target else "high")
    return landing(best())


@dataclass(frozen=True)
class Choice:
    index: int
    on_target: bool


def pick(speedups: list[float], scores: list[float], target: float, tolerance: float) -> Choice | None:
    """Index of the best-scoring point within ``tolerance`` of ``target``, else of the nearest point."""
    if not speedups:
        return None
    inside = [i for i, s in enumerate(speedups) if within(s, target, tolerance)]
    if inside:
        return Choice(max(inside, key=lambda i: (scores[i], -abs(speedups[i] - target))), True)
    nearest = min(range(len(speedups)), key=lambda i: abs(math.log(speedups[i] / target)))
    return Choice(nearest, False)
