"""``dit-digits``: ``DiTTransformer2DModel`` on 16x16 digits, class-conditional, DDIM with batch-doubled CFG."""
from __future__ import annotations

import numpy as np
import torch

from .zoo_model import ZooModel, condition_offset

NULL_LABEL = 10  # the class label of the unconditional branch (and of dropped labels in training)


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
        s = condition_offset(seed, 10)
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
