"""A reviewer's spot check, far cheaper than ``reproduce_all.sh --verify``: the settings a comparison table chose, and
the near misses it recorded, are recomputed on the selection set in a fresh folder (no stored row, full-compute
reference or calibration is read) and compared with the stored evaluations the table was built from: FLOPs exactly,
each sample's PSNR within a margin.

It catches a stored row that no longer follows from the code (a bug fixed since it was computed, or state that a
method applied earlier in the same process left on the model) for about one selection evaluation per chosen setting;
``--verify`` re-runs every search and test evaluation instead.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from .evaluation import SettingEvaluator
from .models import load_model
from .sample_sets import make_sample_sets
from .workers import Worker

COLUMNS = ["model", "steps", "group", "method", "params", "stored_speedup", "fresh_speedup", "max_psnr_gap",
           "flops_match", "status"]


def settings_to_check(table: pd.DataFrame) -> list[tuple[str, str, dict]]:
    """``(group, method, params)`` of every chosen setting and recorded near miss in a comparison table, each once."""
    seen, settings = set(), []

    def add(group: str, method: str, params: dict) -> None:
        key = (method, json.dumps(params, sort_keys=True))
        if key not in seen:
            seen.add(key)
            settings.append((group, method, params))

    for _, row in table.iterrows():
        chosen, near_miss = row.get("params"), row.get("near_miss")
        if isinstance(chosen, str) and chosen:
            add(row["group"], row["method"], json.loads(chosen))
        if isinstance(near_miss, str) and near_miss:
            add(row["group"], row["method"], json.loads(near_miss)["params"])
    return settings


def compare_rows(stored: dict | None, fresh: dict, psnr_db: float) -> dict:
    """The stored and the fresh evaluation of one setting side by side, with a status: ``ok``, ``differs`` (FLOPs not
    equal, or a sample's PSNR further apart than ``psnr_db``) or ``not stored``."""
    if stored is None:
        return {"stored_speedup": None, "fresh_speedup": fresh["speedup"], "max_psnr_gap": None,
                "flops_match": None, "status": "not stored"}
    if len(stored["psnr"]) != len(fresh["psnr"]):
        gap = math.inf
    else:
        gap = max((abs(a - b) for a, b in zip(stored["psnr"], fresh["psnr"])), default=0.0)
    flops_match = stored["flops"] == fresh["flops"]
    return {"stored_speedup": stored["speedup"], "fresh_speedup": fresh["speedup"], "max_psnr_gap": gap,
            "flops_match": flops_match, "status": "ok" if flops_match and gap <= psnr_db else "differs"}


def spot_check(comparison, fresh_dir: str | Path, psnr_db: float = 0.5, worker: Worker | None = None,
               progress: bool = True) -> pd.DataFrame:
    """Recompute the settings of ``comparison``'s (a :class:`.comparison.ModelComparison`) stored table in
    ``fresh_dir`` and compare each with its stored evaluation. Several workers may share one ``fresh_dir``: each
    evaluation is computed once, and every worker returns the whole table."""
    from tqdm.auto import tqdm

    table_path = comparison.results_dir / "comparison" / f"{comparison.stem}.csv"
    if not table_path.exists():
        raise FileNotFoundError(f"no comparison table {table_path}; run scripts/run_comparison.py first")
    settings = settings_to_check(pd.read_csv(table_path))
    model = load_model(comparison.model_cfg)
    selection, _ = make_sample_sets(model, **comparison.samples)
    fresh_root = Path(fresh_dir) / f"{comparison.stem}-{comparison.workload_id}"
    stored = SettingEvaluator(model, comparison.steps, comparison.cache_dir, comparison.rows_dir, comparison.cache_dir)
    fresh = SettingEvaluator(model, comparison.steps, fresh_root / "cache", fresh_root / "rows", fresh_root / "cache",
                             int(comparison.cfg.get("calibration_conditions", 4)))
    order = (worker or Worker()).order(len(settings))
    results: dict[int, dict] = {}
    for index in tqdm(order, desc=f"spot check {comparison.stem}", disable=not progress, dynamic_ncols=True):
        group, method, shown = settings[index]
        params = comparison.evaluated_params(group, shown)
        row = compare_rows(stored.stored(method, params, selection), fresh.evaluate(method, params, selection), psnr_db)
        results[index] = {"model": comparison.name, "steps": comparison.steps, "group": group, "method": method,
                          "params": json.dumps(shown, sort_keys=True), **row}
    return pd.DataFrame([results[i] for i in sorted(results)], columns=COLUMNS)
