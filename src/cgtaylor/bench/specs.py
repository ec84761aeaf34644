"""Model specs of the real-scale benchmark (``conf/real_scale/*.yaml``) and the transformers they describe."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .families import FAMILIES

CONF_DIR = Path(__file__).resolve().parents[3] / "conf" / "real_scale"
MODEL_ORDER = ("dit-xl-2-256", "flux1-dev", "wan2.1-t2v-1.3b")  # cheapest first: the budget favours finishing
GUIDANCE_MODES = ("none", "batch", "calls")  # one pass | cond + uncond in one doubled batch | one call per context


@dataclass
class ModelSpec:
    name: str
    family: str  # a key of bench.families.FAMILIES
    transformer: dict
    inputs: dict
    cfg: str  # none | batch | calls
    num_inference_steps: int
    cg_taylor: dict
    taylorseer: dict
    reduced: bool = False

    @property
    def contexts(self) -> tuple[str, ...]:
        return ("cond", "uncond") if self.cfg == "calls" else ("cond",)


def _spec_path(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file() and (CONF_DIR / f"{path}.yaml").is_file():
        return CONF_DIR / f"{path}.yaml"
    return path


def load_spec(path: str | Path, reduced: bool = False) -> ModelSpec:
    """A model spec from ``conf/real_scale/<name>.yaml`` (or a path); ``reduced`` applies its ``reduced:`` part."""
    from omegaconf import OmegaConf

    path = _spec_path(path)
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    transformer, inputs = dict(raw["transformer"]), dict(raw["inputs"])
    if reduced:
        transformer.update(raw.get("reduced", {}).get("transformer", {}))
        inputs.update(raw.get("reduced", {}).get("inputs", {}))
    if raw["family"] not in FAMILIES:
        raise ValueError(f"{path}: family must be one of {sorted(FAMILIES)}, got {raw['family']!r}")
    cfg = raw.get("cfg", "none")
    if cfg not in GUIDANCE_MODES:
        raise ValueError(f"{path}: cfg must be one of {GUIDANCE_MODES}, got {cfg!r}")
    return ModelSpec(
        name=raw["name"],
        family=raw["family"],
        transformer=transformer,
        inputs=inputs,
        cfg=cfg,
        num_inference_steps=int(raw.get("num_inference_steps", 50)),
        cg_taylor=dict(raw.get("cg_taylor", {})),
        taylorseer=dict(raw.get("taylorseer", {})),
        reduced=reduced,
    )


def build_transformer(spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The diffusers transformer of ``spec`` with random weights (seed 0), created directly on ``device`` in
    ``dtype``."""
    from ..zoo.families import build_transformer as build_random

    return build_random(spec.family, spec.transformer, device=device, dtype=dtype, seed=0).eval().requires_grad_(False)
