"""Does the first block's forecast error tell when the last block's forecast goes wrong?

Analysis-mode runs compute every step while recording, per step, the first block's forecast error (the
gate's indicator), the first block's step-to-step change (what FBCache/TeaCache-style gates look at) and the
last block's forecast error (what actually goes wrong when a step is skipped).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps
from tqdm.auto import tqdm

from ..api import apply_cg_taylor, cg_taylor_stats, remove_cg_taylor
from ..config import CGTaylorConfig
from ..io import atomic_write_csv

INDICATORS = {
    "first_block_error": "first-block Taylor forecast error (CG-Taylor gate)",
    "first_block_change": "first-block step-to-step change (FBCache/TeaCache-style gate)",
}
TARGET = "last_block_error"


def collect_error_records(model, conditions, seeds, config: CGTaylorConfig, *, num_inference_steps: int = 50,
                          cache_dir: str | Path | None = None) -> pd.DataFrame:
    """Analysis-mode records for every (seed, condition); each finished chunk is kept on disk when
    ``cache_dir`` is given, so a stopped collection resumes where it stopped."""
    config = config.with_updates(analysis=True)
    frames = []
    jobs = [(seed, index, condition) for seed in seeds for index, condition in enumerate(conditions)]
    for seed, index, condition in tqdm(jobs, desc=f"analysis runs {model.name}"):
        path = None
        if cache_dir is not None:
            weights = getattr(model, "weights_id", None) or "unsaved"
            key = f"{model.name}_{weights}_thr{config.threshold:g}_o{config.first_block_order}{config.last_block_order}" \
                  f"_w{config.warmup_steps}_{config.forecast}_n{num_inference_steps}_s{seed}_c{index}.csv"
            path = Path(cache_dir) / key
            if path.exists():
                frames.append(pd.read_csv(path))
                continue
        apply_cg_taylor(model.transformer, config)
        try:
            model([condition], num_inference_steps=num_inference_steps, seed=seed)
            frame = cg_taylor_stats(model.transformer).to_dataframe()
        finally:
            remove_cg_taylor(model.transformer)
        frame.insert(0, "model", model.name)
        frame.insert(1, "seed", seed)
        frame.insert(2, "condition", str(condition))
        if path is not None:
            atomic_write_csv(frame, path)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _fisher_ci(r: float, n: int, level: float) -> tuple[float, float]:
    if n <= 3 or not math.isfinite(r) or abs(r) >= 1:
        return (float("nan"), float("nan"))
    z, se = math.atanh(r), 1 / math.sqrt(n - 3)
    q = sps.norm.ppf(0.5 + level / 2)
    return (math.tanh(z - q * se), math.tanh(z + q * se))


def correlation_with_ci(x, y, level: float = 0.95) -> dict[str, float]:
    """Pearson r and Spearman rho with Fisher-z confidence intervals (for rho, with the Bonett-Wright
    standard error), over the finite pairs."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(len(x))
    if n < 4:
        return {"n": n, "pearson_r": float("nan"), "pearson_low": float("nan"), "pearson_high": float("nan"),
                "spearman_rho": float("nan"), "spearman_low": float("nan"), "spearman_high": float("nan")}
    r = float(sps.pearsonr(x, y)[0])
    rho = float(sps.spearmanr(x, y)[0])
    low_r, high_r = _fisher_ci(r, n, level)
    if abs(rho) < 1:
        z, se = math.atanh(rho), math.sqrt((1 + rho**2 / 2) / (n - 3))
        q = sps.norm.ppf(0.5 + level / 2)
        low_rho, high_rho = math.tanh(z - q * se), math.tanh(z + q * se)
    else:
        low_rho = high_rho = float("nan")
    return {"n": n, "pearson_r": r, "pearson_low": low_r, "pearson_high": high_r,
            "spearman_rho": rho, "spearman_low": low_rho, "spearman_high": high_rho}


def drop_warmup(records: pd.DataFrame, warmup_steps: int) -> pd.DataFrame:
    return records[records.step >= warmup_steps]


def correlation_table(records: pd.DataFrame, warmup_steps: int) -> pd.DataFrame:
    """Per model and indicator: how well it tracks the last block's forecast error (warm-up dropped)."""
    rows = []
    for model_name, frame in drop_warmup(records, warmup_steps).groupby("model", sort=False):
        for indicator, label in INDICATORS.items():
            rows.append({"model": model_name, "indicator": indicator, "description": label,
                         **correlation_with_ci(frame[indicator], frame[TARGET])})
    return pd.DataFrame(rows)
