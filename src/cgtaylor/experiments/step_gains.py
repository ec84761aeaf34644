"""Which steps matter: the per-step gains that the comparison's ``step_scales: fit`` entries measured
(:func:`cgtaylor.fit_step_scales`), kept with the results and drawn.

The fits live with each table's full-compute references (``comparison/.cache/``, not committed); ``refresh`` copies
every fit found there into ``comparison/step_gains.csv`` and draws ``figures/step_gains.png``, so a results folder
keeps them after its cache is gone, and ``step_gains_section`` reads the CSV.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from ..io import atomic_write_csv, read_json_record
from .tables import to_markdown

COLUMNS = ["model", "steps", "form", "conditions", "step", "output_error", "first_block_error", "gain", "scale"]


def collect_fits(results_dir: str | Path) -> pd.DataFrame:
    """One row per step of every fit under ``<results_dir>/comparison/.cache/<model>-<workload>/``."""
    rows = []
    for path in sorted(Path(results_dir, "comparison", ".cache").glob("*/step-scales-*.json")):
        fit = read_json_record(path, ("step_scales", "steps", "form"))
        if fit is None:
            continue
        model = path.parent.name.rsplit("-", 1)[0]
        form = json.dumps(fit["form"], sort_keys=True)
        for step in fit["steps"]:
            rows.append({"model": model, "steps": int(fit["num_inference_steps"]), "form": form,
                         "conditions": fit.get("conditions"), **{k: step[k] for k in COLUMNS[4:]}})
    return _numeric(pd.DataFrame(rows, columns=COLUMNS))


def _numeric(frame: pd.DataFrame) -> pd.DataFrame:
    numbers = ["steps", "step", "output_error", "first_block_error", "gain", "scale"]
    return frame.assign(**{c: pd.to_numeric(frame[c]) for c in numbers})


def refresh(results_dir: str | Path) -> pd.DataFrame:
    """Copy the fits in the cache into ``comparison/step_gains.csv`` and draw them (fits already in the CSV and no
    longer in the cache are kept); returns the CSV's rows."""
    results_dir = Path(results_dir)
    path = results_dir / "comparison" / "step_gains.csv"
    stored = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=COLUMNS)
    found = collect_fits(results_dir)
    if found.empty:
        return _numeric(stored)
    keys = ["model", "steps", "form"]
    kept = stored.merge(found[keys].drop_duplicates(), on=keys, how="left", indicator=True)
    merged = pd.concat([kept[kept["_merge"] == "left_only"].drop(columns="_merge"), found], ignore_index=True)
    merged = _numeric(merged).sort_values(keys + ["step"], kind="stable").reset_index(drop=True)
    atomic_write_csv(merged, path)
    draw(merged, results_dir / "figures" / "step_gains.png")
    return merged


def _form_label(form: str) -> str:
    values = json.loads(form)
    return f"{values.get('forecast', 'residual')}/{values.get('taylor_formula', 'newton')}"


def draw(frame: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(frame["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(max(6.5, 5 * len(models)), 3.8), squeeze=False)
    for ax, model in zip(axes[0], models):
        for (steps, form), part in frame[frame["model"] == model].groupby(["steps", "form"], sort=False):
            part = part.dropna(subset=["gain"])
            ax.plot(part["step"], part["gain"], marker=".", label=f"{steps} steps, {_form_label(form)}")
        ax.set_yscale("log")
        ax.set_title(model)
        ax.set_xlabel("sampling step (index)")
        ax.set_ylabel("gain: output rel. L2 error / first-block error")
        ax.legend(fontsize=7)
    fig.suptitle("What a forecast at each step costs the output, per unit of the gate's error", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per fit: the three steps with the largest gain, the spread of the gains, and the last step's gain against
    the median (above 1: forecasting the last step costs more than a typical step)."""
    rows = []
    for (model, steps, form), part in frame.groupby(["model", "steps", "form"], sort=False):
        part = part.dropna(subset=["gain"])
        if part.empty:
            continue
        median = float(part["gain"].median())
        top = part.nlargest(3, "gain")
        last = part[part["step"] == steps - 1]["gain"]
        rows.append({"model": model, "steps": steps, "forecaster": _form_label(form),
                     "largest gains (step: x median)": ", ".join(f"{int(r.step)}: {r.gain / median:.1f}"
                                                                  for r in top.itertuples()),
                     "largest / smallest": round(float(part["gain"].max() / part["gain"].min()), 1),
                     "last step / median": round(float(last.iloc[0]) / median, 2) if len(last) else math.nan})
    return pd.DataFrame(rows)


def step_gains_section(results_dir: str | Path) -> list[str]:
    frame = refresh(results_dir)
    if frame.empty:
        return []
    return ["\n### Which steps matter (the fitted step scales)\n",
            "The `cg-taylor-step-scales` entries fit, per model, step count and forecaster, each step's gain: the "
            "output's relative L2 error when that step alone is forecast, over the first block's error there "
            "(`cgtaylor.fit_step_scales`, on two calibration conditions). Per-step values: "
            "`comparison/step_gains.csv`; figure: `figures/step_gains.png`.\n",
            to_markdown(summary(frame)), "\n![step gains](figures/step_gains.png)\n"]
