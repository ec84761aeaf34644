"""diffusers' own caches with the knobs the equal-footing protocol opens to every peer.

- FirstBlockCache with a warm-up: diffusers' ``FirstBlockCacheConfig`` has none, so the head hook is replaced by a
  subclass that computes the first ``warmup_steps`` steps of each cache context, then decides as diffusers does.
- MagCache with separate cond / uncond magnitude ratios: diffusers keeps one ``mag_ratios`` list for every cache
  context; MagCache's authors calibrate the conditional and unconditional passes separately. A transformer hook puts
  the current context's config in place before each call.
- MagCache's calibration in code (:func:`magcache_ratios`): per cache context and step, the mean over tokens of
  ``|residual_t| / |residual_{t-1}|`` with residual = last block's output - first block's input, the formula of
  diffusers' calibration mode, read from forward hooks instead of printed output.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from diffusers.hooks import FirstBlockCacheConfig, HookRegistry, MagCacheConfig, apply_first_block_cache, apply_mag_cache
from diffusers.hooks.hooks import BaseState, ModelHook, StateManager

from .. import _diffusers
from ..blocks import block_metadata, find_blocks, hidden_output

MAG_CONTEXT_HOOK = "experiments_mag_context"
CONTEXT_PROBE_HOOK = "experiments_context_probe"


class WarmUp:
    """True for the first ``warmup_steps`` decisions of each FBCache state (one state per cache context)."""

    def __init__(self, warmup_steps: int):
        self.warmup_steps = int(warmup_steps)

    def __call__(self, state) -> bool:
        step = getattr(state, "warmup_step", 0)
        state.warmup_step = step + 1
        return step < self.warmup_steps


def apply_fbcache(transformer: torch.nn.Module, threshold: float, warmup_steps: int = 0) -> None:
    """diffusers' FirstBlockCache; with ``warmup_steps``, its head hook computes the first steps of each context."""
    apply_first_block_cache(transformer, FirstBlockCacheConfig(threshold=float(threshold)))
    if warmup_steps:
        registry = HookRegistry.check_if_exists_or_initialize(find_blocks(transformer).blocks[0])
        name = _diffusers.first_block_cache_head_hook_name()
        plain = registry.get_hook(name)
        registry.remove_hook(name, recurse=False)
        registry.register_hook(_diffusers.fbc_head_hook_with_override(plain, WarmUp(warmup_steps)), name)


class MagContextHook(ModelHook):
    """Before each transformer call, give MagCache's head hook the config of the current cache context."""

    def __init__(self, head_hook, configs: dict[str, MagCacheConfig]):
        super().__init__()
        self.head_hook = head_hook
        self.configs = configs

    def pre_forward(self, module, *args, **kwargs):
        context = _diffusers.current_context(self.head_hook.state_manager)
        name = context.name if context is not None else "cond"
        self.head_hook.config = self.configs.get(name, self.configs["cond"])
        return args, kwargs


def apply_magcache(transformer: torch.nn.Module, *, num_inference_steps: int, mag_ratios, threshold: float,
                   max_skip_steps: int = 3, retention_ratio: float | None = None, warmup_steps: int | None = None,
                   calibrate: bool = False) -> None:
    """diffusers' MagCache; ``mag_ratios`` is one list, or ``{context: list}`` for separate cond / uncond ratios.
    The warm-up is given in steps (``warmup_steps``) or as MagCache's ``retention_ratio``."""
    if warmup_steps is not None:
        retention_ratio = int(warmup_steps) / int(num_inference_steps)
    options = dict(threshold=float(threshold), max_skip_steps=int(max_skip_steps), calibrate=calibrate,
                   num_inference_steps=int(num_inference_steps))
    if retention_ratio is not None:
        options["retention_ratio"] = float(retention_ratio)
    per_context = dict(mag_ratios) if isinstance(mag_ratios, dict) else {"cond": mag_ratios}
    configs = {name: MagCacheConfig(mag_ratios=list(ratios), **options) for name, ratios in per_context.items()}
    apply_mag_cache(transformer, configs["cond"] if "cond" in configs else next(iter(configs.values())))
    if len(configs) > 1:
        head = HookRegistry.check_if_exists_or_initialize(find_blocks(transformer).blocks[0])
        hook = head.get_hook(_diffusers.mag_cache_head_hook_name())
        HookRegistry.check_if_exists_or_initialize(transformer).register_hook(MagContextHook(hook, configs),
                                                                              MAG_CONTEXT_HOOK)


class ContextProbeHook(_diffusers.StatefulModelHook):
    """A stateful no-op hook, so that ``cache_context`` tells it the name of the current context."""

    def __init__(self):
        super().__init__()
        self.state_manager = StateManager(BaseState)

    @property
    def name(self) -> str:
        context = _diffusers.current_context(self.state_manager)
        return context.name if context is not None else "cond"

    def reset_state(self, module):
        return module


class _ResidualRecorder:
    """Per transformer call: the first block's input and the last block's output (hidden states)."""

    def __init__(self, transformer: torch.nn.Module):
        blocks = find_blocks(transformer).blocks
        self.transformer = transformer
        self.probe = ContextProbeHook()
        registry = HookRegistry.check_if_exists_or_initialize(transformer)
        registry.register_hook(self.probe, CONTEXT_PROBE_HOOK)
        registry.invalidate_child_registries_cache()
        self.metadata = block_metadata(blocks[-1])
        self.ratios: dict[str, list[float]] = defaultdict(list)
        self._previous: dict[str, torch.Tensor] = {}
        self._input = None
        self._handles = [
            blocks[0].register_forward_pre_hook(self._enter, with_kwargs=True),
            blocks[-1].register_forward_hook(self._leave, with_kwargs=True),
        ]

    def _enter(self, module, args, kwargs):
        self._input = kwargs.get("hidden_states", args[0] if args else None)

    def _leave(self, module, args, kwargs, output):
        residual = hidden_output(self.metadata, output).float() - self._input.float()
        context = self.probe.name
        previous = self._previous.get(context)
        if previous is None or previous.shape != residual.shape:
            ratio = 1.0
        else:
            ratio = float((residual.norm(dim=-1) / (previous.norm(dim=-1) + 1e-8)).mean())
        self.ratios[context].append(ratio)
        self._previous[context] = residual

    def remove(self):
        for handle in self._handles:
            handle.remove()
        registry = HookRegistry.check_if_exists_or_initialize(self.transformer)
        registry.remove_hook(CONTEXT_PROBE_HOOK, recurse=False)
        registry.invalidate_child_registries_cache()


def magcache_ratios(transformer: torch.nn.Module, generate) -> dict[str, list[float]]:
    """MagCache's per-step magnitude ratios of one full-compute ``generate()`` run, per cache context."""
    recorder = _ResidualRecorder(transformer)
    try:
        generate()
    finally:
        recorder.remove()
    return {name: values for name, values in recorder.ratios.items()}
