#!/usr/bin/env python
"""Last-block forecast error of each forecast basis on the zoo models, on one fixed refresh schedule.

    python scripts/compare_forecast_bases.py [--models dit-digits flux-digits] [--conditions 4] [--interval 3]

Every step is computed in full (``CGTaylorConfig(analysis=True)``) while the forecasters are refreshed on a
forced schedule (the model's CG-Taylor warm-up, then every ``interval``-th step, and the last step), so each
basis is judged on the same refreshes. Prints a markdown table of the mean relative L1 error of the last-block
forecast over the steps that schedule forecasts, and the largest cache (bytes, first + last forecaster) of a
run. Writes nothing.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from omegaconf import OmegaConf  # noqa: E402
from tqdm import tqdm  # noqa: E402

from cgtaylor import CGTaylorConfig, apply_cg_taylor, cg_taylor_stats, remove_cg_taylor  # noqa: E402
from cgtaylor.experiments.models import load_model  # noqa: E402

ORDERS = (1, 2)


def variants(order: int) -> list[tuple[str, dict]]:
    """(label, config options) of every basis compared at ``order``."""
    return [
        ("newton", {"taylor_formula": "newton"}),
        ("taylorseer", {"taylor_formula": "taylorseer"}),
        ("hermite (scale 0.5)", {"taylor_formula": "hermite"}),
        ("hermite (scale 0.7)", {"taylor_formula": "hermite", "hermite_scale": 0.7}),
        ("least_squares (order+2 points)", {"taylor_formula": "least_squares", "fit_points": order + 2}),
        ("least_squares (order+4 points)", {"taylor_formula": "least_squares", "fit_points": order + 4}),
        ("bdf2_heun", {"taylor_formula": "bdf2_heun"}),
    ]


def schedule(warmup: int, interval: int, steps: int) -> list[int]:
    return sorted(set(range(warmup)) | set(range(warmup, steps, interval)) | {steps - 1})


def measure(model, conditions, steps: int, options: dict) -> tuple[float, int]:
    """Mean last-block forecast error over the forecast steps, and the largest cache of the run (bytes)."""
    apply_cg_taylor(model.transformer, CGTaylorConfig(**options))
    try:
        model(conditions, num_inference_steps=steps, seed=0)
        stats = cg_taylor_stats(model.transformer)
    finally:
        remove_cg_taylor(model.transformer)
    errors = [r.last_block_error for r in stats.records if r.would_compute is False and r.last_block_error is not None]
    return statistics.fmean(errors), max(stats.cache_bytes.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["dit-digits", "flux-digits"])
    parser.add_argument("--conditions", type=int, default=4)
    parser.add_argument("--interval", type=int, default=3)
    parser.add_argument("--forecast", default="last_block", choices=("last_block", "residual"))
    args = parser.parse_args()
    table: dict[tuple[str, str, int], tuple[float, int]] = {}
    for name in args.models:
        cfg = OmegaConf.load(ROOT / "conf" / "model" / f"{name}.yaml")
        model = load_model(cfg)
        steps = int(cfg.num_inference_steps)
        warmup = int(cfg.method_params["cg-taylor"].warmup_steps)
        base = dict(analysis=True, forecast=args.forecast, num_inference_steps=steps,
                    compute_steps=schedule(warmup, args.interval, steps))
        conditions = model.default_conditions(args.conditions, seed=0)
        jobs = [(order, label, options) for order in ORDERS for label, options in variants(order)]
        for order, label, options in tqdm(jobs, desc=name):
            table[name, label, order] = measure(
                model, conditions, steps, {**base, **options, "first_block_order": order, "last_block_order": order})
    columns = [(name, order) for name in args.models for order in ORDERS]
    print(f"\nforecast={args.forecast}, refresh every {args.interval} steps after the warm-up; "
          f"mean relative L1 of the last-block forecast (cache bytes)\n")
    print("| basis | " + " | ".join(f"{name} order {order}" for name, order in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for label, _ in variants(1):
        cells = [f"{table[name, label, order][0]:.4f} ({table[name, label, order][1]:,})" for name, order in columns]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
