"""What a forecast step of each CG-Taylor variant costs, and how much memory its caches hold.

For every variant row of a comparison table (``role: variant``) at one target, the setting the comparison chose is
run once more on one batch of the model's default conditions: every transformer call is counted in FLOPs and timed,
and the hooks' records say which calls were forecast. A forecast call's share of a full call is reported in FLOPs
(the stable figure: what the gate's probe and the forecast itself run) and in measured time (noisy on a shared
CPU), with the largest memory the method's caches held, next to the variant's test PSNR from the comparison.

Each row is kept as a JSON file under ``<results_dir>/comparison/variant_cost/`` (keyed by model, steps and
setting), so a stopped run resumes; the table is ``variant_cost.{csv,md}`` in the same folder.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pandas as pd

from ..io import atomic_write_text, computed_once, read_json_record
from ..meters import CallTimer, CheckedFlops
from .keys import digest
from .measure import forecast_overhead
from .methods import make_generator
from .tables import to_markdown
from .variants import roles

COLUMNS = ["model", "steps", "target", "variant", "params", "test_psnr", "test_speedup", "forecast_steps", "calls",
           "forecast_flops_share", "forecast_time_share", "cache_mib"]


def forecast_step_cost(model, params: dict, steps: int, conditions, seed: int = 0, repeats: int = 3,
                       method: str = "cg-taylor") -> dict:
    """FLOPs and time of a forecast call as a share of a full call, and the caches' largest memory, for one run of
    CG-Taylor with ``params`` on ``conditions``. Times are per-call medians over ``repeats`` runs. ``method`` may be
    ``cg-taylor-target``, whose threshold is calibrated first (on the model's default calibration conditions)."""
    transformer = model.transformer
    generator = make_generator(model, method, params, num_inference_steps=steps)
    try:
        with CheckedFlops(transformer) as counted:
            generator(conditions, seed)
        stats = generator.cg_taylor_stats()
        computed = [bool(r.computed) for r in stats.records]
        runs = []
        for _ in range(repeats):
            with CallTimer(transformer) as timer:
                generator(conditions, seed)
            runs.append(timer.times)
    finally:
        generator.remove()
    if len(counted.calls) != len(computed) or any(len(times) != len(computed) for times in runs):
        raise RuntimeError(f"{model.name}: {len(counted.calls)} counted calls and {len(computed)} gate records; the "
                           "forecast step's share needs one record per transformer call")
    call_times = [statistics.median(times[i] for times in runs) for i in range(len(computed))]
    shares = forecast_overhead(computed, counted.calls, call_times)
    return {"calls": len(computed), "forecast_steps": computed.count(False),
            "forecast_flops_share": shares.get("forecast_flops_share"),
            "forecast_time_share": shares.get("forecast_time_share"),
            "cache_mib": stats.total_cache_bytes / 2**20}


def variant_settings(df: pd.DataFrame, target: float) -> pd.DataFrame:
    """The comparison's variant rows at ``target`` (one model's table or several)."""
    return df[(roles(df) == "variant") & (df["target"] == target)]


def measure_variant_costs(model, df: pd.DataFrame, target: float, rows_dir: Path, batch_size: int,
                          repeats: int = 3, progress: bool = True) -> pd.DataFrame:
    """One row per variant of ``model``'s comparison table at ``target``, each measured once and kept in
    ``rows_dir``."""
    from tqdm.auto import tqdm

    conditions = model.default_conditions(batch_size, seed=0)
    rows = []
    chosen = variant_settings(df, target)
    for _, row in tqdm(list(chosen.iterrows()), desc=f"forecast-step cost {model.name}", disable=not progress):
        params, steps = json.loads(row["params"]), int(row["steps"])
        path = rows_dir / f"{model.name}-{steps}steps-{digest([params, steps, batch_size, repeats], 12)}.json"
        cost = computed_once(path, lambda p: read_json_record(p, required=("forecast_flops_share", "cache_mib")),
                             lambda: forecast_step_cost(model, params, steps, conditions, repeats=repeats,
                                                        method=row["method"]),
                             lambda record, p: atomic_write_text(json.dumps(record), p))
        rows.append({"model": row["model"], "steps": steps, "target": target, "variant": row["group"],
                     "params": row["params"], "test_psnr": row["test_psnr"], "test_speedup": row["test_speedup"], **cost})
    return pd.DataFrame(rows, columns=COLUMNS)


def write_variant_costs(frame: pd.DataFrame, folder: Path, only_models: list[str] | None = None) -> None:
    """Write the table; ``only_models``: the models ``frame`` was measured for, every other model's rows in the
    table already on disk are kept."""
    path = Path(folder) / "variant_cost.csv"
    if only_models and path.exists():
        kept = pd.read_csv(path)
        frame = pd.concat([kept[~kept["model"].isin(only_models)], frame], ignore_index=True)
    atomic_write_text(frame.to_csv(index=False), path)
    atomic_write_text(cost_markdown(frame), folder / "variant_cost.md")


def cost_markdown(frame: pd.DataFrame) -> str:
    shown = frame.drop(columns=["params"], errors="ignore").rename(columns={
        "test_psnr": "test PSNR (dB)", "test_speedup": "test speedup", "forecast_steps": "forecast calls",
        "calls": "transformer calls", "forecast_flops_share": "forecast call / full call (FLOPs)",
        "forecast_time_share": "forecast call / full call (time)", "cache_mib": "cache (MiB)"})
    return to_markdown(shown.round({"test PSNR (dB)": 1, "test speedup": 2, "forecast call / full call (FLOPs)": 3,
                                    "forecast call / full call (time)": 3, "cache (MiB)": 3}))


def current_rows(frame: pd.DataFrame, df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cost rows whose setting is still the comparison's choice, and those it no longer is (stale)."""
    if frame.empty:
        return frame, frame
    chosen = {(r["model"], int(r["steps"]), float(r["target"]), r["group"]): r["params"] for _, r in df.iterrows()}
    keep = frame.apply(lambda r: chosen.get((r["model"], int(r["steps"]), float(r["target"]), r["variant"]))
                       == r["params"], axis=1).astype(bool)
    return frame[keep], frame[~keep]


def cost_section(results_dir: Path, df: pd.DataFrame) -> list[str]:
    """The results section's part on forecast-step cost, from ``comparison/variant_cost.csv`` where it exists; rows
    measured for a setting the comparison no longer chooses are left out and named."""
    path = Path(results_dir) / "comparison" / "variant_cost.csv"
    if not path.exists():
        return []
    frame, stale = current_rows(pd.read_csv(path), df)
    note = ("" if stale.empty else
            f"\nLeft out, measured for a setting the comparison no longer chooses (rerun the script): "
            f"{', '.join(f'{r.model} {r.variant}' for r in stale.itertuples())}.\n")
    return ["\n### What a forecast step costs, and the caches' memory (`results/comparison/variant_cost.csv`)\n",
            "Each variant's setting chosen at the target, run once more on one batch of the model's conditions "
            "(`scripts/measure_variant_cost.py`): a forecast call's share of a full call in FLOPs (the first block's "
            "probe, the forecast, the head) and in time (medians of three runs on a shared CPU: noisy), and the "
            "largest memory its caches held. The paper's form is the `cg-taylor-paper` row.\n", cost_markdown(frame) + note]
