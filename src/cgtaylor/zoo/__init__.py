"""Demo model zoo: small diffusers transformers trained on real handwritten digits.

``zoo.load(name)`` gives a model standing in for one paper model:

- ``"dit-digits"``  (DiT-XL/2 stand-in): ``model([3, 7], num_inference_steps=50, seed=0, guidance_scale=1.5)``
  -> (B, 1, 16, 16) images.
- ``"flux-digits"`` (FLUX.1-dev stand-in): ``model(["a red 3 in the top left"], guidance=1.5)``
  -> (B, 3, 32, 32) images.
- ``"wan-digits"``  (Wan2.1 stand-in): ``model(["a 3 moving left"], guidance_scale=5.0)``
  -> (B, 1, 8, 32, 32) videos.

All samples are float tensors in [0, 1]. ``model.transformer`` is the diffusers module.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import torch

from ..checks import compute_dtype
from ..io import file_digest
from .captions import (  # noqa: F401
    CaptionEmbedding, flux_caption, parse_flux_caption, parse_wan_caption, tokenize, wan_caption,
)
from .dit_digits import DiTDigits  # noqa: F401
from .families import ARCH, NAME_KIND, TINY_OVERRIDES, build_text_encoder, build_transformer  # noqa: F401
from .flux_digits import FluxDigits  # noqa: F401
from .models import new_model
from .wan_digits import WanDigits  # noqa: F401
from .zoo_model import ZooModel

MODEL_NAMES = ("dit-digits", "flux-digits", "wan-digits")
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def tiny(name: str, seed: int = 0) -> ZooModel:
    """A random-weight, shallow version of zoo model ``name`` (for fast tests)."""
    kind = _kind(name)
    cfg = dict(ARCH[kind], **TINY_OVERRIDES[kind])
    torch.manual_seed(seed)
    return new_model(name, kind, cfg)


def _kind(name: str) -> str:
    if name not in NAME_KIND:
        raise ValueError(f"unknown zoo model {name!r}; available: {list(MODEL_NAMES)}")
    return NAME_KIND[name]


def save(model: ZooModel, directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``<name>.safetensors`` + ``<name>.json`` into ``directory`` (atomically: temp file then replace)."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for prefix, mod in model.modules().items():
        for k, v in mod.state_dict().items():
            tensors[f"{prefix}.{k}"] = v.detach().to("cpu").contiguous()
    meta = dict(model.meta)
    meta.update(extra or {})
    meta.update(name=model.name, kind=model.kind, transformer_class=type(model.transformer).__name__,
                transformer_config=_plain(meta["transformer_config"]))
    st, js = d / f"{model.name}.safetensors", d / f"{model.name}.json"
    save_file(tensors, str(st) + ".tmp")
    os.replace(str(st) + ".tmp", st)
    with open(str(js) + ".tmp", "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    os.replace(str(js) + ".tmp", js)
    return js


def _plain(cfg: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dict(cfg).items()}


def _resolve(name_or_path: str | os.PathLike) -> Path:
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"zoo model name must be one of {list(MODEL_NAMES)} or a path to saved weights "
                        f"(a directory or a .json / .safetensors file), got {type(name_or_path).__name__}")
    if not str(name_or_path).strip():
        raise ValueError(f"zoo model name is empty; give one of {list(MODEL_NAMES)} or a path to saved weights")
    if str(name_or_path) in NAME_KIND:
        p = WEIGHTS_DIR / f"{name_or_path}.json"
        if not p.exists():
            raise FileNotFoundError(f"no shipped weights for {name_or_path!r} at {p}; train them with scripts/train_zoo.py")
        return p
    p = Path(name_or_path)
    if p.suffix == ".json" and p.is_file():
        return p
    if p.suffix == ".safetensors" and p.is_file():
        return p.with_suffix(".json")
    if p.is_dir():
        cands = sorted(j for j in p.glob("*.json") if j.with_suffix(".safetensors").exists())
        if len(cands) == 1:
            return cands[0]
        if cands:
            raise ValueError(f"{p} holds several zoo models ({[c.stem for c in cands]}); pass one of the .json files")
        raise FileNotFoundError(f"no <name>.json + <name>.safetensors pair in {p}")
    raise ValueError(f"unknown zoo model {str(name_or_path)!r}; available: {list(MODEL_NAMES)} or a path to saved weights")


def weights_id(name_or_path: str | os.PathLike) -> str:
    """A short content hash of a zoo model's weights file: what results computed from the model are keyed by."""
    weights = _resolve(name_or_path).with_suffix(".safetensors").resolve()
    stat = weights.stat()
    return _weights_digest(str(weights), stat.st_ino, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _weights_digest(path: str, inode: int, mtime_ns: int, size: int) -> str:
    # keyed by the file's identity too, so a file rewritten in place is hashed again: zoo.save replaces the file
    # (new inode), which the key catches even where timestamps are too coarse to tell two quick saves apart
    return file_digest(path, "sha1")[:12]


def load(name: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | str = torch.float32) -> ZooModel:
    """Load a shipped zoo model by name (see ``MODEL_NAMES``) or a saved one from a directory / .json path;
    ``dtype`` is a torch dtype or its name (``"bfloat16"``)."""
    from safetensors.torch import load_file

    dtype = compute_dtype("zoo.load dtype", dtype)
    js = _resolve(name)
    meta = json.loads(js.read_text())
    model = new_model(meta["name"], meta["kind"], meta["transformer_config"], meta.get("text_encoder_config"), meta)
    state = load_file(str(js.with_suffix(".safetensors")))
    for prefix, mod in model.modules().items():
        sub = {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}
        mod.load_state_dict(sub, strict=True)
    if torch.device(device) != torch.device("cpu") or dtype != torch.float32:
        model.to(device=device, dtype=dtype)
    model.weights_id = weights_id(js)
    return model


__all__ = ["MODEL_NAMES", "WEIGHTS_DIR", "ZooModel", "load", "save", "tiny", "weights_id", "build_transformer",
           "build_text_encoder", "parse_flux_caption", "parse_wan_caption", "flux_caption", "wan_caption"]
