"""What the comparison costs from nothing: each table's recorded seconds, and an estimate for the evaluations that
were computed before evaluations recorded their time.

A table's ``<stem>.cost.json`` (:meth:`.evaluation.SettingEvaluator.cost`) counts its evaluations per sample set; an
untimed evaluation is estimated at the mean of the same table's timed evaluations of the same set (a test evaluation
runs every test batch, a selection evaluation one batch, so the two are never averaged together).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..io import read_json_record

COLUMNS = ["model", "steps", "evaluations", "untimed", "measured_cpu_min", "estimated_cpu_min"]


def set_seconds(cost: dict, name: str) -> float | None:
    """The seconds one sample set's evaluations take from nothing (untimed ones at the mean of the timed ones); None
    where the set has no timed evaluation to estimate from, or the file predates the per-set counts."""
    counts = (cost.get("by_set") or {}).get(name)
    if counts is None or not counts["timed_evaluations"]:
        return None
    mean = counts["evaluation_seconds"] / counts["timed_evaluations"]
    return counts["evaluation_seconds"] + (counts["evaluations"] - counts["timed_evaluations"]) * mean


def estimated_seconds(cost: dict) -> float | None:
    """The table's cost with its untimed evaluations estimated; None where a set has no timed evaluation to estimate
    from (or the file predates the per-set counts)."""
    by_set = cost.get("by_set")
    if by_set is None:
        return None if cost["evaluations"] > cost["timed_evaluations"] else cost["evaluation_seconds"] + cost["reference_seconds"]
    total = cost["reference_seconds"]
    for name, counts in by_set.items():
        seconds = set_seconds(cost, name) if counts["evaluations"] else 0.0
        if seconds is None:
            return None
        total += seconds
    return total


def cost_table(results_dir: str | Path, tables: list[tuple[str, int]]) -> pd.DataFrame:
    """One row per (model, steps) table with a cost file: its evaluations, how many are untimed, the measured
    CPU-minutes and the estimate from nothing; a last row sums them (the estimate only where every table has one)."""
    rows = []
    for model, steps in tables:
        cost = read_json_record(Path(results_dir) / "comparison" / f"{model}-{steps}steps.cost.json",
                                ("evaluations", "evaluation_seconds"))
        if cost is None:
            continue
        estimate = estimated_seconds(cost)
        rows.append({"model": model, "steps": steps, "evaluations": cost["evaluations"],
                     "untimed": cost["evaluations"] - cost["timed_evaluations"],
                     "measured_cpu_min": round((cost["evaluation_seconds"] + cost["reference_seconds"]) / 60, 1),
                     "estimated_cpu_min": None if estimate is None else round(estimate / 60, 1)})
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    estimates = frame["estimated_cpu_min"]
    total = {"model": "all", "steps": "", "evaluations": int(frame["evaluations"].sum()),
             "untimed": int(frame["untimed"].sum()), "measured_cpu_min": round(frame["measured_cpu_min"].sum(), 1),
             "estimated_cpu_min": None if estimates.isna().any() else round(estimates.sum(), 1)}
    return pd.concat([frame, pd.DataFrame([total])], ignore_index=True)


SIZE_COLUMNS = ["model", "steps", "n_test", "n_test_for_goal", "test_cpu_min", "test_cpu_min_at_goal", "added_cpu_min"]


def test_set_cost(results_dir: str | Path, needed: pd.DataFrame) -> pd.DataFrame:
    """What a test set of the size each table needs would cost: ``needed`` has one row per (model, steps, target)
    with ``n_test`` and the size wanted (``n_test_for_1_db``); a table's test set serves both targets, so it needs
    the larger. A test evaluation runs every test sample, so its cost grows in proportion to the set."""
    rows = []
    for (model, steps), part in needed.groupby(["model", "steps"], sort=False):
        cost = read_json_record(Path(results_dir) / "comparison" / f"{model}-{steps}steps.cost.json",
                                ("evaluations", "evaluation_seconds"))
        seconds = None if cost is None else set_seconds(cost, "test")
        if seconds is None:
            continue
        n_test, wanted = int(part["n_test"].max()), int(part["n_test_for_1_db"].max())
        at_goal = seconds * wanted / n_test
        rows.append({"model": model, "steps": steps, "n_test": n_test, "n_test_for_goal": wanted,
                     "test_cpu_min": round(seconds / 60, 1), "test_cpu_min_at_goal": round(at_goal / 60, 1),
                     "added_cpu_min": round((at_goal - seconds) / 60, 1)})
    return pd.DataFrame(rows, columns=SIZE_COLUMNS)
