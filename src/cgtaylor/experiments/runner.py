"""Running one table: rows of (method, setting) on one model, measured against ``full``.

``run_table(cfg) -> pandas.DataFrame`` takes a composed Hydra config (``conf/config.yaml``) and:

1. loads the model (:func:`.models.load_model`) and the profile's workload (conditions x seeds x steps);
2. computes (or reads from ``<cache_dir>``) the full-compute reference of each seed: output and FLOPs;
3. expands the table's entries into rows (:mod:`.rows`: method defaults <- model-specific patterns <- entry params
   <- sweep point);
4. measures each row not already finished (:mod:`.measure`: FLOPs, full steps, cache memory, fidelity, interleaved
   wall time);
5. writes each finished row atomically (:mod:`.persistence`: ``<results_dir>/tables/rows/<table>/<workload>/<key>.json``)
   and rebuilds ``<results_dir>/tables/<table>.csv`` and ``.md``. A killed run restarts where it stopped.

A row whose FLOPs are not below ``full``'s has ``valid = False`` (and a ``note``); summaries skip it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from ..checks import positive_int
from .keys import digest, json_default, weights_stamp
from .measure import RowMeasurement
from .models import _plain, load_model
from .persistence import RowStore, cached_reference, ensure_ignored
from .rows import expand_rows, row_key
from .tables import write_table
from .workers import Worker


# Model config fields that do not change what a table measures: the method parameters enter each row's own key, and
# the warm-up grid is the comparison's (the committed tables were measured before it was added to the model configs).
NOT_WORKLOAD = ("method_params", "warmup_grid")


class TableRunner:
    def __init__(self, cfg):
        self.cfg = _plain(cfg)
        self.table = self.cfg["table"]
        self.model_cfg = self.cfg["model"]
        self.profile = dict(self.cfg["profile"])
        # a table may lighten a profile for an expensive model (e.g. fewer videos for Wan)
        self.profile.update((self.table.get("profile_overrides") or {}).get(self.profile.get("name"), {}) or {})
        self.only_method = self.cfg.get("method")
        self.results_dir = Path(self.cfg.get("results_dir", "results"))
        self.tables_dir = self.results_dir / "tables"
        self.cache_dir = Path(self.cfg.get("cache_dir") or self.tables_dir / ".cache")
        self.progress = bool(self.cfg.get("progress", True))
        steps_from = "profile" if self.profile.get("num_inference_steps") is not None else "model"
        steps = (self.profile if steps_from == "profile" else self.model_cfg).get("num_inference_steps", 50)
        self.steps = positive_int(f"{steps_from}.num_inference_steps", steps)
        self.seeds = [int(s) for s in self.profile.get("seeds", [0])]
        self.num_conditions = int(self.profile.get("num_conditions", 8))
        self.repeats = int(self.profile.get("wallclock_repeats", 2))
        self.evaluate = bool(self.profile.get("evaluate", True))
        self.worker = Worker.parse(self.cfg.get("worker"))  # several processes on one table: own share of rows first
        self._model = None
        self._workload = None

    # --- workload -----------------------------------------------------------------------------------------------------
    @property
    def model(self):
        if self._model is None:
            if self.cfg.get("threads"):
                torch.set_num_threads(int(self.cfg["threads"]))
            _ = self.workload  # stamp the weights before reading them
            self.worker.bind_device()
            self._model = load_model(self.model_cfg)
        return self._model

    @property
    def workload(self) -> dict:
        if self._workload is None:  # fixed for the run, even if the weights file changes under it
            identity = {k: v for k, v in self.model_cfg.items() if k not in NOT_WORKLOAD}
            self._workload = {"model": identity, "conditions": self.num_conditions, "seeds": self.seeds,
                              "steps": self.steps, "weights": weights_stamp(self.model_cfg)}
        return self._workload

    @property
    def workload_id(self) -> str:
        return f"{self.profile.get('name', 'custom')}-{digest(self.workload, 10)}"

    def calibration_file(self, method: str) -> Path:
        """Where a calibrated method (MagCache, TeaCache, CG-Taylor with a target) keeps what it fitted on this
        model: keyed by the model, its weights and the step count, so retrained weights are calibrated afresh."""
        key = digest({"model": self.workload["model"], "weights": self.workload["weights"], "steps": self.steps}, 10)
        return self.cache_dir / self.model_cfg["name"] / f"{method}-calibration-{self.steps}-{key}.json"

    def measurement(self) -> RowMeasurement:
        return RowMeasurement(self.model, self.num_conditions, self.seeds, self.steps, self.repeats, self.evaluate,
                              int(self.profile.get("calibration_conditions", 4)))

    def conditions(self):
        return self.model.default_conditions(self.num_conditions, seed=0)

    def reference(self, seed: int) -> dict:
        path = self.cache_dir / self.model_cfg["name"] / f"full-{digest(self.workload, 10)}-seed{seed}.pt"
        ensure_ignored(self.cache_dir)
        return cached_reference(path, lambda: self.measurement().full_reference(seed))

    # --- rows ---------------------------------------------------------------------------------------------------------
    def rows(self) -> list[dict]:
        return expand_rows(self.table, self.model_cfg, self.profile, self.only_method)

    def rows_dir(self) -> Path:
        return self.tables_dir / "rows" / self.table["name"] / self.workload_id

    def finished(self) -> dict[str, dict]:
        return RowStore(self.rows_dir()).finished()

    def run(self) -> pd.DataFrame:
        from tqdm.auto import tqdm

        rows = self.rows()
        done = self.finished()
        todo = [rows[i] for i in self.worker.order(len(rows)) if row_key(rows[i]) not in done]
        computed = []
        if todo:
            self.model(self.conditions()[:1], num_inference_steps=2, seed=0)  # the first call is many times slower
            refs = [self.reference(seed) for seed in self.seeds]
            store = RowStore(self.rows_dir())
            same = {(r["method"], r["params"]): r for r in done.values()}  # one measurement per method+params
            bar = tqdm(todo, desc=f"{self.table['name']} ({self.model_cfg['name']})", disable=not self.progress,
                       mininterval=2, dynamic_ncols=True)
            for row in bar:
                bar.set_postfix_str(f"{row['method']} {row['setting']}"[:60])
                if store.write_once(row_key(row), lambda: self._result(row, refs, same)):
                    computed.append(row_key(row))
                    self.write(rows)
        self.computed_keys = computed
        return self.write(rows)

    def _result(self, row: dict, refs: list[dict], same: dict) -> dict:
        """The row measured, or copied from a row of the same method and parameters in another group (e.g. an
        ablation's base point shared by several groups)."""
        params = json.dumps(row["params"], sort_keys=True, default=json_default)
        if (row["method"], params) in same:
            return dict(same[(row["method"], params)], group=row["group"], setting=row["setting"], key=row_key(row))
        result = self.measure(row, refs)
        same[(row["method"], params)] = result
        return result

    def frame(self, rows: list[dict]) -> pd.DataFrame:
        done = self.finished()
        records = [done[row_key(r)] for r in rows if row_key(r) in done]
        if self.only_method is not None:  # a single-method run adds to what other runs of this table finished
            keys = {row_key(r) for r in rows}
            records += [r for k, r in done.items() if k not in keys]
        return pd.DataFrame(records)

    def write(self, rows: list[dict]) -> pd.DataFrame:
        df = self.frame(rows)
        if self.only_method is None or not (self.tables_dir / f"{self.table['name']}.csv").exists() or len(df):
            write_table(df, self.tables_dir, self.table["name"], title=self.table.get("title"))
        return df

    # --- measurement --------------------------------------------------------------------------------------------------
    def measure(self, row: dict, refs: list[dict]) -> dict:
        return self.measurement().measure(row, refs, self.record(row), self.calibration_file(row["method"]))

    def record(self, row: dict) -> dict:
        """What identifies a row's measurement: table, model, method, setting, workload, key."""
        return {
            "table": self.table["name"],
            "model": self.model_cfg["name"],
            "group": row["group"],
            "method": row["method"],
            "setting": row["setting"],
            "params": json.dumps(row["params"], sort_keys=True, default=json_default),
            "profile": self.profile.get("name", "custom"),
            "num_conditions": self.num_conditions,
            "num_seeds": len(self.seeds),
            "num_inference_steps": self.steps,
            "key": row_key(row),
            "weights": self.workload["weights"],
        }


def run_table(cfg) -> pd.DataFrame:
    """Run (or resume) the table described by the composed config ``cfg``; returns its rows."""
    return TableRunner(cfg).run()
