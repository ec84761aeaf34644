"""What the zoo samplers share: FLUX's token packing and position ids, the rectified-flow Euler loop, and the reset
of stateful diffusers hooks after a generation."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn as nn

FLUX_PATCH = 4


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
