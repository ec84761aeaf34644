#!/usr/bin/env python
"""PSNR against full compute and FLOPs speedup of CG-Taylor's gate variants on one zoo model's selection set.

    python scripts/compare_gate_variants.py --out /tmp/gate-variants --reference-cache results/comparison/.cache/...
        [--model flux-digits] [--steps 50] [--only NAME ...]

Each setting is a row of ``SETTINGS`` (the model's cg-taylor parameters from conf/model plus the variant's options);
rows are kept as JSON under ``--out`` (a rerun reads them back). The selection set is the comparison's (conf/comparison
default: batch and seed), so the full-compute reference may be read from the comparison's cache folder.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from omegaconf import OmegaConf  # noqa: E402
from tqdm import tqdm  # noqa: E402

from cgtaylor import CGTaylorConfig, apply_cg_taylor, cg_taylor_stats, remove_cg_taylor  # noqa: E402
from cgtaylor.experiments.evaluation import SettingEvaluator  # noqa: E402
from cgtaylor.experiments.models import load_model  # noqa: E402
from cgtaylor.experiments.sample_sets import make_sample_sets  # noqa: E402

BASE = {"forecast": "residual", "taylor_formula": "newton"}
POINTS = {"2x": {"threshold": 0.004122782291754724, "warmup_steps": 5},  # the comparison's 2x / 3x settings
          "3x": {"threshold": 0.00921953373394717, "warmup_steps": 2}}  # of the default on flux-digits
VARIANTS = {"default": {}, "error_feedback": {"error_feedback": "scale"},
            "schedule_0.5_2": {"threshold_schedule": [0.5, 2.0]}, "per_sample": {"gate_scope": "per_sample"},
            "per_sample_x1.6": {"gate_scope": "per_sample", "threshold_scale": 1.6}}
SETTINGS = {f"{variant}@{point}": (options, POINTS[point]) for variant, options in VARIANTS.items() for point in POINTS}


def params_of(options: dict, point: dict, model_params: dict) -> dict:
    options = dict(options)
    scale = options.pop("threshold_scale", 1.0)
    return {**model_params, **BASE, **point, **options, "threshold": point["threshold"] * scale}


def agreement(model, selection, params: dict, steps: int) -> str:
    """How often the samples of a batch disagree under gate_scope="per_sample": steps computed for their error on
    which some sample alone would have been forecast (the cost of running the blocks for the whole batch)."""
    apply_cg_taylor(model.transformer, CGTaylorConfig.from_dict(params))
    try:
        for conditions, seed in selection.batches():
            model(conditions, num_inference_steps=steps, seed=seed)
            records = cg_taylor_stats(model.transformer).records
    finally:
        remove_cg_taylor(model.transformer)
    computed = [r for r in records if r.reason == "error"]
    forecast = sum(r.reason == "forecast" for r in records)
    split = [r for r in computed if min(r.sample_errors) < r.threshold]
    below = sum(sum(e < r.threshold for e in r.sample_errors) for r in split)
    return (f"{forecast} steps forecast, {len(computed)} computed for their error; on {len(split)} of those some "
            f"sample was below the threshold ({below} sample-steps computed only for another sample's error)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="flux-digits")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--reference-cache", type=Path, help="folder holding the comparison's full-selection-*.pt")
    parser.add_argument("--agreement", action="store_true",
                        help="for the per_sample settings run, also count the steps on which the samples disagree "
                             "(last batch of the selection set)")
    parser.add_argument("--only", nargs="*", choices=sorted(SETTINGS), help="settings to run (default: all)")
    args = parser.parse_args()
    model_cfg = OmegaConf.load(ROOT / "conf" / "model" / f"{args.model}.yaml")
    comparison = OmegaConf.load(ROOT / "conf" / "comparison" / "default.yaml")
    samples = comparison.samples[args.model]
    model = load_model(model_cfg)
    selection, _ = make_sample_sets(model, samples.batch_size, samples.selection_batches, samples.test_batches)
    cache = args.out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    if args.reference_cache:
        for path in args.reference_cache.glob("full-selection-*.pt"):
            if not (cache / path.name).exists():
                shutil.copy(path, cache / path.name)
    evaluator = SettingEvaluator(model, args.steps, cache, args.out / "rows", cache)
    model_params = OmegaConf.to_container(model_cfg.method_params.get("cg-taylor", {}))
    for name in tqdm(args.only or list(SETTINGS), desc="gate variants"):
        params = params_of(*SETTINGS[name], model_params)
        row = evaluator.evaluate("cg-taylor", params, selection)
        tqdm.write(f"{name}: speedup {row['speedup']:.3f}x, PSNR {statistics.mean(row['psnr']):.2f} dB")
        if args.agreement and params.get("gate_scope") == "per_sample":
            tqdm.write(f"{name}: {agreement(model, selection, params, args.steps)}")


if __name__ == "__main__":
    main()
