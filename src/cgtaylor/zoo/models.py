"""The zoo's model classes by family and ``new_model``, which builds one with random weights.

One module per family holds the model and its sampler: :mod:`.dit_digits`, :mod:`.flux_digits`,
:mod:`.wan_digits`; the families' architectures are data in :mod:`.families`, what the samplers share is in
:mod:`.sampling`, the captions in :mod:`.captions`.
"""
from __future__ import annotations

import copy

from .dit_digits import DiTDigits
from .families import ARCH, build_text_encoder, build_transformer
from .flux_digits import FluxDigits
from .wan_digits import WanDigits
from .zoo_model import ZooModel

MODEL_CLASSES: dict[str, type[ZooModel]] = {"dit": DiTDigits, "flux": FluxDigits, "wan": WanDigits}


def new_model(name: str, kind: str, transformer_config: dict | None = None, text_encoder_config: dict | None = None,
              meta: dict | None = None) -> ZooModel:
    """A zoo model of ``kind`` with random weights."""
    tr = build_transformer(kind, transformer_config)
    te = build_text_encoder(kind, text_encoder_config)
    m = dict(meta or {})
    m.setdefault("transformer_config", transformer_config or copy.deepcopy(ARCH[kind]))
    if te is not None:
        m.setdefault("text_encoder_config", te.config)
    return MODEL_CLASSES[kind](name, tr, te, m)
