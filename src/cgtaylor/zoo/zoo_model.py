"""``ZooModel``: what every zoo model shares (conditions, seeding, batching, devices); one subclass per family.

A sampler calls ``transformer(...)`` exactly once per step (once per CFG branch where the family makes separate
calls) and resets the stateful diffusers hooks at the end, so accelerators attached through diffusers hooks see the
same call pattern as in the real pipelines.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..checks import positive_int
from .families import SAMPLER_DEFAULTS
from .sampling import reset_hooks


def condition_offset(seed: int, m: int) -> int:
    """Where a family's list of default conditions starts for ``seed``: one of ``m`` positions."""
    return int(np.random.default_rng(seed).integers(0, m))


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

    @staticmethod
    def _require_captions(conditions) -> None:
        if isinstance(conditions, str) or not len(conditions):
            raise ValueError("conditions must be a non-empty list of captions")

    def parse(self, conditions: Sequence) -> list:
        raise NotImplementedError

    def default_conditions(self, n: int, seed: int = 0) -> list:
        raise NotImplementedError

    def condition_attributes(self, conditions: Sequence) -> list[dict[str, Any]]:
        """Per condition, the attributes it asks for (digit, colour, position, direction)."""
        raise NotImplementedError

    # --- sampling ----------------------------------------------------------------------------------
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
