"""Module-level forecasts driven by the gate (``CGTaylorConfig(forecast="modules")``).

Instead of one forecast of the last block's output, every block after the first keeps running on a forecast
step, but its heavy children (attention and feed-forward) return Taylor forecasts of their own outputs, so each
block's normalisation, modulation by the current timestep, gating and residual adds are computed exactly. The gate
is unchanged: the first block is computed at every step and its forecast error decides whether this step's
children compute (and refresh their ladders) or forecast.

Which children are forecast is data, per diffusers block class, the same layout TaylorSeer uses: attention and
MLPs; in FLUX's single-stream blocks, the output projection is forecast and its inputs (attention and the MLP's
input projection) are skipped, returning zeros of their recorded shape, as they feed only that projection.
The cache holds ``order + 1`` tensors per forecast child: far more than the last-block forecast's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers.hooks.hooks import ModelHook
from diffusers.utils.torch_utils import unwrap_module

from .taylor import TaylorLadder

# block class -> (children forecast on a skipped step, children skipped because they feed only a forecast child)
MODULE_LAYOUTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "BasicTransformerBlock": (("attn1", "attn2", "ff"), ()),  # DiT, PixArt
    "FluxTransformerBlock": (("attn", "ff", "ff_context"), ()),
    "FluxSingleTransformerBlock": (("proj_out",), ("attn", "proj_mlp")),
    "WanTransformerBlock": (("attn1", "attn2", "ffn"), ()),
}


@dataclass
class ModuleCache:
    """One child's forecast state within one cache context: a ladder per tensor it returns."""

    ladders: list[TaylorLadder | None] = field(default_factory=list)
    shapes: list[tuple[torch.Size, torch.dtype, torch.device] | None] = field(default_factory=list)
    tuple_output: bool = False

    @property
    def nbytes(self) -> int:
        return sum(ladder.nbytes for ladder in self.ladders if ladder is not None)


def block_children(block: torch.nn.Module) -> list[tuple[str, torch.nn.Module, bool]]:
    """``(name, child, skipped)`` for the children of ``block`` that forecast steps replace."""
    name = type(unwrap_module(block)).__name__
    if name not in MODULE_LAYOUTS:
        raise ValueError(
            f"CGTaylorConfig.forecast='modules' does not know which children of a {name} to forecast; "
            f"known block classes: {sorted(MODULE_LAYOUTS)} (use forecast='residual' or 'last_block')"
        )
    forecast, skipped = MODULE_LAYOUTS[name]
    children = [(n, getattr(block, n, None), False) for n in forecast] + [(n, getattr(block, n, None), True)
                                                                         for n in skipped]
    return [(n, child, skip) for n, child, skip in children if isinstance(child, torch.nn.Module)]


class ModuleForecastHook(ModelHook):
    """On one child of a block: computes and refreshes its ladders, or returns their forecast (or zeros)."""

    def __init__(self, controller, key: str, skipped: bool):
        super().__init__()
        self.controller = controller
        self.key = key
        self.skipped = skipped

    def new_forward(self, module, *args, **kwargs):
        state = self.controller._state()
        cache = state.modules.get(self.key)
        if state.skipping and cache is not None:
            return self._forecast(cache, state.step)
        output = self.fn_ref.original_forward(*args, **kwargs)
        if state.decision.compute:
            state.modules[self.key] = self._refresh(cache, output, state)
        return output

    def _refresh(self, cache: ModuleCache | None, output, state) -> ModuleCache:
        tensors = list(output) if isinstance(output, tuple) else [output]
        if cache is None or len(cache.shapes) != len(tensors) or any(
                s is not None and t is not None and s[0] != t.shape for s, t in zip(cache.shapes, tensors)):
            cache = ModuleCache(tuple_output=isinstance(output, tuple))  # first refresh, or the shapes changed
            cache.shapes = [None if t is None else (t.shape, t.dtype, t.device) for t in tensors]
            cache.ladders = [None if t is None or self.skipped else state.new_ladder() for t in tensors]
        for ladder, tensor in zip(cache.ladders, tensors):
            if ladder is not None:
                ladder.update(tensor, state.step)
        return cache

    def _forecast(self, cache: ModuleCache, step: int):
        outputs = []
        for ladder, shape in zip(cache.ladders, cache.shapes):
            if shape is None:
                outputs.append(None)
            elif ladder is None:
                outputs.append(torch.zeros(shape[0], dtype=shape[1], device=shape[2]))
            else:
                outputs.append(ladder.forecast(step).to(dtype=shape[1], device=shape[2]))
        return tuple(outputs) if cache.tuple_output else outputs[0]


def module_hooks(controller, names: list[str], blocks: list[torch.nn.Module]) -> list[tuple[torch.nn.Module,
                                                                                          ModuleForecastHook]]:
    """The hooks for the children of ``blocks``: those after the probe block, which the gate always computes."""
    hooks = []
    for block_name, block in zip(names, blocks):
        for child_name, child, skipped in block_children(block):
            hooks.append((child, ModuleForecastHook(controller, f"{block_name}.{child_name}", skipped)))
    return hooks
