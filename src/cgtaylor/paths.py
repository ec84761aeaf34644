"""Where results go: the repository's results/ when run from a checkout, else ./results."""

from __future__ import annotations

from pathlib import Path


def results_dir(explicit: str | Path | None = None) -> Path:
    if explicit:
        return Path(explicit)
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").exists() and (folder / "src" / "cgtaylor").is_dir():
            return folder / "results"
    return here / "results"
