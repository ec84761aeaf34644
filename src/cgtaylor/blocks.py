"""Finding a diffusers transformer's block sequence and what each block returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.utils.torch_utils import unwrap_module

from . import _diffusers


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
    return sorted(cls.__name__ for cls in _diffusers.registered_block_classes())


def block_metadata(block: torch.nn.Module):
    """diffusers' ``TransformerBlockMetadata`` of ``block``'s class."""
    return _diffusers.block_metadata(unwrap_module(block).__class__)


def hidden_output(metadata, output) -> torch.Tensor:
    """The hidden states in a block's ``output`` (a tensor, or a tuple that also holds encoder hidden states)."""
    return output[metadata.return_hidden_states_index] if isinstance(output, tuple) else output


def identity_output(metadata, args: tuple, kwargs: dict, hidden_states: torch.Tensor | None = None):
    """What the block would return were it the identity on the call ``(args, kwargs)``, with ``hidden_states`` (when
    given) in place of its input hidden states; the encoder hidden states pass through unchanged."""
    if hidden_states is None:
        hidden_states = _diffusers.block_argument(metadata, metadata.hidden_states_argument_name, args, kwargs)
    if metadata.return_encoder_hidden_states_index is None:
        return hidden_states
    encoder_states = _diffusers.block_argument(metadata, metadata.encoder_hidden_states_argument_name, args, kwargs)
    output = [None, None]
    output[metadata.return_hidden_states_index] = hidden_states
    output[metadata.return_encoder_hidden_states_index] = encoder_states
    return tuple(output)


def find_blocks(transformer: torch.nn.Module) -> BlockSequence:
    """The transformer's blocks in execution order, as diffusers' own block caches find them."""
    if not isinstance(transformer, torch.nn.Module):
        raise TypeError(f"Expected a diffusers transformer (torch.nn.Module), got {type(transformer).__name__}")
    names, blocks = [], []
    list_names = _diffusers.transformer_block_list_names()
    for list_name, child in unwrap_module(transformer).named_children():
        if list_name not in list_names or not isinstance(child, torch.nn.ModuleList):
            continue
        for index, block in enumerate(child):
            names.append(f"{list_name}.{index}")
            blocks.append(block)
    if len(blocks) < 2:
        raise ValueError(
            f"{type(transformer).__name__} has {len(blocks)} transformer block(s) in lists named "
            f"{sorted(list_names)}; CG-Taylor needs at least 2 "
            "(diffusers DiT, Flux, Wan and the other transformers whose blocks diffusers' TransformerBlockRegistry describes)"
        )
    unknown = sorted({type(unwrap_module(b)).__name__ for b in blocks} - set(supported_block_classes()))
    if unknown:
        raise TypeError(
            f"{type(transformer).__name__} uses block class(es) {unknown} that diffusers' TransformerBlockRegistry "
            f"does not describe; supported block classes: {supported_block_classes()}"
        )
    return BlockSequence(names, blocks)
