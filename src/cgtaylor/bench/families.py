"""What the benchmark knows about each model family, as data: the diffusers class, how its random inputs are
made, how a sigma becomes its timestep, and the guidance the driver applies to its cond/uncond outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class FamilyInputs:
    """Random inputs of one trajectory: the initial latents, keyword arguments of every call, and per cache
    context those of that context's call only (``calls`` guidance: one call per context)."""

    latents: torch.Tensor
    fixed: dict
    per_context: dict[str, dict]


@dataclass(frozen=True)
class Family:
    make_inputs: Callable  # (transformer config, input config, batch, randn, device, dtype) -> FamilyInputs
    timestep_scale: float  # timestep = scale * sigma
    integer_timesteps: bool  # rounded and passed as int64 (DiT's discrete timesteps)
    guidance_scale: float | None  # classifier-free guidance of the driver (None: guidance-distilled, one pass)


def _flux_inputs(cfg: dict, inp: dict, b: int, randn, device, dtype) -> FamilyInputs:
    gh, gw = inp["image_tokens_hw"]
    tokens = gh * gw
    latents = randn(b, tokens, cfg["in_channels"])
    ids = torch.zeros(gh, gw, 3)
    ids[..., 1] = torch.arange(gh)[:, None]
    ids[..., 2] = torch.arange(gw)[None, :]
    fixed = dict(
        encoder_hidden_states=randn(b, inp["text_tokens"], cfg["joint_attention_dim"]),
        pooled_projections=randn(b, cfg["pooled_projection_dim"]),
        img_ids=ids.reshape(tokens, 3).to(device=device, dtype=dtype),
        txt_ids=torch.zeros(inp["text_tokens"], 3, device=device, dtype=dtype),
        guidance=torch.full((b,), float(inp.get("guidance", 3.5)), device=device, dtype=dtype),
    )
    return FamilyInputs(latents, fixed, {})


def _dit_inputs(cfg: dict, inp: dict, b: int, randn, device, dtype) -> FamilyInputs:
    size = cfg["sample_size"]
    latents = randn(b, cfg["in_channels"], size, size)
    null = cfg.get("num_embeds_ada_norm", 1000)
    labels = torch.arange(b) % max(null, 1)
    # cond and uncond in one doubled batch: the labels, then the null label
    return FamilyInputs(latents, dict(class_labels=torch.cat([labels, torch.full_like(labels, null)]).to(device)), {})


def _wan_inputs(cfg: dict, inp: dict, b: int, randn, device, dtype) -> FamilyInputs:
    f, h, w = inp["latent_fhw"]
    latents = randn(b, cfg["in_channels"], f, h, w)
    text = {name: randn(b, inp["text_tokens"], cfg["text_dim"]) for name in ("cond", "uncond")}
    return FamilyInputs(latents, {}, {name: dict(encoder_hidden_states=states) for name, states in text.items()})


FAMILIES: dict[str, Family] = {
    "dit": Family(_dit_inputs, 999.0, integer_timesteps=True, guidance_scale=1.5),
    "flux": Family(_flux_inputs, 1.0, integer_timesteps=False, guidance_scale=None),
    "wan": Family(_wan_inputs, 1000.0, integer_timesteps=False, guidance_scale=5.0),
}


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {name!r}")
    return FAMILIES[name]
