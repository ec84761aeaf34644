"""How far each method's speedup moved between the selection set and the test set.

A setting is chosen where its selection speedup sits on the target; on the test set an adaptive method (a gate, a
cache with a threshold) skips a different number of steps, and a cell whose test speedup leaves the tolerance carries
no verdict. ``speed_drift(df)`` counts, per comparison group over every model, step count and target, the cells that
landed on selection and how many of them left the tolerance on test, with the largest and the median relative change.
"""

from __future__ import annotations

import pandas as pd

from .variants import roles

COLUMNS = ["group", "role", "cells", "left_tolerance", "largest_drift_pct", "median_drift_pct"]


def speed_drift(df: pd.DataFrame) -> pd.DataFrame:
    """One row per group: its cells on target at selection, how many left the tolerance on test, and the largest and
    median |test speedup / selection speedup - 1| in percent; the groups that drift most first."""
    landed = df[df["on_target"].astype(bool)].assign(role=roles(df))
    if landed.empty:
        return pd.DataFrame(columns=COLUMNS)
    drift = (landed["test_speedup"] / landed["selection_speedup"] - 1.0).abs()
    off = ((landed["test_speedup"] / landed["target"] - 1.0).abs() > landed["tolerance"] + 1e-12)
    frame = landed.assign(drift=drift * 100, off=off)
    table = frame.groupby(["group", "role"], sort=False).agg(
        cells=("drift", "size"), left_tolerance=("off", "sum"), largest_drift_pct=("drift", "max"),
        median_drift_pct=("drift", "median")).reset_index()
    table[["largest_drift_pct", "median_drift_pct"]] = table[["largest_drift_pct", "median_drift_pct"]].round(1)
    return table.sort_values(["largest_drift_pct", "group"], ascending=[False, True]).reset_index(drop=True)[COLUMNS]
