"""Experiment runner: CG-Taylor against its peers, side by side, on FLOPs, time, memory and fidelity.

Entry points (the notebooks and ``scripts/run_experiments.py`` call these; logic stays here):

- ``compose(overrides=(), config_dir=None) -> DictConfig``: the Hydra config of ``conf/config.yaml`` with overrides,
  e.g. ``compose(["table=table_dit", "profile=quick"])``.
- ``run_table(cfg) -> pandas.DataFrame``: run or resume one table (:mod:`.runner`); rows go to
  ``<results_dir>/tables/<table>.csv`` and ``.md``.
- ``run_all(overrides=(), tables=ALL_TABLES) -> dict[str, DataFrame]``: every table, then the summaries.
- ``load_table(name, results_dir="results") -> DataFrame``.
- ``summary_at_speedups(df, speedups=(2, 3), metric="psnr") -> DataFrame`` and ``write_summary(results_dir)``
  (:mod:`.tables`).
- ``methods.apply_method(transformer, name, params, num_inference_steps=50)`` and
  ``methods.make_generator(model, name, params, num_inference_steps=50)`` (:mod:`.methods`).
- ``models.load_model(model_cfg)`` (:mod:`.models`): zoo models, tiny random ones, or a local checkpoint of a paper
  model (never downloaded).
"""

from __future__ import annotations

from pathlib import Path

from . import methods, models
from .methods import METHOD_NAMES, apply_method, make_generator
from .runner import run_table
from .tables import load_table, summary_at_speedups, write_summary

ALL_TABLES = ("table_dit", "table_flux", "table_wan", "ablations")
CONFIG_DIR = Path(__file__).resolve().parents[3] / "conf"


def compose(overrides=(), config_dir: str | Path | None = None):
    """Compose ``conf/config.yaml`` with Hydra overrides (outside a Hydra app)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    config_dir = Path(config_dir or CONFIG_DIR).resolve()
    if not (config_dir / "config.yaml").exists():
        raise FileNotFoundError(f"no config.yaml in {config_dir}; pass config_dir= the project's conf/ folder")
    if GlobalHydra.instance().is_initialized():
        return hydra_compose(config_name="config", overrides=list(overrides))
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def run_all(overrides=(), tables=ALL_TABLES, config_dir: str | Path | None = None) -> dict:
    """Run every table with the same overrides (a ``table=`` override is replaced), then write the summaries."""
    overrides = [o for o in overrides if not o.lstrip("+~").startswith(("table=", "all=", "tables="))]
    frames, results_dir = {}, "results"
    for name in tables:
        cfg = compose([f"table={name}", *overrides], config_dir)
        results_dir = cfg.results_dir
        frames[name] = run_table(cfg)
    write_summary(results_dir)
    return frames


__all__ = [
    "ALL_TABLES", "METHOD_NAMES", "apply_method", "compose", "load_table", "make_generator", "methods", "models",
    "run_all", "run_table", "summary_at_speedups", "write_summary",
]
