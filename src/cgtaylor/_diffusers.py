"""The one door to diffusers' private internals.

Everything in the package that depends on a diffusers name starting with ``_`` (a private function, class,
constant, module or attribute) goes through a function or class of this module, so that a diffusers release that
renames one fails here, with a :class:`DiffusersInternalsError` naming the internal, the installed diffusers and
the version these accesses were tested with. ``tests/test_diffusers_compat.py`` exercises each one and checks that no
other module reaches past diffusers' public names.
"""

from __future__ import annotations

import functools
import importlib

import torch
from diffusers.hooks import HookRegistry, ModelHook

from ._internals import missing_internal_message

TESTED_DIFFUSERS_VERSION = "0.42.1"
_MISSING = object()


class DiffusersInternalsError(RuntimeError):
    """A diffusers internal that cgtaylor relies on is missing or changed in the installed diffusers."""


def missing_internal(internal: str, error: BaseException | None = None) -> DiffusersInternalsError:
    import diffusers

    return DiffusersInternalsError(missing_internal_message(
        "diffusers", internal, diffusers.__version__, TESTED_DIFFUSERS_VERSION, __name__, error))


@functools.cache
def _internal(path: str):
    """The object at ``path`` (``"package.module:Name.attribute"``), looked up once."""
    module_name, _, attribute_path = path.partition(":")
    try:
        value = importlib.import_module(module_name)
        for part in attribute_path.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError) as error:
        raise missing_internal(path, error) from error
    return value


def _attribute(obj, name: str, internal: str):
    value = getattr(obj, name, _MISSING)
    if value is _MISSING:
        raise missing_internal(internal, AttributeError(f"{type(obj).__name__} has no attribute {name!r}"))
    return value


# ----------------------------------------------------------------------------------------------------------------------
# Hook registries, cache contexts and hook states
# ----------------------------------------------------------------------------------------------------------------------
_REGISTRY_ATTRIBUTE = "_diffusers_hook"


@functools.cache
def _registry_attribute() -> str:
    """The attribute in which ``HookRegistry.check_if_exists_or_initialize`` keeps a module's registry (checked once
    on a throw-away module, since an absent attribute otherwise just means "no hooks")."""
    probe = torch.nn.Identity()
    registry = HookRegistry.check_if_exists_or_initialize(probe)
    if getattr(probe, _REGISTRY_ATTRIBUTE, None) is not registry:
        raise missing_internal(f"HookRegistry kept on the module as `module.{_REGISTRY_ATTRIBUTE}`")
    return _REGISTRY_ATTRIBUTE


def hook_registry(module: torch.nn.Module) -> HookRegistry | None:
    """The diffusers hook registry of ``module``, or None when no hook was ever registered on it (none is created)."""
    return getattr(module, _registry_attribute(), None)


def hook_names(module: torch.nn.Module) -> list[str]:
    """Names of the diffusers hooks registered on ``module`` itself."""
    registry = hook_registry(module)
    return [] if registry is None else list(registry.hooks)


def set_cache_context(module: torch.nn.Module, context) -> None:
    """Set (``CacheContext``) or clear (None) the cache context of every stateful hook under ``module``, as
    ``CacheMixin.cache_context`` does, for models that are not a ``CacheMixin`` (DiT)."""
    _internal("diffusers.hooks.hooks:_set_cache_context")(module, context)


def current_context(state_manager):
    """The ``CacheContext`` a ``StateManager`` holds now, or None outside any cache context (its ``context`` property
    raises then)."""
    return _attribute(state_manager, "_context", "StateManager._context")


def context_states(state_manager) -> list:
    """The hook states a ``StateManager`` holds, one per cache context seen since its last reset."""
    return list(_attribute(state_manager, "_state_cache", "StateManager._state_cache").values())


class StatefulModelHook(ModelHook):
    """A ``ModelHook`` that diffusers treats as stateful: ``cache_context`` sets the context of its ``StateManager``
    attributes and ``reset_stateful_hooks`` calls its ``reset_state``."""

    _is_stateful = True


# ----------------------------------------------------------------------------------------------------------------------
# Transformer blocks
# ----------------------------------------------------------------------------------------------------------------------
def transformer_block_list_names() -> frozenset[str]:
    """Names of the child ``ModuleList``\\ s in which diffusers' block caches look for transformer blocks."""
    return frozenset(_internal("diffusers.hooks._common:_ALL_TRANSFORMER_BLOCK_IDENTIFIERS"))


def _block_registry():
    return _internal("diffusers.hooks._helpers:TransformerBlockRegistry")


def registered_block_classes() -> list[type]:
    """The block classes whose outputs diffusers' ``TransformerBlockRegistry`` describes."""
    registry = _block_registry()
    _attribute(registry, "_register", "TransformerBlockRegistry._register")()
    return list(_attribute(registry, "_registry", "TransformerBlockRegistry._registry"))


def block_metadata(block_class: type):
    """diffusers' ``TransformerBlockMetadata`` of a block class: which argument and output positions hold the hidden
    states and encoder hidden states."""
    metadata = _block_registry().get(block_class)
    _attribute(metadata, "_get_parameter_from_args_kwargs", "TransformerBlockMetadata._get_parameter_from_args_kwargs")
    return metadata


def block_argument(metadata, name: str, args: tuple, kwargs: dict):
    """The argument ``name`` of a block call, whether given by position or by keyword (``metadata`` from
    :func:`block_metadata`, which checked that the lookup exists)."""
    return metadata._get_parameter_from_args_kwargs(name, args, kwargs)


# ----------------------------------------------------------------------------------------------------------------------
# diffusers' own caches
# ----------------------------------------------------------------------------------------------------------------------
def first_block_cache_head_hook_name() -> str:
    """The name under which ``apply_first_block_cache`` registers its head hook on the first block."""
    return _internal("diffusers.hooks.first_block_cache:_FBC_LEADER_BLOCK_HOOK")


def mag_cache_head_hook_name() -> str:
    """The name under which ``apply_mag_cache`` registers its head hook on the first block."""
    return _internal("diffusers.hooks.mag_cache:_MAG_CACHE_LEADER_BLOCK_HOOK")


def taylorseer_hook_name() -> str:
    """The name under which ``apply_taylorseer_cache`` registers its hooks."""
    return _internal("diffusers.hooks.taylorseer_cache:_TAYLORSEER_CACHE_HOOK")


@functools.cache
def _fbc_head_hook_class() -> type:
    base = _internal("diffusers.hooks.first_block_cache:FBCHeadBlockHook")
    decide = _attribute(base, "_should_compute_remaining_blocks", "FBCHeadBlockHook._should_compute_remaining_blocks")

    class FBCHeadHookWithOverride(base):
        """diffusers' FBCache head hook whose decision ``must_compute(state)`` may force to "compute"."""

        def __init__(self, state_manager, threshold: float, must_compute):
            super().__init__(state_manager, threshold)
            self.must_compute = must_compute

        def _should_compute_remaining_blocks(self, hidden_states_residual: torch.Tensor) -> bool:
            if self.must_compute(self.state_manager.get_state()):
                return True
            return decide(self, hidden_states_residual)

    return FBCHeadHookWithOverride


def fbc_head_hook_with_override(plain_hook, must_compute) -> ModelHook:
    """A replacement for FBCache's head hook ``plain_hook`` (same state and threshold) that computes the remaining
    blocks whenever ``must_compute(state)`` is true and otherwise decides as diffusers does."""
    return _fbc_head_hook_class()(plain_hook.state_manager, plain_hook.threshold, must_compute)


# ----------------------------------------------------------------------------------------------------------------------
# Model attributes
# ----------------------------------------------------------------------------------------------------------------------
def enabled_cache_config(transformer: torch.nn.Module):
    """The config of the diffusers cache enabled with ``transformer.enable_cache`` (None when none is)."""
    return _attribute(transformer, "_cache_config", "CacheMixin._cache_config")


def repeated_block_classes(transformer: torch.nn.Module) -> list[str]:
    """The block class names ``compile_repeated_blocks`` compiles (empty when the model declares none, as DiT)."""
    _internal("diffusers.models.modeling_utils:ModelMixin._repeated_blocks")  # the class still declares it
    return list(getattr(transformer, "_repeated_blocks", None) or [])


def context_parallel_mesh(transformer: torch.nn.Module):
    """The flattened device mesh of ``transformer``'s context parallelism (``enable_parallelism``), or None."""
    _internal("diffusers.models.modeling_utils:ModelMixin._parallel_config")  # the class still declares it
    cp_config = getattr(getattr(transformer, "_parallel_config", None), "context_parallel_config", None)
    if cp_config is None:
        return None
    return _attribute(cp_config, "_flattened_mesh", "ContextParallelConfig._flattened_mesh")
