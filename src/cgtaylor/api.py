"""One call to accelerate a diffusers pipeline or transformer, and its counterparts."""

from __future__ import annotations

import weakref

import torch
from diffusers.hooks import HookRegistry
from diffusers.utils.torch_utils import unwrap_module

from . import _diffusers
from .blocks import find_blocks
from .config import CGTaylorConfig
from .hooks import (CGTaylorController, CGTaylorTransformerHook, FirstBlockHook, LastBlockHook, MiddleBlockHook,
                    ModulesLastBlockHook)
from .module_forecast import block_children, module_hooks
from .stats import CGTaylorStats

TRANSFORMER_HOOK = "cg_taylor_transformer"
FIRST_BLOCK_HOOK = "cg_taylor_first_block"
MIDDLE_BLOCK_HOOK = "cg_taylor_block"
LAST_BLOCK_HOOK = "cg_taylor_last_block"
MODULE_HOOK = "cg_taylor_module"
_HOOK_NAMES = (TRANSFORMER_HOOK, FIRST_BLOCK_HOOK, MIDDLE_BLOCK_HOOK, LAST_BLOCK_HOOK, MODULE_HOOK)
_PIPELINE_TRANSFORMERS = ("transformer", "transformer_2")


def _scheduler_steps(pipeline) -> int | None:
    scheduler = getattr(pipeline, "scheduler", None)
    timesteps = getattr(scheduler, "timesteps", None)
    return len(timesteps) if timesteps is not None else None


def _targets(target) -> tuple[list[torch.nn.Module], object | None]:
    """The transformers to accelerate and, for a pipeline, a callable giving its current step count.

    A ``torch.compile``d transformer is unwrapped: the hooks go on the model it compiles, which it then retraces.
    """
    if isinstance(target, torch.nn.Module):
        return [unwrap_module(target)], None
    transformers = [getattr(target, name, None) for name in _PIPELINE_TRANSFORMERS]
    transformers = [unwrap_module(t) for t in transformers if isinstance(t, torch.nn.Module)]
    if not transformers:
        raise TypeError(
            "apply_cg_taylor expects a diffusers pipeline with a `transformer` (DiTPipeline, FluxPipeline, "
            f"WanPipeline, ...) or a diffusers transformer model, got {type(target).__name__}"
        )
    pipeline = weakref.ref(target)
    return transformers, lambda: _scheduler_steps(pipeline()) if pipeline() is not None else None


def _controller(transformer: torch.nn.Module) -> CGTaylorController | None:
    registry = _diffusers.hook_registry(transformer)
    hook = registry.get_hook(TRANSFORMER_HOOK) if registry is not None else None
    return hook.controller if hook is not None else None


def _check_probe_block(probe_block: int, transformer: torch.nn.Module, num_blocks: int) -> None:
    if probe_block >= num_blocks:
        raise ValueError(
            f"CGTaylorConfig.probe_block must be in 1..{num_blocks - 1} for {type(transformer).__name__}, which has "
            f"{num_blocks} blocks (the last block is forecast, not measured), got {probe_block}"
        )


def apply_cg_taylor(target, config: CGTaylorConfig | None = None) -> None:
    """Accelerate ``target`` (a diffusers pipeline or transformer) with Confidence-Gated Taylor forecasting.

    Applying again replaces the previous configuration; ``remove_cg_taylor`` restores the plain model.
    """
    config = CGTaylorConfig() if config is None else config
    if not isinstance(config, CGTaylorConfig):
        raise TypeError(f"config must be a CGTaylorConfig, got {type(config).__name__}")
    transformers, steps_provider = _targets(target)
    for transformer in transformers:
        if getattr(transformer, "is_cache_enabled", False):
            raise ValueError(
                f"{type(transformer).__name__} already has a diffusers cache enabled "
                f"({type(_diffusers.enabled_cache_config(transformer)).__name__}); call transformer.disable_cache() first"
            )
        blocks = find_blocks(transformer)  # validates before anything is changed
        _check_probe_block(config.probe_block, transformer, len(blocks.blocks))
        first_forecast_block = 0 if config.decide_ahead else config.probe_block
        if config.forecast == "modules":
            for block in blocks.blocks[first_forecast_block:]:
                block_children(block)  # raises for a block class whose children it does not know
        remove_cg_taylor(transformer)
        controller = CGTaylorController(config, steps_provider, transformer)
        HookRegistry.check_if_exists_or_initialize(transformer).register_hook(
            CGTaylorTransformerHook(controller), TRANSFORMER_HOOK
        )
        HookRegistry.check_if_exists_or_initialize(blocks.probe(config.probe_block)).register_hook(
            FirstBlockHook(controller), FIRST_BLOCK_HOOK
        )
        if config.forecast == "modules":
            # deciding ahead, the first block's children are forecast too: a forecast step runs no block in full
            _register_module_hooks(controller, blocks, first_forecast_block)
        else:
            for block in blocks.skipped_after(config.probe_block):
                HookRegistry.check_if_exists_or_initialize(block).register_hook(
                    MiddleBlockHook(controller), MIDDLE_BLOCK_HOOK
                )
            HookRegistry.check_if_exists_or_initialize(blocks.last).register_hook(
                LastBlockHook(controller), LAST_BLOCK_HOOK
            )
        # cache_context() caches which child modules carry hooks; blocks hooked now must be seen.
        HookRegistry.check_if_exists_or_initialize(transformer).invalidate_child_registries_cache()


def _register_module_hooks(controller: CGTaylorController, blocks, probe_block: int) -> None:
    for child, hook in module_hooks(controller, blocks.names[probe_block:], blocks.blocks[probe_block:]):
        HookRegistry.check_if_exists_or_initialize(child).register_hook(hook, MODULE_HOOK)
    HookRegistry.check_if_exists_or_initialize(blocks.last).register_hook(
        ModulesLastBlockHook(controller), LAST_BLOCK_HOOK
    )


def remove_cg_taylor(target) -> None:
    """Remove every CG-Taylor hook; the model then computes exactly as before."""
    for transformer in _targets(target)[0]:
        if _controller(transformer) is None:
            continue
        registry = HookRegistry.check_if_exists_or_initialize(transformer)
        for name in _HOOK_NAMES:
            registry.remove_hook(name, recurse=True)
        registry.invalidate_child_registries_cache()


def _controllers(target) -> list[CGTaylorController]:
    controllers = [_controller(t) for t in _targets(target)[0]]
    controllers = [c for c in controllers if c is not None]
    if not controllers:
        raise ValueError(f"CG-Taylor is not applied to this {type(target).__name__}; call apply_cg_taylor first")
    return controllers


def reset_cg_taylor(target) -> None:
    """Forget all cached state and statistics: the next call starts a new generation."""
    for controller in _controllers(target):
        controller.reset()
        controller.stats = CGTaylorStats()


def cg_taylor_stats(target) -> CGTaylorStats:
    """Per cache context and step, what the gate decided during the last generation (or since the last reset)."""
    merged = CGTaylorStats()
    for controller in _controllers(target):
        for record in controller.stats.records:
            if isinstance(record.timestep, torch.Tensor):  # kept on the device during the run (no sync per call)
                record.timestep = float(record.timestep)
        merged.records.extend(controller.stats.records)
        for name, nbytes in controller.stats.cache_bytes.items():
            merged.cache_bytes[name] = merged.cache_bytes.get(name, 0) + nbytes
    return merged


def cg_taylor_config(target) -> CGTaylorConfig:
    return _controllers(target)[0].config
