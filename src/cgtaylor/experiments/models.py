"""Models an experiment runs on, built from a ``conf/model/*.yaml`` node.

``load_model(model_cfg)`` returns an object with the zoo models' interface: ``model.transformer``,
``model(conditions, num_inference_steps=50, seed=0)`` -> samples in [0, 1] ((B, C, H, W) or (B, C, F, H, W)),
``model.default_conditions(n, seed)`` and ``model.name``.

Sources (``model_cfg.source``):

- ``zoo``: a shipped zoo model (``cgtaylor.zoo.load(name)``), sampler settings from ``model_cfg.sampler``.
- ``tiny``: a random-weight zoo architecture with ``model_cfg.tiny_overrides`` (tests).
- ``pipeline``: a user's local diffusers checkpoint of a paper model (``model_cfg.path``), loaded with
  ``local_files_only=True``; nothing is ever downloaded, and a missing path fails with a clear message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from ..checks import compute_dtype

PIPELINE_CLASSES = {"dit": "DiTPipeline", "flux": "FluxPipeline", "wan": "WanPipeline"}


def _plain(node) -> Any:
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(node):
            return OmegaConf.to_container(node, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return node


class SamplerBound:
    """A zoo model with fixed sampler keyword arguments (e.g. ``guidance_scale``)."""

    def __init__(self, model, sampler: dict | None = None, name: str | None = None):
        self.model = model
        self.sampler = dict(sampler or {})
        self.name = name or model.name
        self.zoo_name = model.name

    @property
    def transformer(self):
        return self.model.transformer

    def default_conditions(self, n: int, seed: int = 0) -> list:
        return self.model.default_conditions(n, seed)

    def __call__(self, conditions, num_inference_steps: int = 50, seed: int = 0) -> torch.Tensor:
        return self.model(conditions, num_inference_steps=num_inference_steps, seed=seed, **self.sampler)


class PipelineModel:
    """A local diffusers pipeline of a paper model behind the zoo interface."""

    def __init__(self, name: str, kind: str, pipeline, sampler: dict, conditions: Sequence):
        self.name = name
        self.zoo_name = None
        self.kind = kind
        self.pipeline = pipeline
        self.sampler = dict(sampler)
        self.conditions = list(conditions)
        if hasattr(pipeline, "set_progress_bar_config"):
            pipeline.set_progress_bar_config(disable=True)

    @property
    def transformer(self):
        return self.pipeline.transformer

    def default_conditions(self, n: int, seed: int = 0) -> list:
        if not self.conditions:
            raise ValueError(f"model {self.name}: no conditions configured (model.conditions)")
        offset = seed % len(self.conditions)
        return [self.conditions[(offset + k) % len(self.conditions)] for k in range(n)]

    def __call__(self, conditions, num_inference_steps: int = 50, seed: int = 0) -> torch.Tensor:
        generator = torch.Generator("cpu").manual_seed(int(seed))
        options = dict(self.sampler, num_inference_steps=int(num_inference_steps), generator=generator)
        with torch.no_grad():
            if self.kind == "dit":
                out = self.pipeline(class_labels=list(conditions), output_type="np", **options).images
                return torch.from_numpy(out).permute(0, 3, 1, 2).float()
            if self.kind == "flux":
                out = self.pipeline(prompt=list(conditions), output_type="pt", **options).images
                return out.float().clamp(0, 1)
            out = self.pipeline(prompt=list(conditions), output_type="pt", **options).frames  # (B, F, C, H, W)
            return torch.as_tensor(out).float().permute(0, 2, 1, 3, 4).clamp(0, 1)


def check_local_path(name: str, path, hint: str = "") -> Path:
    """The checkpoint folder of a real model, or a FileNotFoundError that says what to do (never downloads)."""
    if path in (None, "", "???"):
        raise FileNotFoundError(
            f"model {name!r} needs a local checkpoint: set model.path=/path/to/{hint or name} "
            "(a diffusers folder with model_index.json). Nothing is downloaded."
        )
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise FileNotFoundError(
            f"model {name!r}: local checkpoint path {str(p)!r} does not exist. Point model.path at a local diffusers "
            f"folder of {hint or name} (with model_index.json); this project never downloads weights."
        )
    if not (p / "model_index.json").exists():
        raise FileNotFoundError(
            f"model {name!r}: {str(p)!r} is not a diffusers pipeline folder (no model_index.json in it)"
        )
    return p


def load_model(model_cfg) -> object:
    cfg = _plain(model_cfg)
    source = cfg.get("source", "zoo")
    name = cfg["name"]
    sampler = dict(cfg.get("sampler") or {})
    if source == "zoo":
        from .. import zoo

        return SamplerBound(zoo.load(cfg.get("zoo_name", name)), sampler, name)
    if source == "tiny":
        from ..zoo.families import ARCH, NAME_KIND, TINY_OVERRIDES
        from ..zoo.models import new_model

        zoo_name = cfg.get("zoo_name", name)
        kind = NAME_KIND[zoo_name]
        arch = {**ARCH[kind], **TINY_OVERRIDES[kind], **(cfg.get("tiny_overrides") or {})}
        torch.manual_seed(int(cfg.get("seed", 0)))
        return SamplerBound(new_model(zoo_name, kind, arch), sampler, name)
    if source == "pipeline":
        path = check_local_path(name, cfg.get("path"), cfg.get("hub_id", ""))
        import diffusers

        kind = cfg["kind"]
        cls = getattr(diffusers, PIPELINE_CLASSES[kind])
        dtype = compute_dtype("model.dtype", cfg.get("dtype", "float32"))
        pipeline = cls.from_pretrained(str(path), dtype=dtype, local_files_only=True)
        if cfg.get("scheduler"):
            pipeline.scheduler = getattr(diffusers, cfg["scheduler"]).from_config(pipeline.scheduler.config)
        pipeline.to(cfg.get("device", "cuda" if torch.cuda.is_available() else "cpu"))
        conditions = cfg.get("conditions") or []
        return PipelineModel(name, kind, pipeline, sampler, conditions)
    raise ValueError(f"model.source must be zoo, tiny or pipeline, got {source!r}")


def evaluate_samples(model, samples: torch.Tensor, conditions) -> dict:
    """The zoo evaluator's metrics for zoo models (digit accuracy, classifier Fréchet distance); {} otherwise."""
    zoo_name = getattr(model, "zoo_name", None)
    if zoo_name is None:
        return {}
    from ..zoo import evaluator

    try:
        result = evaluator.evaluate(zoo_name, samples, conditions)
    except FileNotFoundError:
        return {}
    keep = ("digit_accuracy", "classifier_frechet_distance", "colour_accuracy", "position_accuracy",
            "direction_accuracy")
    return {k: result[k] for k in keep if k in result}
