"""The zoo's captions: their grammars (FLUX: "a {colour} {digit} in the {position}"; Wan: "a {digit} moving
{direction}"), word-level tokens, and the small text encoder that embeds them."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from . import data

PAD, NULL = "<pad>", "<null>"
VOCAB = [PAD, NULL, "a", "in", "the", "moving", *data.COLOURS, *data.DIGITS,
         "top", "bottom", "left", "right", "center", "up", "down"]
TOKEN_ID = {w: i for i, w in enumerate(VOCAB)}
MAX_TOKENS = 8


def _bad(field: str, value: str, accepted: Sequence[str]) -> ValueError:
    return ValueError(f"caption {field} {value!r} not accepted; accepted {field}s: {list(accepted)}")


def parse_flux_caption(caption: str) -> tuple[int, str, str]:
    """Parse "a {colour} {digit} in the {position}" -> (digit, colour, position); ValueError otherwise."""
    if not isinstance(caption, str):
        raise ValueError(f"caption must be a string, got {type(caption).__name__}")
    w = caption.strip().split()
    form = "captions read 'a {colour} {digit} in the {position}'"
    if len(w) < 6 or w[0] != "a" or w[3:5] != ["in", "the"]:
        raise ValueError(f"caption {caption!r} does not follow the grammar: {form}")
    colour, digit, position = w[1], w[2], " ".join(w[5:])
    if colour not in data.COLOURS:
        raise _bad("colour", colour, list(data.COLOURS))
    if digit not in data.DIGITS:
        raise _bad("digit", digit, data.DIGITS)
    if position not in data.POSITIONS:
        raise _bad("position", position, data.POSITIONS)
    return int(digit), colour, position


def parse_wan_caption(caption: str) -> tuple[int, str] | None:
    """Parse "a {digit} moving {direction}" -> (digit, direction); "" (null caption) -> None."""
    if not isinstance(caption, str):
        raise ValueError(f"caption must be a string, got {type(caption).__name__}")
    if caption.strip() == "":
        return None
    w = caption.strip().split()
    if len(w) != 4 or w[0] != "a" or w[2] != "moving":
        raise ValueError(f"caption {caption!r} does not follow the grammar: captions read 'a {{digit}} moving {{direction}}'")
    if w[1] not in data.DIGITS:
        raise _bad("digit", w[1], data.DIGITS)
    if w[3] not in data.DIRECTIONS:
        raise _bad("direction", w[3], data.DIRECTIONS)
    return int(w[1]), w[3]


def flux_caption(digit: int, colour: str, position: str) -> str:
    return f"a {colour} {digit} in the {position}"


def wan_caption(digit: int, direction: str) -> str:
    return f"a {digit} moving {direction}"


def tokenize(captions: Sequence[str]) -> torch.Tensor:
    """Word-level token ids (B, MAX_TOKENS); the empty caption becomes the null token."""
    rows = []
    for c in captions:
        words = c.strip().split() or [NULL]
        ids = [TOKEN_ID[w] for w in words][:MAX_TOKENS]
        rows.append(ids + [TOKEN_ID[PAD]] * (MAX_TOKENS - len(ids)))
    return torch.tensor(rows, dtype=torch.long)


class CaptionEmbedding(nn.Module):
    """The zoo's own small text encoder: word embeddings + positions -> MLP -> per-token states and a pooled vector."""

    def __init__(self, dim: int = 64, out_dim: int = 64, pooled_dim: int | None = None,
                 vocab_size: int = len(VOCAB), max_tokens: int = MAX_TOKENS):
        super().__init__()
        self.config = dict(dim=dim, out_dim=out_dim, pooled_dim=pooled_dim, vocab_size=vocab_size, max_tokens=max_tokens)
        self.tok = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.randn(max_tokens, dim) * 0.02)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * 2), nn.GELU(), nn.Linear(dim * 2, dim))
        self.out = nn.Linear(dim, out_dim)
        self.pool = nn.Linear(dim, pooled_dim) if pooled_dim else None

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.tok(tokens) + self.pos[: tokens.shape[1]]
        h = h + self.mlp(h)
        pooled = self.pool(h.mean(dim=1)) if self.pool is not None else None
        return self.out(h), pooled
