#!/usr/bin/env python
"""Last-block forecast error of each forecast basis on the zoo models, on one fixed refresh schedule.

    python scripts/compare_forecast_bases.py [--models dit-digits flux-digits] [--conditions 4] [--interval 3]

The forecasters are refreshed on a forced schedule (the model's CG-Taylor warm-up, then every ``interval``-th
step, and the last step), so each basis is judged on the same refreshes, and every step is computed in full, so
the trajectory is the plain model's whatever the basis. The last block's output is therefore recorded once per
model and each basis's last-block forecaster is replayed on it; one ``CGTaylorConfig(analysis=True)`` run (Newton,
order 1) checks that the replay gives the ``last_block_error`` the hooks record. Prints a markdown table per
model of the mean relative L1 error of the last-block forecast over the forecast steps, with the forecaster's
largest cache (bytes). Writes nothing.
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
from cgtaylor.blocks import block_metadata, find_blocks, hidden_output  # noqa: E402
from cgtaylor.experiments.models import load_model  # noqa: E402
from cgtaylor.parallel import relative_l1  # noqa: E402
from cgtaylor.taylor import make_ladder  # noqa: E402

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


def analysis_error(model, conditions, steps: int, options: dict) -> float:
    """Mean ``last_block_error`` that the hooks record in analysis mode over the forecast steps."""
    apply_cg_taylor(model.transformer, CGTaylorConfig(**options))
    try:
        model(conditions, num_inference_steps=steps, seed=0)
        stats = cg_taylor_stats(model.transformer)
    finally:
        remove_cg_taylor(model.transformer)
    errors = [r.last_block_error for r in stats.records if r.would_compute is False and r.last_block_error is not None]
    return statistics.fmean(errors)


def last_block_trajectory(model, conditions, steps: int) -> list:
    """The last block's output at every step of one plain run."""
    last = find_blocks(model.transformer).last
    metadata = block_metadata(last)
    outputs = []
    handle = last.register_forward_hook(lambda m, a, out: outputs.append(hidden_output(metadata, out).detach().clone()))
    try:
        model(conditions, num_inference_steps=steps, seed=0)
    finally:
        handle.remove()
    if len(outputs) != steps:
        raise RuntimeError(f"{model.name}: the last block ran {len(outputs)} times in {steps} steps (one call per "
                           f"step expected)")
    return outputs


def replay(trajectory: list, refreshes: list[int], order: int, options: dict) -> tuple[float, int]:
    """Mean relative L1 of the last-block forecaster over the steps it stands in for, and its largest cache."""
    basis = {key: options[key] for key in ("hermite_scale", "fit_points") if key in options}
    ladder = make_ladder(order, options["taylor_formula"], **basis)
    errors, largest = [], 0
    for step, output in enumerate(trajectory):
        if step in refreshes:
            ladder.update(output, step)
            largest = max(largest, ladder.nbytes)
        elif ladder.ready:
            errors.append(relative_l1(ladder.forecast(step), output))
    return statistics.fmean(errors), largest


def print_table(name: str, table: dict, interval: int) -> None:
    print(f"\n{name}: refresh every {interval} steps after the warm-up; mean relative L1 of the last-block "
          f"forecast over the forecast steps (largest cache of the last-block forecaster, bytes)\n")
    print("| basis | " + " | ".join(f"order {order}" for order in ORDERS) + " |")
    print("|---" * (len(ORDERS) + 1) + "|")
    for label, _ in variants(1):
        cells = [f"{table[label, order][0]:.4f} ({table[label, order][1]:,})" for order in ORDERS]
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["dit-digits", "flux-digits"])
    parser.add_argument("--conditions", type=int, default=4)
    parser.add_argument("--intervals", type=int, nargs="+", default=[3, 5], help="refresh intervals replayed; the "
                        "analysis-mode check runs on the first")
    args = parser.parse_args()
    for name in args.models:
        cfg = OmegaConf.load(ROOT / "conf" / "model" / f"{name}.yaml")
        model = load_model(cfg)
        steps = int(cfg.num_inference_steps)
        warmup = int(cfg.method_params["cg-taylor"].warmup_steps)
        refreshes = schedule(warmup, args.intervals[0], steps)
        conditions = model.default_conditions(args.conditions, seed=0)
        with tqdm(total=2, desc=f"{name} runs") as progress:
            trajectory = last_block_trajectory(model, conditions, steps)
            progress.update()
            check = analysis_error(model, conditions, steps, dict(
                analysis=True, forecast="last_block", num_inference_steps=steps, compute_steps=refreshes))
            progress.update()
        replayed = replay(trajectory, refreshes, 1, {"taylor_formula": "newton"})[0]
        if abs(replayed - check) > 1e-4 * check:
            raise RuntimeError(f"{name}: replayed Newton order-1 error {replayed} differs from the analysis-mode "
                               f"record {check}")
        print(f"\n{name}: analysis-mode check, Newton order 1: {check:.6f} recorded, {replayed:.6f} replayed")
        for interval in args.intervals:
            refreshes = schedule(warmup, interval, steps)
            table = {(label, order): replay(trajectory, refreshes, order, options)
                     for order in ORDERS for label, options in variants(order)}
            print_table(name, table, interval)


if __name__ == "__main__":
    main()
