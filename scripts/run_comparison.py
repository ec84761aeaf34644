#!/usr/bin/env python
"""The equal-footing comparison: every method landed on each target speedup, tested on held-out samples.

    python scripts/run_comparison.py                              # default profile, every model in it
    python scripts/run_comparison.py comparison=extended results_dir=results-extended   # every variant, lower step counts
    python scripts/run_comparison.py comparison=full              # the extended one on larger sets
    python scripts/run_comparison.py comparison.models=[dit-digits] results_dir=results-mine
    python scripts/run_comparison.py comparison.models=[wan-digits] worker=1/2    # second of two processes
    torchrun --nproc-per-node=4 scripts/run_comparison.py                         # four GPUs share the work

Protocol: src/cgtaylor/experiments/protocol.py; configs: conf/comparison/. Every evaluation is kept under
<results_dir>/comparison/rows/, so a stopped run resumes where it stopped. Writes
<results_dir>/comparison/<model>-<steps>steps.{csv,md} and then <results_dir>/README.md.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from cgtaylor.experiments.app import ComparisonApp
from cgtaylor.experiments.comparison import expected_groups, run_comparison
from cgtaylor.experiments.report import write_results_readme


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    app = ComparisonApp.from_config(cfg)
    comparison, worker, model_cfgs, tables = app.comparison, app.worker, app.model_cfgs, app.tables
    # each worker starts on a different model's table, so no core waits at the end of one for the other to finish it
    for name, steps in (tables[i] for i in worker.order(len(tables))):
        frame = run_comparison(model_cfgs[name], comparison, cfg.results_dir, steps=steps, progress=cfg.progress,
                               worker=worker)
        print(f"{name} {steps} steps: {len(frame)} rows")
    write_results_readme(cfg.results_dir, expected_groups(comparison, model_cfgs),
                         HydraConfig.get().runtime.choices.get("comparison", "default"))
    print(f"results section -> {cfg.results_dir}/README.md")


if __name__ == "__main__":
    main()
