"""The equal-footing protocol: each method landed on each target speedup on a selection set, then tested.

For one model and step count, every entry (a method with fixed parameters, e.g. TaylorSeer in lite mode) is set up
the same way:

1. Its discrete parameters are enumerated: the registry's grid for the method (interval, order, ...) and the model's
   ``warmup_grid`` for its warm-up parameter, one list shared by every method that has a warm-up.
2. For each discrete combination, a method with a continuous knob (a threshold, or the parameter the entry names as
   its ``knob``, e.g. CG-Taylor's ``forecast_budget``) has that knob searched on the selection set until the FLOPs
   speedup lands within ``tolerance`` of each target (:func:`.landing.land_knob`); a method without one contributes
   its combinations as they are.
3. At each target, the point with the best mean selection PSNR among those within the tolerance is chosen
   (:func:`.landing.pick`); where none is, the nearest, flagged off-target. A choice at the top of a discrete grid
   extends that grid by one value, by the same rule for every method; the shared warm-up grid grows again while the
   choice stays on its top, up to ``GRID_EXTENSIONS`` times (a method's own grids, order or interval, grow once, as
   each extension multiplies the combinations); a top still chosen after that is reported as an edge (the bottom
   ends, interval 2 or the shortest warm-up, are natural bounds).
4. The chosen setting is run once on the disjoint test set; its per-sample scores are the reported numbers.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field

from .evaluation import SettingEvaluator
from .landing import land_knob, pick, within
from .registry import knob_of, spec
from .sample_sets import SampleSet


@dataclass
class Entry:
    """A row group of the comparison: ``method`` with fixed ``params`` and its own grid (else the registry's)."""

    group: str
    method: str
    params: dict = field(default_factory=dict)
    grid: dict | None = None
    caveat: str = ""  # why this entry's numbers cannot carry a verdict (e.g. a peer implementation known to be off)
    role: str = "peer"  # "variant": a setting of CG-Taylor itself (an ablation row), not a peer to be beaten
    knob: str | None = None  # the parameter landed on the targets (None: the method's knob, a threshold)

    # `skip_if`, `models` and `preset` are read where the entries for one model are chosen (comparison.model_entries)
    FIELDS = ("group", "method", "params", "grid", "caveat", "skip_if", "role", "models", "knob", "preset")
    ROLES = ("peer", "variant")

    @classmethod
    def from_dict(cls, values: dict) -> "Entry":
        unknown = sorted(set(values) - set(cls.FIELDS))
        if unknown:
            raise ValueError(f"comparison entry has unknown field(s) {unknown}; accepted: {list(cls.FIELDS)}")
        if "method" not in values:
            raise ValueError(f"comparison entry needs a `method`, got {values}")
        spec(values["method"])
        role = values.get("role", "peer")
        if role not in cls.ROLES:
            raise ValueError(f"comparison entry {values.get('group', values['method'])!r}: role must be one of "
                             f"{list(cls.ROLES)}, got {role!r}")
        knob = values.get("knob")
        try:
            knob_of(values["method"], knob)
        except ValueError as error:
            raise ValueError(f"comparison entry {values.get('group', values['method'])!r}: {error}") from None
        return cls(values.get("group", values["method"]), values["method"], dict(values.get("params") or {}),
                   None if values.get("grid") is None else {k: list(v) for k, v in values["grid"].items()},
                   str(values.get("caveat") or ""), role, knob)


@dataclass
class Point:
    params: dict
    speedup: float
    psnr: float


@dataclass
class Selection:
    target: float
    params: dict
    speedup: float
    psnr: float
    on_target: bool
    edges: list[str]
    evaluations: int
    near_miss: Point | None = None  # a better-scoring setting just outside the tolerance (within twice it)


def _mean(values) -> float:
    return float(sum(values) / len(values))


# Raised whenever a change to the protocol can change what a table holds; each table row records the revision it was
# computed under, and the results section names tables from an older one. 2: the warm-up grid grows up to
# GRID_EXTENSIONS times (was once), and the landing bisects across a step of the speedup (was interpolation only).
# 3: a method's own grid grows once in whichever round its top is first chosen (was: only after the first round).
PROTOCOL_REVISION = 3
GRID_EXTENSIONS = 3  # a warm-up grid of [3, 6, 9] may reach 18: past that, warm-up is most of a 2x run's full steps


def extend_grid(values: list, chosen) -> list:
    """One more value past the end of an integer grid that ``chosen`` sits on (the spacing of the last two)."""
    ordered = sorted(values)
    if len(ordered) < 2 or chosen != ordered[-1]:
        return ordered
    return ordered + [ordered[-1] + (ordered[-1] - ordered[-2])]


class EntrySearch:
    """Steps 1-3 of the protocol for one entry on one selection set."""

    def __init__(self, entry: Entry, base: dict, warmup_grid: list[int], evaluator: SettingEvaluator,
                 selection: SampleSet, targets: list[float], tolerance: float, max_evaluations: int):
        self.entry = entry
        self.spec = spec(entry.method)
        self.base = dict(base)
        self.evaluator = evaluator
        self.selection = selection
        self.targets = [float(t) for t in targets]
        self.tolerance = float(tolerance)
        self.max_evaluations = int(max_evaluations)
        self.knob, self.knob_range = knob_of(entry.method, entry.knob)
        self.grid = {k: list(v) for k, v in (entry.grid if entry.grid is not None else self.spec.grid).items()}
        if self.spec.warmup and self.spec.warmup not in self.base:
            self.grid[self.spec.warmup] = [int(w) for w in warmup_grid]
        self.fixed = set()  # parameters whose grid is the targets themselves: never extended
        if self.spec.lands_on is not None:
            self.grid[self.spec.lands_on] = list(self.targets)
            self.fixed.add(self.spec.lands_on)
        self.points: dict[str, Point] = {}
        self.at_bound: dict[float, str] = {}
        self.evaluations = 0
        self.landed: dict[float, float] = {}

    def _measure(self, params: dict) -> Point:
        key = json.dumps(params, sort_keys=True, default=str)
        if key not in self.points:
            result = self.evaluator.evaluate(self.entry.method, params, self.selection)
            self.points[key] = Point(params, float(result["speedup"]), _mean(result["psnr"]))
            self.evaluations += 1
        return self.points[key]

    def _combinations(self, grid: dict) -> list[dict]:
        keys = list(grid)
        return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]

    def _explore(self, combination: dict) -> None:
        params = dict(self.base, **combination)
        knob = self.knob
        if knob is None or knob in self.base:
            self._measure(params)
            return
        low, high = self.knob_range
        known: dict[float, float] = {}
        for target in self.targets:
            landing = land_knob(lambda v: self._measure(dict(params, **{knob: v})).speedup, target, low, high,
                                tolerance=self.tolerance, max_evaluations=self.max_evaluations, known=known,
                                start=self.landed.get(target))
            self.landed.setdefault(target, landing.value)  # where the next combination starts its search
            if landing.at_bound:
                self.at_bound[target] = f"{knob} search reached the end of its range [{low:g}, {high:g}]"

    def run(self) -> list[Selection]:
        explored: set[str] = set()
        grown: set[str] = set()  # the method's own grids that grew already
        grid = dict(self.grid)
        for _ in range(1 + GRID_EXTENSIONS):  # the grid as given, then extended while a choice sits on a top
            for combination in self._combinations(grid):
                marker = json.dumps(combination, sort_keys=True)
                if marker not in explored:
                    explored.add(marker)
                    self._explore(combination)
            selections = self._select(grid)
            # a method's own grids (order, interval, cap) grow once, in whichever round their top is first chosen; the
            # shared warm-up grid up to GRID_EXTENSIONS times
            growing = [k for k in grid if k == self.spec.warmup or k not in grown]
            extended = {k: extend_grid(grid[k], s.params.get(k)) for k in growing for s in selections
                        if len(grid[k]) >= 2 and k not in self.fixed and s.params.get(k) == max(grid[k])}
            if not extended:
                break
            grown |= set(extended) - {self.spec.warmup}
            grid = {k: sorted(set(grid[k]) | set(extended.get(k, []))) for k in grid}
        self.grid = grid
        return selections

    def _select(self, grid: dict) -> list[Selection]:
        points = list(self.points.values())
        selections = []
        for target in self.targets:
            choice = pick([p.speedup for p in points], [p.psnr for p in points], target, self.tolerance)
            point = points[choice.index]
            edges = [f"{k}={point.params.get(k)} at the top of {sorted(v)}" for k, v in grid.items()
                     if len(v) >= 2 and k not in self.fixed and point.params.get(k) == max(v)]
            edges += [self.at_bound[target]] if target in self.at_bound else []
            selections.append(Selection(target, point.params, point.speedup, point.psnr, choice.on_target, edges,
                                        self.evaluations, self._near_miss(points, point, target)))
        return selections

    def _near_miss(self, points: list[Point], chosen: Point, target: float) -> Point | None:
        """The best setting that scored above the chosen one on selection while missing the tolerance by less than
        the tolerance again: where a discrete grid cannot land closer (an interval of 2 runs at 1.92x), it shows
        what the tolerance's edge cost the method."""
        near = [p for p in points if p.psnr > chosen.psnr and not within(p.speedup, target, self.tolerance)
                and within(p.speedup, target, 2 * self.tolerance)]
        return max(near, key=lambda p: p.psnr) if near else None
