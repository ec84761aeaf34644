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
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from cgtaylor.experiments import compose
from cgtaylor.experiments.comparison import expected_groups, run_comparison
from cgtaylor.experiments.report import write_results_readme
from cgtaylor.experiments.workers import Worker


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    comparison = OmegaConf.to_container(cfg.comparison, resolve=True)
    worker = Worker.parse(cfg.worker)
    overrides = [o for o in HydraConfig.get().overrides.task if not o.lstrip("+~").startswith("model=")]
    model_cfgs = {name: compose([f"model={name}", *overrides]).model for name in comparison["models"]}
    tables = [(name, steps) for name, model_cfg in model_cfgs.items()
              for steps in [int(model_cfg.num_inference_steps), *comparison.get("step_counts", {}).get(name, [])]]
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
