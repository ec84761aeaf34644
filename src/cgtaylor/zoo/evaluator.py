"""Evaluator for zoo samples: a small CNN digit classifier trained on the real digits' training split.

It gives the conditional accuracy of generated samples and a *classifier Fréchet distance*: the
Fréchet distance between Gaussian fits of the CNN's 64-d penultimate features on generated samples and
on the held-out real test digits (not an FID: the feature network is this small CNN, not Inception).
Attribute checks for captions read the pixels directly: colour (dominant channel mix), position
(centre of mass quadrant) and direction of motion (centre-of-mass trajectory over frames).
"""
from __future__ import annotations

import json
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import data

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
EVALUATOR_FILE = "evaluator"


class DigitCNN(nn.Module):
    def __init__(self, feat_dim: int = 64):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.feat = nn.Linear(64 * 4 * 4, feat_dim)
        self.head = nn.Linear(feat_dim, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feat(self.conv(x).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.features(x)))


# ----------------------------------------------------------------------------------------------------
# Pixel-level helpers
# ----------------------------------------------------------------------------------------------------
def to_gray(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) in [0, 1] -> (B, 1, H, W): the brightest channel (a blue digit stays bright)."""
    return x.amax(dim=1, keepdim=True) if x.shape[1] > 1 else x


def center_of_mass(gray: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) -> (B, 2) intensity-weighted (row, col); the canvas centre for a blank image."""
    b, _, h, w = gray.shape
    g = gray[:, 0].float().clamp(min=0)
    m = g.sum(dim=(1, 2))
    rows = torch.arange(h, dtype=torch.float32).view(1, h, 1)
    cols = torch.arange(w, dtype=torch.float32).view(1, 1, w)
    r = (g * rows).sum(dim=(1, 2)) / m.clamp(min=1e-8)
    c = (g * cols).sum(dim=(1, 2)) / m.clamp(min=1e-8)
    blank = m < 1e-6
    r = torch.where(blank, torch.full_like(r, (h - 1) / 2), r)
    c = torch.where(blank, torch.full_like(c, (w - 1) / 2), c)
    return torch.stack([r, c], dim=1)


def crop_digit(x: torch.Tensor, size: int = data.DIGIT) -> torch.Tensor:
    """Grayscale 16x16 crops centred on each image's centre of mass (16x16 inputs pass through)."""
    g = to_gray(x)
    b, _, h, w = g.shape
    if h == size and w == size:
        return g
    com = center_of_mass(g)
    out = []
    for k in range(b):
        r0 = int(round(float(com[k, 0]) - (size - 1) / 2))
        c0 = int(round(float(com[k, 1]) - (size - 1) / 2))
        r0, c0 = min(max(r0, 0), h - size), min(max(c0, 0), w - size)
        out.append(g[k, :, r0:r0 + size, c0:c0 + size])
    return torch.stack(out)


def dominant_colour(rgb: torch.Tensor) -> list[str]:
    """Name of each (3, H, W) image's colour: mean RGB over its bright pixels, nearest named colour."""
    names = list(data.COLOURS)
    ref = torch.tensor([data.COLOURS[n] for n in names])
    out = []
    for img in rgb:
        g = img.amax(dim=0)
        mask = g >= 0.5 * g.max().clamp(min=1e-6)
        mean = img[:, mask].mean(dim=1)
        mean = mean / mean.max().clamp(min=1e-6)
        out.append(names[int(((ref - mean) ** 2).sum(dim=1).argmin())])
    return out


def position_of(x: torch.Tensor, center_radius: float = 4.0) -> list[str]:
    """Position of each image's content: "center" if its centre of mass lies within ``center_radius`` px
    (per axis) of the canvas centre, otherwise the quadrant of the centre of mass."""
    g = to_gray(x)
    h, w = g.shape[-2:]
    com = center_of_mass(g)
    out = []
    for r, c in com.tolist():
        dr, dc = r - (h - 1) / 2, c - (w - 1) / 2
        if abs(dr) < center_radius and abs(dc) < center_radius:
            out.append("center")
        else:
            out.append(("top" if dr < 0 else "bottom") + " " + ("left" if dc < 0 else "right"))
    return out


def direction_of(videos: torch.Tensor) -> list[str]:
    """Direction of motion of each (C, F, H, W) video from its first- to last-frame centre of mass."""
    out = []
    for v in videos:
        frames = to_gray(v.transpose(0, 1))  # (F, 1, H, W)
        com = center_of_mass(frames)
        dr, dc = (com[-1] - com[0]).tolist()
        if abs(dc) >= abs(dr):
            out.append("right" if dc > 0 else "left")
        else:
            out.append("down" if dr > 0 else "up")
    return out


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two feature sets (rows are samples)."""
    from scipy import linalg

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        eps = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def wilson_interval(accuracy: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion measured as ``accuracy`` on ``n`` independent samples."""
    if n <= 0:
        raise ValueError(f"n must be a positive sample count, got {n}")
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


# ----------------------------------------------------------------------------------------------------
# Training and loading the classifier
# ----------------------------------------------------------------------------------------------------
def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Real 16x16 digits -> placed at random on a 32x32 canvas and re-cropped by centre of mass (half the
    batch), with random contrast and light noise, so the CNN sees what ``crop_digit`` gives it."""
    b = x.shape[0]
    pos = torch.randint(0, data.CANVAS - data.DIGIT + 1, (b, 2), generator=gen)
    placed = torch.stack([data.place(x[k], int(pos[k, 0]), int(pos[k, 1])) for k in range(b)])
    cropped = crop_digit(placed)
    use = (torch.rand(b, generator=gen) < 0.5).view(b, 1, 1, 1)
    y = torch.where(use, cropped, x)
    y = y * (0.6 + 0.4 * torch.rand(b, 1, 1, 1, generator=gen))
    y = y + 0.05 * torch.rand(b, 1, 1, 1, generator=gen) * torch.randn(y.shape, generator=gen)
    return y.clamp(0, 1)


def train_evaluator(seed: int = 0, steps: int = 1500, batch_size: int = 128, lr: float = 2e-3,
                    out_dir: str | os.PathLike | None = WEIGHTS_DIR, progress: bool = True) -> tuple[DigitCNN, dict]:
    from safetensors.torch import save_file
    from tqdm import tqdm

    torch.manual_seed(seed)
    xtr, ytr = data.digits16("train")
    xte, yte = data.digits16("test")
    net = DigitCNN()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in tqdm(range(steps), desc="evaluator", disable=not progress, mininterval=5, ncols=100):
        idx = torch.randint(0, len(xtr), (batch_size,), generator=gen)
        loss = F.cross_entropy(net(_augment(xtr[idx], gen)), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    with torch.no_grad():
        acc = float((net(xte).argmax(1) == yte).float().mean())
        acc_crop = float((net(_augment(xte, torch.Generator().manual_seed(1))).argmax(1) == yte).float().mean())
    info = dict(steps=steps, batch_size=batch_size, lr=lr, seed=seed, train_minutes=round((time.perf_counter() - t0) / 60, 2),
                test_accuracy=round(acc, 4), test_accuracy_augmented=round(acc_crop, 4), num_test=len(yte),
                torch_version=torch.__version__)
    if out_dir is not None:
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        st = d / f"{EVALUATOR_FILE}.safetensors"
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(st) + ".tmp")
        os.replace(str(st) + ".tmp", st)
        js = d / f"{EVALUATOR_FILE}.json"
        js.with_suffix(".json.tmp").write_text(json.dumps(info, indent=2))
        os.replace(js.with_suffix(".json.tmp"), js)
    return net, info


@lru_cache(maxsize=4)
def load_evaluator(directory: str | None = None) -> DigitCNN:
    from safetensors.torch import load_file

    p = Path(directory or WEIGHTS_DIR) / f"{EVALUATOR_FILE}.safetensors"
    if not p.exists():
        raise FileNotFoundError(f"no evaluator weights at {p}; train them with scripts/train_zoo.py")
    net = DigitCNN()
    net.load_state_dict(load_file(str(p)))
    return net.eval()


@torch.no_grad()
def classify(x: torch.Tensor, net: DigitCNN | None = None) -> torch.Tensor:
    """Predicted digit of each image (any channels / size; cropped around its centre of mass)."""
    net = net or load_evaluator()
    return net(crop_digit(x.float().cpu())).argmax(1)


@torch.no_grad()
def features(x: torch.Tensor, net: DigitCNN | None = None) -> np.ndarray:
    net = net or load_evaluator()
    return net.features(crop_digit(x.float().cpu())).numpy()


@lru_cache(maxsize=4)
def _reference_features(directory: str | None = None) -> np.ndarray:
    x, _ = data.digits16("test")
    return features(x, load_evaluator(directory))


def frames_of(videos: torch.Tensor) -> torch.Tensor:
    """(B, C, F, H, W) -> (B*F, C, H, W)."""
    b, c, f, h, w = videos.shape
    return videos.transpose(1, 2).reshape(b * f, c, h, w)


def evaluate(name: str, samples: torch.Tensor, conditions: Sequence, evaluator_dir: str | None = None) -> dict[str, Any]:
    """Metrics of zoo samples against the conditions that produced them.

    Returns digit_accuracy (per frame for videos), classifier_frechet_distance (against held-out real
    test digits), and colour_accuracy / position_accuracy (flux-digits) or direction_accuracy (wan-digits).
    """
    from .captions import parse_flux_caption, parse_wan_caption
    from .dit_digits import DiTDigits

    net = load_evaluator(evaluator_dir)
    samples = samples.float().cpu()
    if name == "dit-digits":
        attrs = [{"digit": d} for d in DiTDigits.parse(None, conditions)]
    elif name == "flux-digits":
        attrs = [{"digit": d, "colour": c, "position": p} for d, c, p in map(parse_flux_caption, conditions)]
    elif name == "wan-digits":
        attrs = [{"digit": c[0], "direction": c[1]} for c in map(parse_wan_caption, conditions)]
    else:
        raise ValueError(f"unknown zoo model {name!r}")
    if len(attrs) != samples.shape[0]:
        raise ValueError(f"{samples.shape[0]} samples but {len(attrs)} conditions")
    out: dict[str, Any] = {"num_samples": int(samples.shape[0])}
    if name == "wan-digits":
        frames = frames_of(samples)
        f = samples.shape[2]
        want = torch.tensor([a["digit"] for a in attrs]).repeat_interleave(f)
        pred = classify(frames, net)
        out["digit_accuracy"] = float((pred == want).float().mean())
        out["direction_accuracy"] = float(np.mean([p == a["direction"] for p, a in zip(direction_of(samples), attrs)]))
        feats = features(frames, net)
    else:
        want = torch.tensor([a["digit"] for a in attrs])
        out["digit_accuracy"] = float((classify(samples, net) == want).float().mean())
        if name == "flux-digits":
            out["colour_accuracy"] = float(np.mean([p == a["colour"] for p, a in zip(dominant_colour(samples), attrs)]))
            out["position_accuracy"] = float(np.mean([p == a["position"] for p, a in zip(position_of(samples), attrs)]))
        feats = features(samples, net)
    if feats.shape[0] >= 2:
        out["classifier_frechet_distance"] = frechet_distance(feats, _reference_features(evaluator_dir))
    return out
