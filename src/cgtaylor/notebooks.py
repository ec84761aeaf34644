"""Executing the project's notebooks with papermill, each run skipped when already done with the same
parameters and the same input files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from tqdm.auto import tqdm

from .io import atomic_write_text, file_digest

METADATA_KEY = "cgtaylor"


def fingerprint(paths: Iterable[str | Path], base: str | Path | None = None) -> dict[str, str]:
    """``{path: sha256}`` of the files a run reads, paths relative to ``base`` where they lie under it
    (a missing file is recorded as ``"missing"``)."""
    prints = {}
    base = Path(base).resolve() if base is not None else None
    for p in (Path(q).resolve() for q in paths):
        path = str(p.relative_to(base)) if base is not None and p.is_relative_to(base) else str(p)
        if not p.is_file():
            prints[path] = "missing"
            continue
        prints[path] = file_digest(p)
    return dict(sorted(prints.items()))


def _finished_with(path: Path, parameters: dict, inputs: dict[str, str]) -> bool:
    if not path.exists():
        return False
    try:
        metadata = json.loads(path.read_text()).get("metadata", {})
    except (OSError, json.JSONDecodeError):
        return False
    run = metadata.get("papermill", {})
    # papermill records exception None (or False) on success; a failed run never replaces the target file
    return (not run.get("exception") and run.get("parameters") == json.loads(json.dumps(parameters))
            and metadata.get(METADATA_KEY, {}).get("inputs", {}) == inputs)


def _record_inputs(path: Path, inputs: dict[str, str]) -> None:
    notebook = json.loads(path.read_text())
    notebook.setdefault("metadata", {})[METADATA_KEY] = {"inputs": inputs}
    atomic_write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", path)


def execute_notebooks(runs: list[dict], notebooks_dir: str | Path, output_dir: str | Path, *, cwd: str | Path,
                      force: bool = False, kernel_name: str = "python3") -> list[Path]:
    """Run each ``{"notebook": name, "output": name, "parameters": {...}, "inputs": [paths]}`` into ``output_dir``.

    An executed notebook whose stored parameters equal the requested ones, whose ``inputs`` files (model
    weights, tables it reads) are unchanged, and that finished without an exception is kept, so a stopped
    reproduction resumes where it stopped and a retrained model or a rebuilt table re-executes what reads it.
    """
    import papermill as pm

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for run in tqdm(runs, desc="notebooks"):
        source = Path(notebooks_dir) / run["notebook"]
        target = output_dir / run.get("output", run["notebook"])
        parameters = dict(run.get("parameters", {}))
        inputs = fingerprint(run.get("inputs", []), base=cwd)
        if not force and _finished_with(target, parameters, inputs):
            written.append(target)
            continue
        partial = target.with_name(target.stem + ".partial.ipynb")
        pm.execute_notebook(str(source), str(partial), parameters=parameters, cwd=str(cwd), kernel_name=kernel_name,
                            progress_bar=False)
        _record_inputs(partial, inputs)
        partial.replace(target)
        written.append(target)
    return written
