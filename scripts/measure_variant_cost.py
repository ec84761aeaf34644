#!/usr/bin/env python
"""What a forecast step of each CG-Taylor variant costs (FLOPs and time, as a share of a full step) and how much
memory its caches hold, for the setting the equal-footing comparison chose at a target.

    python scripts/measure_variant_cost.py [--results-dir results] [--target 2] [--models dit-digits flux-digits]

Reads each model's comparison table (`scripts/run_comparison.py` writes it), runs every variant's chosen setting on
one batch of the model's default conditions, and writes results/comparison/variant_cost.{csv,md}; each measured row
is kept under results/comparison/variant_cost/, so a stopped run resumes. Re-renders results/README.md after.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch
from omegaconf import OmegaConf

from cgtaylor.experiments import compose
from cgtaylor.experiments.comparison import expected_groups
from cgtaylor.experiments.models import load_model
from cgtaylor.experiments.report import load_comparison, write_results_readme
from cgtaylor.experiments.variant_cost import measure_variant_costs, write_variant_costs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--comparison", default="default", help="the conf/comparison profile (default: default)")
    parser.add_argument("--target", type=float, default=2.0, help="the target speedup whose settings are measured")
    parser.add_argument("--models", nargs="*", help="models to measure (default: every model the profile lists)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per setting (per-call medians)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    comparison = OmegaConf.to_container(compose([f"comparison={args.comparison}"]).comparison, resolve=True)
    models = {name: compose([f"model={name}"]).model for name in comparison["models"]}
    unknown = sorted(set(args.models or []) - set(models))
    if unknown:
        parser.error(f"--models: {unknown} not in the comparison profile; accepted: {sorted(models)}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    df = load_comparison(args.results_dir)
    if df.empty or args.target not in set(df["target"]):
        parser.error(f"--target {args.target:g}: no comparison rows at it under {args.results_dir}/comparison "
                     f"(targets there: {sorted(set(df['target'])) if not df.empty else 'none'})")
    folder = args.results_dir / "comparison"
    frames = []
    for name in args.models or list(models):
        part = df[df["model"] == name]
        if part.empty:
            print(f"{name}: no comparison table yet; skipped")
            continue
        model = load_model(OmegaConf.to_container(models[name], resolve=True))
        batch_size = int(comparison["samples"][name]["batch_size"])
        frames.append(measure_variant_costs(model, part, args.target, folder / "variant_cost", batch_size,
                                            repeats=args.repeats))
    if frames:
        write_variant_costs(pd.concat(frames, ignore_index=True), folder, only_models=args.models)
        print(f"-> {folder / 'variant_cost.md'}")
    write_results_readme(args.results_dir, expected_groups(comparison, models), args.comparison)


if __name__ == "__main__":
    main()
