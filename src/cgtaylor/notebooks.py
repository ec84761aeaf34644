"""Executing the project's notebooks with papermill, each run skipped when already done with the same parameters."""

from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm


def _finished_with(path: Path, parameters: dict) -> bool:
    if not path.exists():
        return False
    try:
        metadata = json.loads(path.read_text()).get("metadata", {}).get("papermill", {})
    except (OSError, json.JSONDecodeError):
        return False
    # papermill records exception None (or False) on success; a failed run never replaces the target file
    return not metadata.get("exception") and metadata.get("parameters") == json.loads(json.dumps(parameters))


def execute_notebooks(runs: list[dict], notebooks_dir: str | Path, output_dir: str | Path, *, cwd: str | Path,
                      force: bool = False, kernel_name: str = "python3") -> list[Path]:
    """Run each ``{"notebook": name, "output": name, "parameters": {...}}`` into ``output_dir``.

    An executed notebook whose stored parameters equal the requested ones and that finished without an
    exception is kept, so a stopped reproduction resumes where it stopped.
    """
    import papermill as pm

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for run in tqdm(runs, desc="notebooks"):
        source = Path(notebooks_dir) / run["notebook"]
        target = output_dir / run.get("output", run["notebook"])
        parameters = dict(run.get("parameters", {}))
        if not force and _finished_with(target, parameters):
            written.append(target)
            continue
        partial = target.with_name(target.stem + ".partial.ipynb")
        pm.execute_notebook(str(source), str(partial), parameters=parameters, cwd=str(cwd), kernel_name=kernel_name,
                            progress_bar=False)
        partial.replace(target)
        written.append(target)
    return written
