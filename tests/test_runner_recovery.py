"""The runner treats every unreadable row or cache file as missing (recomputes it and says which file it replaced),
and two runs into one results folder compute each row once."""

from __future__ import annotations

import copy
import json
import shutil
import threading
import time

import pandas as pd
import pytest
from omegaconf import open_dict

from cgtaylor.experiments import run_table
from cgtaylor.experiments.runner import TableRunner
from cgtaylor.io import DamagedFileWarning, computed_once, file_lock, lock_path, read_json_record, read_torch_record
from test_experiments import _quick_table_cfg

ENTRIES = [{"method": "full"}, {"method": "fora", "params": {"interval": 2, "warmup_steps": 1}}]
DAMAGE = {"random bytes": b"\x8f\xff\x00\xfe" * 16, "null": b"null", "list": b"[]", "empty object": b"{}",
          "truncated": b'{"key": "fora-1", "meth'}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-row table: its config and the rows as written."""
    folder = tmp_path_factory.mktemp("table")
    cfg = _quick_table_cfg(folder, ENTRIES)
    run_table(cfg)
    return cfg, pd.read_csv(folder / "tables" / "table_dit.csv")


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_row_is_recomputed_and_named(damage, finished, tmp_path):
    cfg, table = copy.deepcopy(finished[0]), finished[1]
    shutil.copytree(cfg.results_dir, tmp_path, dirs_exist_ok=True)
    with open_dict(cfg):
        cfg.results_dir = str(tmp_path)
    runner = TableRunner(cfg)
    [row] = runner.rows_dir().glob("fora-*.json")
    row.write_bytes(DAMAGE[damage])
    runner = TableRunner(cfg)
    with pytest.warns(DamagedFileWarning, match=rf"{row.name}: .*recomputed and this file replaced"):
        frame = runner.run()
    assert runner.computed_keys == [row.stem]
    assert json.loads(row.read_text())["method"] == "fora"
    written = pd.read_csv(tmp_path / "tables" / "table_dit.csv")
    assert len(written) == len(frame) == 2 and written["method"].notna().all()
    assert written.set_index("method")["psnr"]["fora"] == pytest.approx(table.set_index("method")["psnr"]["fora"])


def test_a_damaged_reference_is_recomputed_and_named(tmp_path):
    cfg = _quick_table_cfg(tmp_path, ENTRIES[:1])
    runner = TableRunner(cfg)
    reference = runner.reference(0)
    [path] = runner.cache_dir.rglob("full-*.pt")
    path.write_bytes(path.read_bytes()[:100])  # a copy cut short
    with pytest.warns(DamagedFileWarning, match=rf"{path.name}: unreadable"):
        again = TableRunner(cfg).reference(0)
    assert again["flops"] == reference["flops"] and (again["output"] == reference["output"]).all()
    assert read_torch_record(path, ("output",)) is not None  # replaced by a readable one


@pytest.mark.filterwarnings("ignore::cgtaylor.calibrate.CalibrationWarning")  # a 5-step probe misses 1.5x
@pytest.mark.parametrize("method", ["magcache", "cg-taylor-target"])
def test_a_damaged_calibration_file_is_recomputed_and_named(method, tmp_path):
    params = {"target_speedup": 1.5, "max_cost": 4, "warmup_steps": 1} if method == "cg-taylor-target" else {}
    cfg = _quick_table_cfg(tmp_path, [{"method": method, "params": params}])
    run_table(cfg)
    [path] = TableRunner(cfg).cache_dir.rglob(f"{method}-calibration-*.json")
    first = json.loads(path.read_text())
    path.write_text('{"not": "a calibration"}')
    for row in TableRunner(cfg).rows_dir().glob("*.json"):
        row.unlink()
    with pytest.warns(DamagedFileWarning, match=rf"{path.name}: not a JSON object with the keys"):
        run_table(cfg)
    assert json.loads(path.read_text()) == first


def test_a_step_count_of_zero_names_the_profile_field(tmp_path):
    cfg = _quick_table_cfg(tmp_path, ENTRIES)
    with open_dict(cfg):
        cfg.profile.num_inference_steps = 0
    with pytest.raises(ValueError, match=r"profile.num_inference_steps must be an integer >= 1, got 0"):
        run_table(cfg)


def test_two_runs_into_one_folder_compute_each_row_once(tmp_path, monkeypatch):
    cfg = _quick_table_cfg(tmp_path, ENTRIES)
    measured = []
    measure = TableRunner.measure

    def counted(self, row, refs):
        measured.append(row["method"])
        time.sleep(0.2)  # let the other run reach the same row
        return measure(self, row, refs)

    monkeypatch.setattr(TableRunner, "measure", counted)
    runners = [TableRunner(cfg), TableRunner(cfg)]
    threads = [threading.Thread(target=r.run) for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert sorted(measured) == ["fora", "full"]
    assert sorted(runners[0].computed_keys + runners[1].computed_keys) == sorted(
        p.stem for p in runners[0].rows_dir().glob("*.json"))
    assert len(pd.read_csv(tmp_path / "tables" / "table_dit.csv")) == 2


def test_two_workers_each_measure_their_own_share_first(tmp_path, monkeypatch):
    measured = []
    measure = TableRunner.measure

    def counted(self, row, refs):
        measured.append((str(self.worker), row["method"]))
        time.sleep(1.0)  # long enough for the other worker to reach its own row
        return measure(self, row, refs)

    monkeypatch.setattr(TableRunner, "measure", counted)
    runners = []
    for worker in ("0/2", "1/2"):
        cfg = _quick_table_cfg(tmp_path, ENTRIES)
        with open_dict(cfg):
            cfg.worker = worker
        runners.append(TableRunner(cfg))
    threads = [threading.Thread(target=r.run) for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert sorted(measured) == [("0/2", "full"), ("1/2", "fora")]
    tables = [r.frame(r.rows()).drop(columns=["machine"], errors="ignore") for r in runners]
    assert len(tables[0]) == 2 and tables[0].equals(tables[1])


def test_a_waiting_run_reuses_what_the_lock_holder_wrote(tmp_path):
    path = tmp_path / "result.json"
    computed = []

    def compute():
        computed.append(True)
        return {"value": 2}

    def write(value, target):
        target.write_text(json.dumps(value))

    with file_lock(lock_path(path)):
        waiter = threading.Thread(target=lambda: computed_once(path, read_json_record, compute, write))
        waiter.start()
        time.sleep(0.3)
        assert waiter.is_alive(), "the second caller did not wait for the lock"
        write({"value": 1}, path)
    waiter.join(timeout=10)
    assert not computed and json.loads(path.read_text()) == {"value": 1}
    assert lock_path(path).name == ".result.json.lock"
