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


def estimated_seconds(cost: dict) -> float | None:
    """The table's cost with its untimed evaluations estimated; None where a set has no timed evaluation to estimate
    from (or the file predates the per-set counts)."""
    by_set = cost.get("by_set")
    if by_set is None:
        return None if cost["evaluations"] > cost["timed_evaluations"] else cost["evaluation_seconds"] + cost["reference_seconds"]
    total = cost["reference_seconds"]
    for counts in by_set.values():
        untimed = counts["evaluations"] - counts["timed_evaluations"]
        if untimed and not counts["timed_evaluations"]:
            return None
        mean = counts["evaluation_seconds"] / counts["timed_evaluations"] if counts["timed_evaluations"] else 0.0
        total += counts["evaluation_seconds"] + untimed * mean
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
