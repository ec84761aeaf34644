"""Small diffusers hooks used by the experiment runner.

- :class:`DefaultContextHook`: sets a cache context around a transformer call when the sampler sets none
  (DiT is not a diffusers ``CacheMixin``; diffusers' caches raise "No cache context is set" without one).
- :func:`apply_block_skip` with :class:`ForaPolicy` or :class:`TeaCachePolicy`: the two peers that diffusers
  does not ship, written in the style of ``diffusers.hooks.first_block_cache``: one state class, a head hook on
  the first block that decides, pass-through hooks on the other blocks.

  * FORA (fixed-interval reuse): every ``interval``-th step is computed; on the others every block is skipped
    and the last block returns its output cached at the last computed step.
  * TeaCache: the relative L1 change of the timestep-modulated input of block 1 is rescaled by a polynomial
    fitted on the model (:func:`fit_teacache_polynomial`) and accumulated; while the sum stays under the
    threshold the step reuses the residual of all blocks (``last output - first input``) cached at the last
    computed step. The first and the last step are always computed.
- :func:`cache_state_bytes`: bytes of every tensor held in the states of the hooks under a module (measured during
  a generation by :class:`cgtaylor.meters.CacheBytesMeter`).
- :func:`remove_all_hooks`: removes every diffusers hook under a module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers.hooks import HookRegistry
from diffusers.hooks.hooks import BaseState, CacheContext, ModelHook, StateManager
from diffusers.utils.torch_utils import unwrap_module

from .. import _diffusers
from ..blocks import block_metadata, find_blocks, hidden_output, identity_output
from ..parallel import relative_l1

DEFAULT_CONTEXT_HOOK = "experiments_default_context"
SKIP_HEAD_HOOK = "experiments_skip_head"
SKIP_BLOCK_HOOK = "experiments_skip_block"


# ----------------------------------------------------------------------------------------------------------------------
# Registry helpers
# ----------------------------------------------------------------------------------------------------------------------
def _registries(module: torch.nn.Module):
    for sub in module.modules():
        registry = _diffusers.hook_registry(sub)
        if registry is not None:
            yield registry


def state_managers(module: torch.nn.Module) -> list[StateManager]:
    """Every StateManager held by a hook under ``module`` (each once)."""
    found: dict[int, StateManager] = {}
    for registry in _registries(module):
        for hook in registry.hooks.values():
            for value in vars(hook).values():
                if isinstance(value, StateManager):
                    found.setdefault(id(value), value)
                controller_sm = getattr(value, "state_manager", None)
                if isinstance(controller_sm, StateManager):
                    found.setdefault(id(controller_sm), controller_sm)
    return list(found.values())


def invalidate(module: torch.nn.Module) -> None:
    HookRegistry.check_if_exists_or_initialize(module).invalidate_child_registries_cache()


def remove_all_hooks(module: torch.nn.Module) -> None:
    """Remove every diffusers hook registered on ``module`` and its submodules: the plain model again."""
    for registry in list(_registries(module)):
        for name in list(registry.hooks):
            registry.remove_hook(name, recurse=False)
    invalidate(module)


def _tensor_bytes(value, seen: set) -> int:
    if isinstance(value, torch.Tensor):
        storage = value.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key in seen:
            return 0
        seen.add(key)
        return storage.nbytes()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v, seen) for v in value.values())
    if isinstance(value, (list, tuple, set)):
        return sum(_tensor_bytes(v, seen) for v in value)
    if isinstance(value, BaseState) or hasattr(value, "__dict__") and type(value).__module__.startswith(
        ("diffusers.hooks", "cgtaylor")
    ):
        return sum(_tensor_bytes(v, seen) for v in vars(value).values())
    return 0


def cache_state_bytes(module: torch.nn.Module) -> int:
    """Bytes of the tensors (each storage once) held right now in the hook states under ``module``."""
    seen: set = set()
    return sum(
        _tensor_bytes(state, seen) for manager in state_managers(module) for state in _diffusers.context_states(manager)
    )


# ----------------------------------------------------------------------------------------------------------------------
# Default cache context
# ----------------------------------------------------------------------------------------------------------------------
class DefaultContextHook(ModelHook):
    """Sets ``CacheContext(name)`` on every hook state under the transformer for calls made outside any
    ``cache_context`` (and clears it after the call); calls inside one are left alone."""

    def __init__(self, name: str = "cond"):
        super().__init__()
        self.name = name
        self._set_by_us = False
        self._managers: list[StateManager] | None = None  # hooks are fixed while this hook is registered

    def pre_forward(self, module, *args, **kwargs):
        if self._managers is None:
            self._managers = state_managers(module)
        managers = self._managers
        self._set_by_us = bool(managers) and all(_diffusers.current_context(m) is None for m in managers)
        if self._set_by_us:
            _diffusers.set_cache_context(module, CacheContext(self.name))
        return args, kwargs

    def post_forward(self, module, output):
        if self._set_by_us:
            _diffusers.set_cache_context(module, None)
            self._set_by_us = False
        return output


def add_default_context(transformer: torch.nn.Module, name: str = "cond") -> None:
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    if registry.get_hook(DEFAULT_CONTEXT_HOOK) is None:
        registry.register_hook(DefaultContextHook(name), DEFAULT_CONTEXT_HOOK)
    invalidate(transformer)


# ----------------------------------------------------------------------------------------------------------------------
# Block skipping: FORA and TeaCache
# ----------------------------------------------------------------------------------------------------------------------
class SkipState(BaseState):
    def __init__(self) -> None:
        self.reset()

    def reset(self, *args, **kwargs) -> None:
        self.step = 0
        self.skip = False
        self.first_input: torch.Tensor | None = None  # hidden states entering block 1 at a computed step
        self.cached: torch.Tensor | None = None  # FORA: last-block output; TeaCache: residual of all blocks
        self.previous_modulated: torch.Tensor | None = None
        self.accumulated = 0.0
        self.previous_output: torch.Tensor | None = None
        self.pending_input_change: float | None = None


def modulated_input(block: torch.nn.Module, metadata, args, kwargs) -> torch.Tensor:
    """The timestep-modulated, normalised input of ``block`` (what its first attention sees), computed the way the
    block computes it. Supports diffusers' DiT/PixArt ``BasicTransformerBlock`` (ada_norm_zero), FLUX's dual-stream
    block and Wan's block; other blocks fall back to the plain hidden states."""
    hidden = _diffusers.block_argument(metadata, metadata.hidden_states_argument_name, args, kwargs)
    name = type(unwrap_module(block)).__name__
    if name == "BasicTransformerBlock" and getattr(block, "norm_type", None) == "ada_norm_zero":
        timestep = _diffusers.block_argument(metadata, "timestep", args, kwargs)
        labels = _diffusers.block_argument(metadata, "class_labels", args, kwargs)
        return block.norm1(hidden, timestep, labels, hidden_dtype=hidden.dtype)[0]
    if name == "FluxTransformerBlock":
        temb = _diffusers.block_argument(metadata, "temb", args, kwargs)
        return block.norm1(hidden, emb=temb)[0]
    if name == "WanTransformerBlock":
        temb = _diffusers.block_argument(metadata, "temb", args, kwargs)
        if temb.ndim == 4:
            shift, scale = (block.scale_shift_table.unsqueeze(0) + temb.float()).chunk(6, dim=2)[:2]
            shift, scale = shift.squeeze(2), scale.squeeze(2)
        else:
            shift, scale = (block.scale_shift_table + temb.float()).chunk(6, dim=1)[:2]
        return block.norm1(hidden.float()) * (1 + scale) + shift
    return hidden


@dataclass
class ForaPolicy:
    """Compute steps ``0..warmup-1`` and then every ``interval``-th step; reuse the last block's output between."""

    interval: int = 3
    warmup_steps: int = 1

    kind = "fora"

    def __post_init__(self):
        if int(self.interval) < 1:
            raise ValueError(f"fora interval must be >= 1, got {self.interval}")

    def compute(self, state: SkipState, modulated: torch.Tensor | None) -> bool:
        step = state.step
        return step < self.warmup_steps or (step - self.warmup_steps) % int(self.interval) == 0


@dataclass
class TeaCachePolicy:
    """TeaCache's gate: accumulate ``poly(rel_l1(modulated_t, modulated_{t-1}))`` and skip while under threshold."""

    threshold: float = 0.1
    coefficients: list[float] = field(default_factory=lambda: [1.0, 0.0])  # numpy.polyval order (highest first)
    num_inference_steps: int | None = None
    warmup_steps: int = 1  # TeaCache's ret_steps: the first steps are always computed
    calibrate: bool = False
    calibration: list = field(default_factory=list)  # (input change, output change) pairs seen while calibrating

    kind = "teacache"

    def compute(self, state: SkipState, modulated: torch.Tensor) -> bool:
        previous, state.previous_modulated = state.previous_modulated, modulated.detach()
        first = state.step == 0 or previous is None or previous.shape != modulated.shape
        last = self.num_inference_steps is not None and state.step >= self.num_inference_steps - 1
        change = None if first else relative_l1(modulated, previous)
        if self.calibrate:
            state.pending_input_change = change
            return True
        if first or last or state.cached is None or state.step < self.warmup_steps:
            state.accumulated = 0.0
            return True
        state.accumulated += float(np.polyval(self.coefficients, change))
        if state.accumulated < self.threshold:
            return False
        state.accumulated = 0.0
        return True


class _SkipHook(ModelHook):
    def __init__(self, state_manager: StateManager, policy, is_tail: bool):
        super().__init__()
        self.state_manager = state_manager
        self.policy = policy
        self.is_tail = is_tail
        self._metadata = None

    def initialize_hook(self, module):
        self._metadata = block_metadata(module)
        return module

    def _hidden_input(self, args, kwargs) -> torch.Tensor:
        return _diffusers.block_argument(self._metadata, self._metadata.hidden_states_argument_name, args, kwargs)


class _SkipHeadHook(_SkipHook, _diffusers.StatefulModelHook):
    def new_forward(self, module, *args, **kwargs):
        state: SkipState = self.state_manager.get_state()
        hidden = self._hidden_input(args, kwargs)
        modulated = modulated_input(module, self._metadata, args, kwargs) if self.policy.kind == "teacache" else None
        compute = self.policy.compute(state, modulated)
        state.skip = not compute
        if state.skip and self.policy.kind == "teacache":
            state.step += 1
            return identity_output(self._metadata, args, kwargs, hidden + state.cached.to(hidden.dtype))
        if state.skip:  # FORA: blocks pass through, the tail returns its cached output
            return identity_output(self._metadata, args, kwargs, hidden)
        state.first_input = hidden
        output = self.fn_ref.original_forward(*args, **kwargs)
        if self.is_tail:
            _store(state, self.policy, hidden_output(self._metadata, output))
        return output

    def reset_state(self, module):
        self.state_manager.reset()
        return module


class _SkipBlockHook(_SkipHook):
    def new_forward(self, module, *args, **kwargs):
        state: SkipState = self.state_manager.get_state()
        if state.skip:
            hidden = self._hidden_input(args, kwargs)
            if self.is_tail and self.policy.kind == "fora":
                hidden = state.cached.to(hidden.dtype)
                state.step += 1
            # TeaCache: the head already returned the final hidden states and advanced the step.
            return identity_output(self._metadata, args, kwargs, hidden)
        output = self.fn_ref.original_forward(*args, **kwargs)
        if self.is_tail:
            _store(state, self.policy, hidden_output(self._metadata, output))
        return output


def _store(state: SkipState, policy, last_output: torch.Tensor) -> None:
    if policy.kind == "fora":
        state.cached = last_output
    else:
        residual = last_output - state.first_input
        if policy.calibrate:
            if state.previous_output is not None and state.pending_input_change is not None:
                policy.calibration.append((state.pending_input_change, relative_l1(last_output, state.previous_output)))
            state.previous_output = last_output.detach()
        state.cached = residual
    state.first_input = None
    state.step += 1


def apply_block_skip(transformer: torch.nn.Module, policy) -> StateManager:
    """Register a block-skipping peer (``ForaPolicy`` or ``TeaCachePolicy``) on ``transformer``'s blocks."""
    blocks = find_blocks(transformer).blocks
    manager = StateManager(SkipState)
    HookRegistry.check_if_exists_or_initialize(blocks[0]).register_hook(
        _SkipHeadHook(manager, policy, is_tail=len(blocks) == 1), SKIP_HEAD_HOOK
    )
    for index, block in enumerate(blocks[1:], start=1):
        HookRegistry.check_if_exists_or_initialize(block).register_hook(
            _SkipBlockHook(manager, policy, is_tail=index == len(blocks) - 1), SKIP_BLOCK_HOOK
        )
    invalidate(transformer)
    return manager


def fit_teacache_polynomial(pairs: list[tuple[float, float]], degree: int = 4) -> list[float]:
    """Least-squares polynomial (numpy.polyval order) mapping input change to output change, as TeaCache fits it."""
    x = np.array([p[0] for p in pairs], dtype=np.float64)
    y = np.array([p[1] for p in pairs], dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 2:
        raise ValueError(f"TeaCache calibration needs at least 2 (input, output) change pairs, got {len(x)}")
    degree = min(degree, len(np.unique(x)) - 1)
    return [float(c) for c in np.polyfit(x, y, degree)]
