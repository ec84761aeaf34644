#!/usr/bin/env python
"""A reviewer's spot check of stored comparison rows: every chosen setting (and recorded near miss) recomputed on the
selection set in a fresh folder, compared with the stored evaluation (src/cgtaylor/experiments/spot_check.py).

    python scripts/spot_check.py                                               # results/, every table
    python scripts/spot_check.py comparison=extended results_dir=results-extended "comparison.models=[flux-digits]"
    python scripts/spot_check.py comparison=extended results_dir=results-extended worker=1/2 threads=1  # 2nd of two

Writes <spot_check_dir>/<model>-<steps>steps.csv (default folder: <results_dir>-spot-check); exit status 1 when a
recomputed setting differs from its stored row (FLOPs not equal, or a sample's PSNR more than 0.5 dB apart).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from cgtaylor.experiments.app import ComparisonApp
from cgtaylor.experiments.comparison import ModelComparison
from cgtaylor.experiments.spot_check import spot_check
from cgtaylor.experiments.tables import to_markdown
from cgtaylor.io import atomic_write_text


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    app = ComparisonApp.from_config(cfg)
    fresh_dir = cfg.spot_check_dir or f"{str(cfg.results_dir).rstrip('/')}-spot-check"
    differing = 0
    for name, steps in app.tables:
        table = ModelComparison(app.model_cfgs[name], app.comparison, cfg.results_dir, steps=steps,
                                progress=cfg.progress)
        checked = spot_check(table, fresh_dir, worker=app.worker, progress=cfg.progress)
        atomic_write_text(checked.to_csv(index=False), f"{fresh_dir}/{table.stem}.csv")
        print(f"{table.stem}: {len(checked)} settings, {checked['status'].value_counts().to_dict()}")
        failing = checked[checked["status"] == "differs"]
        if not failing.empty:
            print(to_markdown(failing))
        differing += len(failing)
    print(f"{differing} setting(s) differ from their stored rows; tables in {fresh_dir}/")
    sys.exit(1 if differing else 0)


if __name__ == "__main__":
    main()
