"""The three zoo models: diffusers transformers plus their samplers (captions: :mod:`.captions`).

- ``dit-digits``  : ``DiTTransformer2DModel``, 28 blocks, class-conditional, DDIM, batch-doubled CFG.
- ``flux-digits`` : ``FluxTransformer2DModel``, 19 dual + 38 single blocks, rectified flow, caption
  conditioned through a small token embedding, guidance-distilled as FLUX.1-dev: the guidance strength enters
  through the guidance embedding and sampling makes one call per step, no CFG.
- ``wan-digits``  : ``WanTransformer3DModel``, 30 blocks, flow matching on 8-frame videos, cond/uncond
  passes inside ``cache_context``.

Each sampler calls ``transformer(...)`` exactly once per step (once per CFG branch for Wan) and resets
the stateful diffusers hooks at the end, so accelerators attached through diffusers hooks see the
same call pattern as in the real pipelines.
"""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..checks import positive_int
from . import data
from .captions import CaptionEmbedding, flux_caption, parse_flux_caption, parse_wan_caption, tokenize, wan_caption

NULL_LABEL = 10

# ----------------------------------------------------------------------------------------------------
# Architectures
# ----------------------------------------------------------------------------------------------------
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
FLUX_PATCH = 4


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


# ----------------------------------------------------------------------------------------------------
# Packing and samplers
# ----------------------------------------------------------------------------------------------------
def pack(x: torch.Tensor, p: int = FLUX_PATCH) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/p * W/p, C*p*p) tokens, row-major."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def unpack(t: torch.Tensor, c: int, h: int, w: int, p: int = FLUX_PATCH) -> torch.Tensor:
    b = t.shape[0]
    x = t.view(b, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, h, w)


def flux_ids(h: int, w: int, num_txt: int, p: int = FLUX_PATCH, device=None, dtype=None):
    gh, gw = h // p, w // p
    img = torch.zeros(gh, gw, 3)
    img[..., 1] = torch.arange(gh)[:, None]
    img[..., 2] = torch.arange(gw)[None, :]
    return img.reshape(gh * gw, 3).to(device, dtype), torch.zeros(num_txt, 3, device=device, dtype=dtype)


def reset_hooks(transformer: nn.Module) -> None:
    """Reset stateful diffusers hooks after a sampling call, as the diffusers pipelines do."""
    from diffusers.hooks import HookRegistry

    HookRegistry.check_if_exists_or_initialize(transformer).reset_stateful_hooks()


def flow_euler_sample(velocity: Callable[[torch.Tensor, torch.Tensor, int, float], torch.Tensor],
                      latents: torch.Tensor, num_inference_steps: int, shift: float = 1.0) -> torch.Tensor:
    """Shared rectified-flow Euler loop (``FlowMatchEulerDiscreteScheduler``), sigma 1 -> 0.

    ``velocity(latents, t, step_index, sigma)`` returns the predicted ``noise - x0``; ``t`` is the
    scheduler's timestep (sigma * 1000).
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    n = num_inference_steps
    sched.set_timesteps(sigmas=np.linspace(1.0, 1.0 / n, n).tolist(), device=latents.device)
    for i, t in enumerate(sched.timesteps):
        v = velocity(latents, t, i, float(sched.sigmas[i]))
        latents = sched.step(v, t, latents, return_dict=False)[0]
    return latents


# ----------------------------------------------------------------------------------------------------
# Model wrappers
# ----------------------------------------------------------------------------------------------------
class ZooModel:
    """A zoo model: ``model(conditions, num_inference_steps=50, seed=0, **sampler_kwargs)`` -> samples in [0, 1]."""

    kind: str = ""

    def __init__(self, name: str, transformer: nn.Module, text_encoder: nn.Module | None = None,
                 meta: dict[str, Any] | None = None):
        self.name = name
        self.transformer = transformer.eval()
        self.text_encoder = text_encoder.eval() if text_encoder is not None else None
        self.meta = meta or {}
        self.weights_id: str | None = None  # content hash of the loaded weights file (None: built in memory)
        self.sampler_defaults = dict(SAMPLER_DEFAULTS[self.kind], **self.meta.get("sampler", {}))

    # --- bookkeeping -------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype

    @property
    def num_blocks(self) -> int:
        t = self.transformer
        if self.kind == "flux":
            return len(t.transformer_blocks) + len(t.single_transformer_blocks)
        if self.kind == "wan":
            return len(t.blocks)
        return len(t.transformer_blocks)

    def to(self, device=None, dtype=None) -> "ZooModel":
        self.transformer.to(device=device, dtype=dtype)
        if self.text_encoder is not None:
            self.text_encoder.to(device=device, dtype=dtype)
        return self

    def modules(self) -> dict[str, nn.Module]:
        m = {"transformer": self.transformer}
        if self.text_encoder is not None:
            m["text_encoder"] = self.text_encoder
        return m

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, num_blocks={self.num_blocks})"

    # --- conditions --------------------------------------------------------------------------------
    condition_form = ""  # what one condition is, for error messages

    def _condition_list(self, conditions) -> list:
        if isinstance(conditions, (str, bytes)) or not isinstance(conditions, Iterable):
            raise TypeError(f"{self.name} conditions must be a list of {self.condition_form}, "
                            f"got {type(conditions).__name__} {conditions!r}")
        return list(conditions)

    def parse(self, conditions: Sequence) -> list:
        raise NotImplementedError

    def default_conditions(self, n: int, seed: int = 0) -> list:
        raise NotImplementedError

    def condition_attributes(self, conditions: Sequence) -> list[dict[str, Any]]:
        """Per condition, the attributes it asks for (digit, colour, position, direction)."""
        raise NotImplementedError

    def __call__(self, conditions: Sequence, num_inference_steps: int = 50, seed: int = 0, **kwargs) -> torch.Tensor:
        num_inference_steps = positive_int("num_inference_steps", num_inference_steps)
        conds = self.parse(self._condition_list(conditions))
        unknown = set(kwargs) - set(self.sampler_defaults)
        if unknown:
            raise TypeError(f"{self.name} sampler got unexpected arguments {sorted(unknown)}; accepts {sorted(self.sampler_defaults)}")
        opts = dict(self.sampler_defaults, **kwargs)
        gen = torch.Generator("cpu").manual_seed(int(seed))
        try:
            with torch.no_grad():
                out = self._sample(conds, int(num_inference_steps), gen, **opts)
        finally:
            reset_hooks(self.transformer)
        return ((out.float() + 1) / 2).clamp(0, 1)

    def sample_in_batches(self, conditions: Sequence, batch_size: int, seed: int, num_inference_steps: int = 50,
                          **kwargs) -> torch.Tensor:
        """``self(...)`` over ``conditions`` in batches of ``batch_size``; the batch starting at condition ``i`` is
        seeded ``seed + i``, so a sample does not depend on how many conditions follow it."""
        return torch.cat([self(conditions[i:i + batch_size], num_inference_steps, seed + i, **kwargs)
                          for i in range(0, len(conditions), batch_size)])

    def _sample(self, conds, n, gen, **opts) -> torch.Tensor:
        raise NotImplementedError


def _offset(seed: int, m: int) -> int:
    return int(np.random.default_rng(seed).integers(0, m))


class DiTDigits(ZooModel):
    kind = "dit"
    condition_form = "class labels (integers 0-9)"

    def parse(self, conditions):
        out = []
        for c in conditions:
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= int(c) <= 9:
                raise ValueError(f"dit-digits conditions are class labels: integers 0-9, got {c!r}")
            out.append(int(c))
        if not out:
            raise ValueError("conditions must not be empty")
        return out

    def default_conditions(self, n, seed=0):
        s = _offset(seed, 10)
        return [(k + s) % 10 for k in range(n)]

    def condition_attributes(self, conditions):
        return [{"digit": d} for d in self.parse(conditions)]

    def _sample(self, labels, n, gen, guidance_scale=1.5):
        from diffusers import DDIMScheduler

        t, dev, dt = self.transformer, self.device, self.dtype
        sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                              prediction_type="epsilon")
        sched.set_timesteps(n, device=dev)
        b = len(labels)
        size = t.config.sample_size
        latents = torch.randn(b, t.config.in_channels, size, size, generator=gen).to(dev)
        cls = torch.tensor(labels, device=dev)
        cfg = guidance_scale > 1
        if cfg:
            cls = torch.cat([cls, torch.full_like(cls, NULL_LABEL)])
        for step in sched.timesteps:
            x = torch.cat([latents, latents]) if cfg else latents
            ts = step.expand(x.shape[0]).to(dev)
            eps = t(x.to(dt), timestep=ts, class_labels=cls, return_dict=False)[0].float()
            if cfg:
                cond, uncond = eps.chunk(2)
                eps = uncond + guidance_scale * (cond - uncond)
            latents = sched.step(eps, step, latents, return_dict=False)[0]
        return latents


class FluxDigits(ZooModel):
    kind = "flux"
    condition_form = "captions ('a {colour} {digit} in the {position}')"

    def parse(self, conditions):
        if isinstance(conditions, str) or not len(conditions):
            raise ValueError("conditions must be a non-empty list of captions")
        return [parse_flux_caption(c) for c in conditions]

    def default_conditions(self, n, seed=0):
        s = _offset(seed, 70)
        cols = list(data.COLOURS)
        return [flux_caption((k + s) % 10, cols[(k + s) % 7], data.POSITIONS[(k + s // 7) % 5]) for k in range(n)]

    def condition_attributes(self, conditions):
        return [{"digit": d, "colour": c, "position": p} for d, c, p in self.parse(conditions)]

    def encode(self, captions: Sequence[str]):
        tok = tokenize(captions).to(self.device)
        seq, pooled = self.text_encoder(tok)
        return seq, pooled

    def _sample(self, conds, n, gen, guidance=1.5):
        t, dev, dt = self.transformer, self.device, self.dtype
        b = len(conds)
        seq, pooled = self.encode([flux_caption(*c) for c in conds])
        img_ids, txt_ids = flux_ids(data.CANVAS, data.CANVAS, seq.shape[1], device=dev, dtype=dt)
        latents = pack(torch.randn(b, 3, data.CANVAS, data.CANVAS, generator=gen)).to(dev)
        g = torch.full((b,), float(guidance), device=dev, dtype=dt)

        def velocity(x, ts, i, sigma):
            with t.cache_context("cond", step_index=i, num_inference_steps=n, sigma=sigma):
                return t(hidden_states=x.to(dt), timestep=(ts / 1000).expand(b).to(dt), guidance=g,
                         pooled_projections=pooled.to(dt), encoder_hidden_states=seq.to(dt), txt_ids=txt_ids,
                         img_ids=img_ids, return_dict=False)[0].float()

        latents = flow_euler_sample(velocity, latents, n)
        return unpack(latents, 3, data.CANVAS, data.CANVAS)


class WanDigits(ZooModel):
    kind = "wan"
    condition_form = "captions ('a {digit} moving {direction}')"

    def parse(self, conditions):
        if isinstance(conditions, str) or not len(conditions):
            raise ValueError("conditions must be a non-empty list of captions")
        out = [parse_wan_caption(c) for c in conditions]
        return out

    def default_conditions(self, n, seed=0):
        s = _offset(seed, 40)
        return [wan_caption((k + s) % 10, data.DIRECTIONS[(k + s // 10) % 4]) for k in range(n)]

    def condition_attributes(self, conditions):
        return [{} if c is None else {"digit": c[0], "direction": c[1]} for c in self.parse(conditions)]

    def encode(self, captions: Sequence[str]):
        return self.text_encoder(tokenize(captions).to(self.device))[0]

    def _sample(self, conds, n, gen, guidance_scale=5.0):
        t, dev, dt = self.transformer, self.device, self.dtype
        b = len(conds)
        caps = ["" if c is None else wan_caption(*c) for c in conds]
        cond = self.encode(caps).to(dt)
        cfg = guidance_scale > 1
        uncond = self.encode([""] * b).to(dt) if cfg else None
        latents = torch.randn(b, t.config.in_channels, data.NUM_FRAMES, data.CANVAS, data.CANVAS, generator=gen).to(dev)

        def velocity(x, ts, i, sigma):
            ctx = dict(step_index=i, num_inference_steps=n, sigma=sigma)
            tt = ts.expand(b).to(dt)
            with t.cache_context("cond", **ctx):
                v = t(hidden_states=x.to(dt), timestep=tt, encoder_hidden_states=cond, return_dict=False)[0].float()
            if cfg:
                with t.cache_context("uncond", **ctx):
                    vu = t(hidden_states=x.to(dt), timestep=tt, encoder_hidden_states=uncond, return_dict=False)[0].float()
                v = vu + guidance_scale * (v - vu)
            return v

        return flow_euler_sample(velocity, latents, n)


MODEL_CLASSES = {"dit": DiTDigits, "flux": FluxDigits, "wan": WanDigits}


def new_model(name: str, kind: str, transformer_config: dict | None = None, text_encoder_config: dict | None = None,
              meta: dict | None = None) -> ZooModel:
    """A zoo model of ``kind`` with random weights."""
    tr = build_transformer(kind, transformer_config)
    te = build_text_encoder(kind, text_encoder_config)
    m = dict(meta or {})
    m.setdefault("transformer_config", transformer_config or copy.deepcopy(ARCH[kind]))
    if te is not None:
        m.setdefault("text_encoder_config", te.config)
    return MODEL_CLASSES[kind](name, tr, te, m)
