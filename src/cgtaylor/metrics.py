"""Fidelity to a full-compute reference, and the FLOPs a generation actually executes."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch.utils.flop_counter import FlopCounterMode


def _as_images(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) images or (B, C, F, H, W) videos -> (N, C, H, W) frames, float32."""
    x = x.detach().float()
    if x.ndim == 5:
        x = x.permute(0, 2, 1, 3, 4).reshape(-1, x.shape[1], x.shape[3], x.shape[4])
    if x.ndim != 4:
        raise ValueError(f"Expected images (B,C,H,W) or videos (B,C,F,H,W), got shape {tuple(x.shape)}")
    return x


def psnr_per_sample(output: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB of each sample (over all its frames) against the reference; inf where identical."""
    diff = (output.detach().float() - reference.detach().float()).flatten(1)
    mse = diff.pow(2).mean(dim=1)
    return 10 * torch.log10(data_range**2 / mse)


def psnr(output: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0) -> float:
    """PSNR in dB over the whole batch."""
    mse = (output.detach().float() - reference.detach().float()).pow(2).mean()
    return float(10 * torch.log10(data_range**2 / mse))


def ssim(output: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0) -> float:
    from torchmetrics.functional.image import structural_similarity_index_measure

    a, b = _as_images(output), _as_images(reference)
    kernel = min(11, a.shape[-1], a.shape[-2])
    kernel -= 1 - kernel % 2  # odd
    return float(structural_similarity_index_measure(a, b, data_range=data_range, kernel_size=kernel))


def relative_l2(output: torch.Tensor, reference: torch.Tensor) -> float:
    reference = reference.detach().float()
    return float((output.detach().float() - reference).norm() / reference.norm().clamp_min(1e-12))


def fidelity(output: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    return {"psnr": psnr(output, reference), "ssim": ssim(output, reference), "rel_l2": relative_l2(output, reference)}


class _TotalsOnly:
    """Stands in for ``FlopCounterMode``'s module tracker: every FLOP counts once, under "Global". The tracker walks
    the module tree on every call, which is slow and recurses forever on models that put a parent under a child
    during their forward (cache-dit's patched transformers)."""

    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def flop_counter() -> FlopCounterMode:
    """A ``FlopCounterMode`` that counts total FLOPs only (``get_total_flops()``), without per-module attribution."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _TotalsOnly()
    return counter


def input_signature(args, kwargs) -> tuple:
    """Shapes and dtypes of a call's tensor arguments: calls with equal signatures run the same FLOPs."""

    def signature(value):
        if isinstance(value, torch.Tensor):
            return (tuple(value.shape), value.dtype)
        if isinstance(value, (tuple, list)):
            return tuple(signature(v) for v in value)
        return None

    return signature(args), tuple(sorted((k, signature(v)) for k, v in kwargs.items()))


class ModuleFlops:
    """Counts the FLOPs executed inside one module (e.g. the transformer) while active."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.total = 0

    @contextmanager
    def counting(self):
        active: list[FlopCounterMode] = []

        def enter(module, args):
            active.append(flop_counter())
            active[-1].__enter__()

        def leave(module, args, output):
            counter = active.pop()
            counter.__exit__(None, None, None)
            self.total += counter.get_total_flops()

        handles = [self.module.register_forward_pre_hook(enter), self.module.register_forward_hook(leave)]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()


def count_flops(fn, module: torch.nn.Module | None = None) -> tuple[object, int]:
    """Run ``fn()`` and return its result with the FLOPs executed (inside ``module`` only, if given)."""
    if module is None:
        with flop_counter() as counter:
            result = fn()
        return result, counter.get_total_flops()
    meter = ModuleFlops(module)
    with meter.counting():
        result = fn()
    return result, meter.total
