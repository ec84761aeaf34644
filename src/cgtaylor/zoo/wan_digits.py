"""``wan-digits``: ``WanTransformer3DModel`` on 8-frame 32x32 videos of moving digits, flow matching, with separate
cond and uncond passes inside ``cache_context``."""
from __future__ import annotations

from typing import Sequence

import torch

from . import data
from .captions import parse_wan_caption, tokenize, wan_caption
from .sampling import flow_euler_sample
from .zoo_model import ZooModel, condition_offset


class WanDigits(ZooModel):
    kind = "wan"
    condition_form = "captions ('a {digit} moving {direction}')"

    def parse(self, conditions):
        self._require_captions(conditions)
        out = [parse_wan_caption(c) for c in conditions]
        return out

    def default_conditions(self, n, seed=0):
        s = condition_offset(seed, 40)
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
