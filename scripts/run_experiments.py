#!/usr/bin/env python
"""Run the paper's tables: CG-Taylor against its peers on FLOPs, time, memory and fidelity.

    python scripts/run_experiments.py table=table_dit profile=default     # one table
    python scripts/run_experiments.py all=true profile=default            # every table, then the summaries
    python scripts/run_experiments.py -m hydra/launcher=joblib table=table_dit method=cg-taylor \
        method.params.threshold=0.02,0.05,0.1                             # a sweep as a Hydra multirun

Configs live in conf/ (model/, method/, table/, profile/); see conf/config.yaml. Finished rows are kept, so a
killed run restarts where it stopped. Tables go to results/tables/<table>.csv and .md.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from cgtaylor.experiments import ALL_TABLES, run_all, run_table, write_summary


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    if cfg.get("all"):
        overrides = list(HydraConfig.get().overrides.task)
        frames = run_all(overrides, list(cfg.get("tables") or ALL_TABLES))
        for name, df in frames.items():
            print(f"{name}: {len(df)} rows -> {cfg.results_dir}/tables/{name}.csv")
        print(f"summary -> {cfg.results_dir}/tables/summary.md")
        return
    df = run_table(cfg)
    print(f"{cfg.table.name}: {len(df)} rows -> {cfg.results_dir}/tables/{cfg.table.name}.csv")
    write_summary(cfg.results_dir)


if __name__ == "__main__":
    main()
