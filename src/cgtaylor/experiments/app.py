"""What the comparison's Hydra apps (scripts/run_comparison.py, scripts/spot_check.py) read from their config."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from . import compose
from .workers import Worker


@dataclass
class ComparisonApp:
    comparison: dict
    worker: Worker
    model_cfgs: dict  # model name -> its config, composed with the app's overrides
    tables: list  # (model name, step count), the model's default step count first

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "ComparisonApp":
        """Inside a Hydra app: sets torch's thread count (``threads``), and composes each model of the comparison with
        the command line's overrides (all but ``model=``)."""
        import torch
        from hydra.core.hydra_config import HydraConfig

        if cfg.get("threads"):
            torch.set_num_threads(int(cfg.threads))
        comparison = OmegaConf.to_container(cfg.comparison, resolve=True)
        overrides = [o for o in HydraConfig.get().overrides.task if not o.lstrip("+~").startswith("model=")]
        model_cfgs = {name: compose([f"model={name}", *overrides]).model for name in comparison["models"]}
        tables = [(name, steps) for name, model_cfg in model_cfgs.items()
                  for steps in [int(model_cfg.num_inference_steps), *comparison.get("step_counts", {}).get(name, [])]]
        return cls(comparison, Worker.parse(cfg.worker), model_cfgs, tables)
