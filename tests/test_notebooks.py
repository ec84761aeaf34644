"""Every notebook executes through papermill in the quick profile."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cgtaylor.notebooks import execute_notebooks

ROOT = Path(__file__).resolve().parents[1]
QUICK_RUNS = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "notebooks" / "quick.yaml"))["runs"]
NEEDS_TABLES = {"02_speed_quality_tables.ipynb", "04_ablations.ipynb"}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A scratch results folder holding copies of the committed experiment tables (notebooks 02 and 04 read them)."""
    folder = tmp_path_factory.mktemp("results")
    shutil.copytree(ROOT / "results" / "tables", folder / "tables", ignore=shutil.ignore_patterns("rows", ".cache"))
    return folder


@pytest.mark.parametrize("run", QUICK_RUNS, ids=[r.get("output", r["notebook"]) for r in QUICK_RUNS])
def test_notebook_executes_and_writes_its_figures(run, results):
    run = {**run, "parameters": {**run.get("parameters", {}), "results_dir": str(results)}}
    before = set((results / "figures").glob("*.png")) if (results / "figures").exists() else set()
    [executed] = execute_notebooks([run], ROOT / "notebooks", results / "notebooks", cwd=ROOT)
    metadata = json.loads(executed.read_text())["metadata"]["papermill"]
    assert not metadata["exception"]
    assert set((results / "figures").glob("*.png")) - before, "the notebook wrote no figure"


def test_finished_notebook_is_not_executed_again(results, monkeypatch):
    run = {**QUICK_RUNS[1], "parameters": {**QUICK_RUNS[1].get("parameters", {}), "results_dir": str(results)}}
    execute_notebooks([run], ROOT / "notebooks", results / "notebooks", cwd=ROOT)
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("executed a finished notebook"))
    execute_notebooks([run], ROOT / "notebooks", results / "notebooks", cwd=ROOT)
    changed = {**run, "parameters": {**run["parameters"], "speedups": [2.5]}}
    with pytest.raises(pytest.fail.Exception):
        execute_notebooks([changed], ROOT / "notebooks", results / "notebooks", cwd=ROOT)


def test_changed_input_file_executes_the_notebook_again(results, tmp_path, monkeypatch):
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"first")
    run = {**QUICK_RUNS[1], "parameters": {**QUICK_RUNS[1].get("parameters", {}), "results_dir": str(results)},
           "output": "inputs_check.ipynb", "inputs": [weights]}
    [executed] = execute_notebooks([run], ROOT / "notebooks", results / "notebooks", cwd=ROOT)
    recorded = json.loads(executed.read_text())["metadata"]["cgtaylor"]["inputs"]
    assert recorded == {str(weights.resolve()): hashlib.sha256(b"first").hexdigest()}
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("executed a finished notebook"))
    execute_notebooks([run], ROOT / "notebooks", results / "notebooks", cwd=ROOT)
    weights.write_bytes(b"retrained")
    with pytest.raises(pytest.fail.Exception):
        execute_notebooks([run], ROOT / "notebooks", results / "notebooks", cwd=ROOT)
