"""Results-section pages for the real-scale GPU bench (``scripts/bench_real_scale.py``), read from the CSV it
writes next to its markdown: step cost, end-to-end speedup against the ideal, peak memory, and how much the
host-bound DiT moved between runs of the same command."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .report_sources import display, missing, provenance, read_csv, span
from .tables import to_markdown

COLUMNS = ("model", "method", "steps", "full_steps", "speedup", "ideal", "of_ideal", "params", "plain_step_s",
           "full_step_s", "forecast_step_s", "c", "peak_plain", "peak_cg_taylor", "peak_taylorseer", "cache_bytes",
           "taylorseer_modules")
# (stem under results/, heading, whether the page carries the memory table)
PAGES = (("real_scale", "Real scale on a GPU", True),
         ("real_scale_dit_repeat", "Real scale on a GPU: DiT-XL/2 repeated", False),
         ("real_scale_compile_regional", "Real scale on a GPU under regional compilation", True),
         ("real_scale_compile_full", "Real scale on a GPU under full compilation", True))
TARGETS = (2.0, 3.0)
REPEATED_MODEL = "dit-xl-2-256"
UNCOMPILED = ("real_scale", "real_scale_dit_repeat")


def _number(value, spec: str) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def with_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Label each run: a run is one model's rows sharing one step-cost measurement; a model run more than once in
    a file is labelled ``model, run k``."""
    keys = frame[["model", "plain_step_s", "forecast_step_s"]].astype(str).agg("|".join, axis=1)
    order = {key: index for index, key in enumerate(dict.fromkeys(keys))}
    frame = frame.assign(_run=keys.map(order))
    labels = {}
    for model, part in frame.groupby("model", sort=False):
        runs = list(dict.fromkeys(part["_run"]))
        for k, run in enumerate(runs, 1):
            labels[run] = model if len(runs) == 1 else f"{model}, run {k}"
    return frame.assign(run=frame["_run"].map(labels)).drop(columns="_run")


def full_steps_for(speedup: float, steps: int, c: float) -> float:
    """Full steps S of N whose ideal N / (S + (N - S) c) equals ``speedup``."""
    return steps * (1 / speedup - c) / (1 - c)


def step_table(frame: pd.DataFrame) -> str:
    rows = []
    for run, part in frame.groupby("run", sort=False):
        row = part.iloc[0]
        out = {"run": run, "params (M)": f"{row['params'] / 1e6:.0f}",
               "plain step (ms)": _number(row["plain_step_s"] * 1e3, ".1f"),
               "full step (ms)": _number(row["full_step_s"] * 1e3, ".1f"),
               "forecast step (ms)": _number(row["forecast_step_s"] * 1e3, ".2f"), "c": _number(row["c"], ".3f")}
        for target in TARGETS:
            out[f"S of {row['steps']} for an ideal {target:g}x"] = \
                _number(full_steps_for(target, int(row["steps"]), row["c"]), ".1f")
        rows.append(out)
    return to_markdown(pd.DataFrame(rows).astype(str))


def speedup_table(frame: pd.DataFrame) -> str:
    forced = frame[frame["method"] != "plain"]
    rows = {}
    for _, row in forced.iterrows():
        cells = rows.setdefault(row["run"], {"run": row["run"]})
        cells[f"S = {row['full_steps']} of {row['steps']}"] = \
            f"{_number(row['speedup'], '.2f')} ({_number(row['of_ideal'], '.2f')})"
    return to_markdown(pd.DataFrame(list(rows.values())).fillna(""))


def ideal_spans(frame: pd.DataFrame) -> list[str]:
    forced = frame[frame["method"] != "plain"].dropna(subset=["of_ideal"])
    return [f"- {run}: measured / ideal {span(part['of_ideal'], '.2f')} over {len(part)} forced schedules, "
            f"largest distance from the ideal {(part['of_ideal'] - 1).abs().max():.0%}."
            for run, part in forced.groupby("run", sort=False)]


def memory_table(frame: pd.DataFrame) -> str:
    rows = []
    for run, part in frame.groupby("run", sort=False):
        row, gib = part.iloc[0], 2**30
        rows.append({"run": run, "plain (GiB)": _number(row["peak_plain"] / gib, ".2f"),
                     "CG-Taylor (GiB)": _number(row["peak_cg_taylor"] / gib, ".2f"),
                     "TaylorSeer (GiB)": _number(row["peak_taylorseer"] / gib, ".2f"),
                     "CG-Taylor adds (GiB)": _number((row["peak_cg_taylor"] - row["peak_plain"]) / gib, ".2f"),
                     "TaylorSeer adds (GiB)": _number((row["peak_taylorseer"] - row["peak_plain"]) / gib, ".2f"),
                     "CG-Taylor cache (MiB)": _number(row["cache_bytes"] / 2**20, ".3g"),
                     "TaylorSeer modules hooked": str(row["taylorseer_modules"])})
    return to_markdown(pd.DataFrame(rows).astype(str))


def load(results_dir: Path, stem: str) -> pd.DataFrame:
    return with_runs(read_csv(results_dir / f"{stem}.csv", COLUMNS))


def page(results_dir: Path, stem: str, title: str, memory: bool) -> str:
    csv, markdown = results_dir / f"{stem}.csv", results_dir / f"{stem}.md"
    absent = missing(title, [csv, markdown], results_dir)
    if absent:
        return absent
    frame = load(results_dir, stem)
    parts = [f"## {title}\n", f"From `{display(csv, results_dir)}` (written with `{display(markdown, results_dir)}`):\n",
             "\n".join(provenance(markdown)) + "\n",
             "### Step cost\n", "c = forecast step / full step; S for an ideal speedup R: N (1/R - c) / (1 - c).\n",
             step_table(frame), "### End-to-end speedup\n",
             "Cells: measured speedup (measured / ideal), one run per forced schedule of S full steps of N.\n",
             speedup_table(frame), "\n".join(ideal_spans(frame)) + "\n"]
    if memory:
        parts += ["### Peak memory\n", memory_table(frame)]
    return "\n".join(parts)


def repeat_spread(results_dir: Path, model: str = REPEATED_MODEL) -> str:
    """One model's plain step and speedups over every uncompiled run of it: how much they moved between runs."""
    frames = [load(results_dir, stem).assign(file=f"{stem}.csv") for stem in UNCOMPILED
              if (results_dir / f"{stem}.csv").exists()]
    runs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["model"])
    runs = runs[runs["model"] == model]
    if runs.empty:
        return ""
    plain = runs.groupby(["file", "run"], sort=False)["plain_step_s"].first() * 1e3
    lines = [f"### {model} across the uncompiled runs above\n",
             f"- plain step over {len(plain)} runs: " + ", ".join(f"{value:.1f}" for value in plain) + " ms"]
    forced = runs[runs["method"] != "plain"]
    for full_steps, part in forced.groupby("full_steps", sort=False):
        if len(part) > 1:
            lines.append(f"- speedup at S = {full_steps}: " + ", ".join(f"{v:.2f}" for v in part["speedup"])
                         + f" (ideal {span(part['ideal'], '.2f')})")
    return "\n".join(lines) + "\n"


def real_scale_sections(results_dir: str | Path) -> list[str]:
    """One page per bench file; the spread of the repeated model's runs follows the page of its repeats."""
    results_dir = Path(results_dir)
    sections = []
    for stem, title, memory in PAGES:
        sections.append(page(results_dir, stem, title, memory))
        if stem == UNCOMPILED[-1]:
            spread = repeat_spread(results_dir)
            sections += [spread] if spread else []
    return sections
