"""``flux-digits``: ``FluxTransformer2DModel`` on 32x32 colour digits, rectified flow, caption-conditioned through a
small token embedding. Guidance-distilled as FLUX.1-dev: the guidance strength enters through the guidance embedding
and sampling makes one call per step, no CFG."""
from __future__ import annotations

from typing import Sequence

import torch

from . import data
from .captions import flux_caption, parse_flux_caption, tokenize
from .sampling import flow_euler_sample, flux_ids, pack, unpack
from .zoo_model import ZooModel, condition_offset


class FluxDigits(ZooModel):
    kind = "flux"
    condition_form = "captions ('a {colour} {digit} in the {position}')"

    def parse(self, conditions):
        self._require_captions(conditions)
        return [parse_flux_caption(c) for c in conditions]

    def default_conditions(self, n, seed=0):
        s = condition_offset(seed, 70)
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
