"""Fidelity to a full-compute reference: PSNR, SSIM, relative L2 (what a generation costs: :mod:`cgtaylor.meters`)."""

from __future__ import annotations

import torch


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
