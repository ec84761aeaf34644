#!/usr/bin/env python
"""Retrain the demo model zoo and its evaluator on the real sklearn digits (CPU, seeded, resumable).

    python scripts/train_zoo.py                                   # everything, configs in conf/zoo/
    python scripts/train_zoo.py only=[dit-digits] models.dit-digits.max_minutes=2 out_dir=/tmp/zoo
    # both cores: one model per process, one torch thread each
    python scripts/train_zoo.py only=[flux-digits] & python scripts/train_zoo.py only=[wan-digits]; wait

Weights (EMA) are written as <name>.safetensors + <name>.json into ``out_dir`` (the package's
``zoo/weights`` by default); checkpoints go to ``checkpoint_dir/<name>/`` every few steps, so a killed
run picks up where it stopped. Each model's training stops at ``max_steps`` or ``max_minutes``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import os

# idle OpenMP threads sleep instead of spinning: on a CPU shared with other jobs, spinning threads stall
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import hydra  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402


def _path(p: str) -> Path:
    q = Path(p)
    return q if q.is_absolute() else ROOT / q


@hydra.main(version_base=None, config_path="../conf/zoo", config_name="train")
def main(cfg: DictConfig) -> None:
    from cgtaylor import zoo
    from cgtaylor.zoo import evaluator, families, models, recipes, train

    torch.set_num_threads(int(cfg.threads))
    out_dir = _path(cfg.out_dir)
    for name in cfg.only:
        if name == "evaluator":
            e = cfg.evaluator
            _, info = evaluator.train_evaluator(seed=e.seed, steps=e.steps, batch_size=e.batch_size, lr=e.lr,
                                                out_dir=out_dir, progress=cfg.progress)
            print(f"[evaluator] {info}", flush=True)
            continue
        if name not in zoo.MODEL_NAMES:
            raise ValueError(f"unknown entry {name!r} in only; choose from evaluator, {', '.join(zoo.MODEL_NAMES)}")
        recipe, run = recipes.split_model_config(OmegaConf.to_container(cfg.models[name], resolve=True),
                                               f"conf/zoo/{name}.yaml")
        torch.manual_seed(recipe["seed"])
        model = models.new_model(name, families.NAME_KIND[name])
        info = train.train(model, **run, **recipe, checkpoint_dir=_path(cfg.checkpoint_dir) / name,
                           progress=cfg.progress)
        zoo.save(model, out_dir, extra={"training": info})
        print(f"[{name}] saved to {out_dir}: {info}", flush=True)


if __name__ == "__main__":
    main()
