"""How long `scripts/reproduce_all.sh` took from nothing, step by step, and the results section that says so.

``reproduce_all.sh --verify`` recomputes every number without reading stored rows or caches, so its step times are
the cost of the profile from nothing; it records them with :func:`write_run_time` into
``results/run_time_from_nothing.json`` and :func:`run_time_section` renders them.

    python -m cgtaylor.experiments.run_time OUT.json PROFILE "step name=SECONDS" ...
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

from ..io import atomic_write_text
from .report_sources import display, missing

STEM = "run_time_from_nothing"
TITLE = "What `reproduce_all.sh` takes from nothing"


def parse_step(text: str) -> tuple[str, float]:
    name, sep, seconds = text.rpartition("=")
    try:
        value = float(seconds)
    except ValueError:
        value = -1.0
    if not sep or not name or value < 0:
        raise ValueError(f"a step must read 'name=SECONDS' with SECONDS >= 0, got {text!r}")
    return name, value


def write_run_time(path: str | Path, profile: str, steps: list[tuple[str, float]]) -> dict:
    from .comparison import machine

    if not steps:
        raise ValueError("write_run_time needs at least one step")
    record = {"profile": profile, "machine": machine(), "date": datetime.date.today().isoformat(),
              "steps": [{"name": name, "seconds": round(seconds, 1)} for name, seconds in steps],
              "total_seconds": round(sum(seconds for _, seconds in steps), 1)}
    atomic_write_text(json.dumps(record, indent=1), Path(path))
    return record


def run_time_section(results_dir: str | Path) -> str:
    results_dir = Path(results_dir)
    path = results_dir / f"{STEM}.json"
    absent = missing(TITLE, [path], results_dir)
    if absent:
        return absent + "`bash scripts/reproduce_all.sh --verify` writes it.\n"
    record = json.loads(path.read_text())
    rows = ["| step | minutes |", "|---|---|"]
    rows += [f"| {step['name']} | {step['seconds'] / 60:.1f} |" for step in record["steps"]]
    rows.append(f"| all | {record['total_seconds'] / 60:.1f} |")
    return "\n".join([
        f"## {TITLE}\n",
        f"`bash scripts/reproduce_all.sh --verify` rebuilt the `{record['profile']}` profile without reading any "
        f"stored row or cache on {record['date']} ({record['machine']}, one process per core, one torch thread each) "
        f"and recorded each step's wall-clock time in `{display(path, results_dir)}`: "
        f"{record['total_seconds'] / 60:.0f} minutes in all, the install of the environment not counted.\n",
        "\n".join(rows) + "\n"])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3:
        raise SystemExit(__doc__)
    record = write_run_time(argv[0], argv[1], [parse_step(text) for text in argv[2:]])
    print(f"{record['total_seconds'] / 60:.1f} minutes -> {argv[0]}")


if __name__ == "__main__":
    main()
