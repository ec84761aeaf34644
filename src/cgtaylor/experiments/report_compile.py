"""Results-section page for the torch.compile probe (``scripts/probe_compile.py``), read from the CSV it writes
next to its markdown: correctness against eager, recompiles, graphs per step, host syncs, compile time."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .report_sources import display, missing, provenance, read_csv
from .tables import to_markdown

STEM = "compile_probe"
TITLE = "torch.compile on the reduced transformers"
COLUMNS = ("model", "mode", "backend", "steps", "first compiled generation (s)", "eager generation (s)",
           "compiled generation (s)", "graphs run per computed step", "graphs run per forecast step",
           "graph breaks while tracing", "recompiles after first generation", "host syncs per computed step",
           "host syncs per forecast step", "max abs(compiled - eager)", "same decisions")


def _same(value) -> bool:
    return str(value).strip().lower() == "true"


def probe_table(frame: pd.DataFrame) -> str:
    rows = [{"model": row["model"], "mode": row["mode"], "backend": row["backend"], "steps": str(row["steps"]),
             "max abs(compiled - eager)": f"{float(row['max abs(compiled - eager)']):.1e}",
             "same decisions": "yes" if _same(row["same decisions"]) else "no",
             "recompiles after the first generation": str(row["recompiles after first generation"]),
             "graphs run per computed / forecast step":
                 f"{row['graphs run per computed step']} / {row['graphs run per forecast step']}",
             "graph breaks while tracing": str(row["graph breaks while tracing"]),
             "host syncs per computed (warm-up/after) / forecast step":
                 f"{row['host syncs per computed step']} / {row['host syncs per forecast step']}",
             "first compiled generation (s)": f"{float(row['first compiled generation (s)']):.0f}",
             "eager / compiled generation (s)":
                 f"{float(row['eager generation (s)']):.3g} / {float(row['compiled generation (s)']):.3g}"}
            for _, row in frame.iterrows()]
    return to_markdown(pd.DataFrame(rows))


def findings(frame: pd.DataFrame) -> list[str]:
    """What the table shows, counted from it."""
    cases = len(frame)
    same = sum(_same(value) for value in frame["same decisions"])
    fewer = int((frame["graphs run per forecast step"] < frame["graphs run per computed step"]).sum())
    return [f"- Same gate decisions as eager in {same} of {cases} cases; largest max abs(compiled - eager) of the "
            f"final latents {frame['max abs(compiled - eager)'].astype(float).max():.1e}.",
            f"- Recompiles after the first generation, all cases together: "
            f"{int(frame['recompiles after first generation'].sum())}.",
            f"- A forecast step runs fewer compiled graphs than a computed step in {fewer} of {cases} cases."]


def compile_section(results_dir: str | Path) -> str:
    results_dir = Path(results_dir)
    csv, markdown = results_dir / f"{STEM}.csv", results_dir / f"{STEM}.md"
    absent = missing(TITLE, [csv, markdown], results_dir)
    if absent:
        return absent
    frame = read_csv(csv, COLUMNS)
    return "\n".join([f"## {TITLE}\n",
                      f"From `{display(csv, results_dir)}` (written with `{display(markdown, results_dir)}`):\n",
                      "\n".join(provenance(markdown)) + "\n", probe_table(frame),
                      "\n".join(findings(frame)) + "\n"])
