"""Real handwritten digits (scikit-learn's ``load_digits``) and the augmentations the zoo trains on.

Every image the zoo sees is built from the 1797 real 8x8 digits: upsampled to 16x16 (white on black),
then placed and coloured on a 32x32 RGB canvas (flux-digits) or moved across a 32x32 canvas over
8 frames (wan-digits). A fixed, seeded 20% test split is held out from every model and from the
evaluator's training.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

SPLIT_SEED = 0
TEST_FRACTION = 0.2

DIGITS = [str(d) for d in range(10)]
COLOURS = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "magenta": (1.0, 0.0, 1.0),
    "cyan": (0.0, 1.0, 1.0),
    "white": (1.0, 1.0, 1.0),
}
POSITIONS = ["top left", "top right", "bottom left", "bottom right", "center"]
DIRECTIONS = ["left", "right", "up", "down"]

CANVAS = 32
DIGIT = 16
NUM_FRAMES = 8
# top-left corner (row, col) of the 16x16 digit box for each position on the 32x32 canvas
POSITION_BOX = {
    "top left": (0, 0),
    "top right": (0, 16),
    "bottom left": (16, 0),
    "bottom right": (16, 16),
    "center": (8, 8),
}


@lru_cache(maxsize=None)
def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.images.astype(np.float32) / 16.0
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y
    )
    return xtr, ytr, xte, yte


def digits16(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Real digits of a split as (N, 1, 16, 16) floats in [0, 1] (white on black) and (N,) labels."""
    xtr, ytr, xte, yte = _split()
    x, y = (xtr, ytr) if split == "train" else (xte, yte)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    t = torch.from_numpy(x)[:, None]
    t = F.interpolate(t, size=(DIGIT, DIGIT), mode="bilinear", align_corners=False).clamp(0, 1)
    return t, torch.from_numpy(y)


def place(digit: torch.Tensor, row: int, col: int, canvas: int = CANVAS) -> torch.Tensor:
    """Paste a (C, 16, 16) digit at (row, col) of a black (C, canvas, canvas) image; clipped at edges."""
    c, h, w = digit.shape
    out = digit.new_zeros(c, canvas, canvas)
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + h, canvas), min(col + w, canvas)
    if r1 > r0 and c1 > c0:
        out[:, r0:r1, c0:c1] = digit[:, r0 - row : r1 - row, c0 - col : c1 - col]
    return out


def colour_scene(digit: torch.Tensor, colour: str, position: str, jitter: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """A (3, 32, 32) RGB canvas with a (1, 16, 16) digit tinted ``colour`` at ``position``."""
    rgb = torch.tensor(COLOURS[colour]).view(3, 1, 1) * digit
    r, c = POSITION_BOX[position]
    r = min(max(r + jitter[0], 0), CANVAS - DIGIT)
    c = min(max(c + jitter[1], 0), CANVAS - DIGIT)
    return place(rgb, r, c)


def motion_path(direction: str, offset: int, num_frames: int = NUM_FRAMES) -> list[tuple[int, int]]:
    """Top-left corners (row, col) of the digit box over the frames of a video moving ``direction``."""
    along = np.linspace(0, CANVAS - DIGIT, num_frames).round().astype(int).tolist()
    if direction in ("left", "up"):
        along = along[::-1]
    if direction in ("left", "right"):
        return [(offset, a) for a in along]
    return [(a, offset) for a in along]


def motion_video(digit: torch.Tensor, direction: str, offset: int = 8, num_frames: int = NUM_FRAMES) -> torch.Tensor:
    """A (1, F, 32, 32) video of a (1, 16, 16) digit crossing a black canvas in ``direction``."""
    frames = [place(digit, r, c) for r, c in motion_path(direction, offset, num_frames)]
    return torch.stack(frames, dim=1)


def sample_batch(kind: str, n: int, generator: torch.Generator, split: str = "train"):
    """A random training batch for model ``kind`` from the real digits of ``split``.

    Returns (x in [0, 1], conditions): dit -> (n,1,16,16) and int labels; flux -> (n,3,32,32) and
    (digit, colour, position) tuples; wan -> (n,1,F,32,32) and (digit, direction) tuples.
    """
    x, y = digits16(split)
    idx = torch.randint(0, len(x), (n,), generator=generator)
    if kind == "dit":
        return x[idx], [int(v) for v in y[idx]]
    if kind == "flux":
        ci = torch.randint(0, len(COLOURS), (n,), generator=generator)
        pi = torch.randint(0, len(POSITIONS), (n,), generator=generator)
        jit = torch.randint(-2, 3, (n, 2), generator=generator)
        names = list(COLOURS)
        imgs, conds = [], []
        for k in range(n):
            col, pos = names[int(ci[k])], POSITIONS[int(pi[k])]
            imgs.append(colour_scene(x[idx[k]], col, pos, (int(jit[k, 0]), int(jit[k, 1]))))
            conds.append((int(y[idx[k]]), col, pos))
        return torch.stack(imgs), conds
    if kind == "wan":
        di = torch.randint(0, len(DIRECTIONS), (n,), generator=generator)
        off = torch.randint(4, 13, (n,), generator=generator)
        vids, conds = [], []
        for k in range(n):
            d = DIRECTIONS[int(di[k])]
            vids.append(motion_video(x[idx[k]], d, int(off[k])))
            conds.append((int(y[idx[k]]), d))
        return torch.stack(vids), conds
    raise ValueError(f"unknown kind {kind!r}")
