"""Finding a diffusers transformer's block sequence and what each block returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.hooks._common import _ALL_TRANSFORMER_BLOCK_IDENTIFIERS
from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
from diffusers.utils.torch_utils import unwrap_module


@dataclass
class BlockSequence:
    names: list[str]
    blocks: list[torch.nn.Module]

    @property
    def last(self) -> torch.nn.Module:
        return self.blocks[-1]

    def probe(self, probe_block: int) -> torch.nn.Module:
        """Block ``probe_block`` (counted from 1), whose output the gate measures."""
        return self.blocks[probe_block - 1]

    def skipped_after(self, probe_block: int) -> list[torch.nn.Module]:
        """The blocks between the probe and the last block: passed through on forecast steps."""
        return self.blocks[probe_block:-1]


def supported_block_classes() -> list[str]:
    TransformerBlockRegistry._register()
    return sorted(cls.__name__ for cls in TransformerBlockRegistry._registry)


def block_metadata(block: torch.nn.Module) -> TransformerBlockMetadata:
    return TransformerBlockRegistry.get(unwrap_module(block).__class__)


def find_blocks(transformer: torch.nn.Module) -> BlockSequence:
    """The transformer's blocks in execution order, as diffusers' own block caches find them."""
    if not isinstance(transformer, torch.nn.Module):
        raise TypeError(f"Expected a diffusers transformer (torch.nn.Module), got {type(transformer).__name__}")
    names, blocks = [], []
    for list_name, child in unwrap_module(transformer).named_children():
        if list_name not in _ALL_TRANSFORMER_BLOCK_IDENTIFIERS or not isinstance(child, torch.nn.ModuleList):
            continue
        for index, block in enumerate(child):
            names.append(f"{list_name}.{index}")
            blocks.append(block)
    if len(blocks) < 2:
        raise ValueError(
            f"{type(transformer).__name__} has {len(blocks)} transformer block(s) in lists named "
            f"{sorted(_ALL_TRANSFORMER_BLOCK_IDENTIFIERS)}; CG-Taylor needs at least 2 "
            "(diffusers DiT, Flux, Wan and the other transformers whose blocks diffusers' TransformerBlockRegistry describes)"
        )
    unknown = sorted({type(unwrap_module(b)).__name__ for b in blocks} - set(supported_block_classes()))
    if unknown:
        raise TypeError(
            f"{type(transformer).__name__} uses block class(es) {unknown} that diffusers' TransformerBlockRegistry "
            f"does not describe; supported block classes: {supported_block_classes()}"
        )
    return BlockSequence(names, blocks)
