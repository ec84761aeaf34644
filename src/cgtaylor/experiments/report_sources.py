"""Reading the files other benches wrote under ``results/`` for the results section: which machine and command
produced each one (as the file states it), and the line that stands in for a section whose file is absent."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

PROVENANCE_KEYS = ("Device", "Machine", "Command", "Date")


def provenance(markdown: Path) -> list[str]:
    """The file's own ``- Device:``, ``- Machine:``, ``- Command:`` and ``- Date:`` bullets, verbatim."""
    pattern = re.compile(r"^- (%s):" % "|".join(PROVENANCE_KEYS))
    return [line for line in markdown.read_text().splitlines() if pattern.match(line)]


def title_command(markdown: Path) -> str | None:
    """The script named in backticks in the file's title (``# ... (`scripts/x.py`)``), or None."""
    lines = markdown.read_text().splitlines()
    match = re.search(r"`(scripts/[\w./-]+\.py)`", lines[0]) if lines else None
    return match.group(1) if match else None


def missing(title: str, paths: list[Path], results_dir: Path) -> str | None:
    """``None`` when every file exists; else the section's heading and a line naming the absent files."""
    absent = [path for path in paths if not path.exists()]
    if not absent:
        return None
    names = ", ".join(f"`{display(path, results_dir)}`" for path in absent)
    verb = "is" if len(absent) == 1 else "are"
    return f"## {title}\n\nNot in this folder: {names} {verb} missing, so this section is left out.\n"


def display(path: Path, results_dir: Path) -> str:
    """A path as the README names it: ``results/<name>`` for files in the results folder."""
    try:
        return f"results/{path.relative_to(results_dir).as_posix()}"
    except ValueError:
        return str(path)


def read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.read_csv(path)
    absent = [column for column in required if column not in frame.columns]
    if absent:
        raise ValueError(f"{path}: missing column(s) {', '.join(absent)}; the file's writer gives {list(frame.columns)}")
    return frame


def span(values, spec: str, unit: str = "") -> str:
    """``"a"`` when all values round alike, else ``"lowest-highest"``, each formatted with ``spec``."""
    low, high = format(min(values), spec), format(max(values), spec)
    return f"{low}{unit}" if low == high else f"{low}-{high}{unit}"
