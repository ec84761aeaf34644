"""The zoo's model families as data: architecture, shallow test variant, sampler defaults, and their builders.

- ``dit``  (``dit-digits``)  : ``DiTTransformer2DModel``, 28 blocks, class-conditional.
- ``flux`` (``flux-digits``) : ``FluxTransformer2DModel``, 19 dual + 38 single blocks, guidance-embedded.
- ``wan``  (``wan-digits``)  : ``WanTransformer3DModel``, 30 blocks, 8-frame videos.
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn as nn

from .captions import CaptionEmbedding

ARCH: dict[str, dict[str, Any]] = {
    "dit": dict(
        num_attention_heads=2, attention_head_dim=32, in_channels=1, out_channels=1, num_layers=28,
        sample_size=16, patch_size=2, num_embeds_ada_norm=10, norm_type="ada_norm_zero",
    ),
    "flux": dict(
        patch_size=1, in_channels=48, out_channels=48, num_layers=19, num_single_layers=38,
        attention_head_dim=32, num_attention_heads=2, joint_attention_dim=64, pooled_projection_dim=64,
        guidance_embeds=True, axes_dims_rope=[8, 12, 12],
    ),
    "wan": dict(
        patch_size=[2, 4, 4], num_attention_heads=2, attention_head_dim=32, in_channels=1, out_channels=1,
        text_dim=64, freq_dim=64, ffn_dim=256, num_layers=30, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
    ),
}
TINY_OVERRIDES = {
    "dit": dict(num_layers=2),
    "flux": dict(num_layers=1, num_single_layers=2),
    "wan": dict(num_layers=2),
}
SAMPLER_DEFAULTS = {
    "dit": dict(guidance_scale=1.5),
    "flux": dict(guidance=1.5),
    "wan": dict(guidance_scale=5.0),
}
NAME_KIND = {"dit-digits": "dit", "flux-digits": "flux", "wan-digits": "wan"}


def build_transformer(kind: str, cfg: dict[str, Any] | None = None, *, device: torch.device | None = None,
                      dtype: torch.dtype | None = None, seed: int | None = None) -> nn.Module:
    """A randomly initialised diffusers transformer of ``kind`` ("dit", "flux", "wan", or a zoo model name)
    from ``cfg`` (default: the zoo's architecture); list values (``patch_size``, ``axes_dims_rope``) become tuples.

    ``device`` / ``dtype``: where and in which dtype the parameters are created (no float32 copy of a large model on
    the way; default: torch's defaults); ``seed``: seeds torch's generator first (default: left as it is).
    """
    kind = NAME_KIND.get(kind, kind)
    from diffusers import DiTTransformer2DModel, FluxTransformer2DModel, WanTransformer3DModel

    cls = {"dit": DiTTransformer2DModel, "flux": FluxTransformer2DModel, "wan": WanTransformer3DModel}
    if kind not in cls:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(cls)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in (ARCH[kind] if cfg is None else cfg).items()}
    if seed is not None:
        torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    try:
        torch.set_default_dtype(dtype or previous)
        with torch.device(device) if device is not None else contextlib.nullcontext():
            return cls[kind](**kwargs)
    finally:
        torch.set_default_dtype(previous)


def build_text_encoder(kind: str, cfg: dict[str, Any] | None = None) -> CaptionEmbedding | None:
    kind = NAME_KIND.get(kind, kind)
    if kind == "dit":
        return None
    if cfg is None:
        cfg = dict(dim=64, out_dim=64, pooled_dim=64) if kind == "flux" else dict(dim=64, out_dim=64, pooled_dim=None)
    return CaptionEmbedding(**cfg)
