"""cache-dit (PyPI ``cache-dit`` 1.5.3) as a peer method: its DBCache on a bare diffusers transformer of the zoo.

``apply_cache_dit(transformer, variant, threshold=..., warmup_steps=..., num_inference_steps=...)`` enables
cache-dit's Dual Block Cache through the block adapter cache-dit registers for the transformer's class, optionally
with its TaylorSeer or FoCa calibrator; ``remove_cache_dit(transformer)`` undoes it; ``cache_dit_stats(transformer)``
says which steps each block list took from the cache in the last generation.

How each zoo transformer is expressed (cache-dit's own adapters for these classes):

- ``DiTTransformer2DModel``: ``transformer_blocks`` with ``ForwardPattern.Pattern_3`` (a block takes and returns
  ``hidden_states``); cache-dit's DiT patch functor rewrites the model's forward so the blocks can be swapped. The
  batch-doubled CFG of the DiT sampler is one call per step: ``enable_separate_cfg=False``.
- ``FluxTransformer2DModel``: cache-dit's FLUX adapter chains the 19 dual-stream and 38 single-stream blocks into one
  ``ForwardPattern.Pattern_1`` list (both kinds take ``(hidden_states, encoder_hidden_states)`` and return
  ``(encoder_hidden_states, hidden_states)``), so ``Fn_compute_blocks`` counts from the first dual-stream block and a
  cached step skips the single-stream blocks too. Guidance-distilled, one call per step: ``enable_separate_cfg=False``.
- ``WanTransformer3DModel``: ``blocks`` with ``ForwardPattern.Pattern_2`` (returns ``hidden_states`` only). The
  sampler calls the transformer twice per step, cond then uncond: ``enable_separate_cfg=True`` keeps one cache and one
  step count per branch. Each call's ``cache_context`` name is checked against that order.

cache-dit keeps its step count across generations on a bare transformer, so the method is registered as a stateful
diffusers hook: the reset that the zoo samplers and diffusers pipelines run after each generation starts cache-dit's
contexts afresh, and removing the hook (``remove_cache_dit`` or removing every diffusers hook) disables cache-dit.
cache-dit's log output is set to errors only (``CACHE_DIT_LOG_LEVEL``) unless the environment sets it.
"""

from __future__ import annotations

import math
import os
from numbers import Integral, Real

from diffusers.hooks import HookRegistry
from diffusers.hooks.hooks import BaseState, StateManager

from .. import _cache_dit, _diffusers

CACHE_DIT_VARIANTS = ("dbcache", "dbcache-taylorseer", "dbcache-foca")
CACHE_DIT_HOOK = "cache_dit"
os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "error")  # read when cache_dit is first imported

# transformer class -> (forward pattern of each block list cache-dit's adapter must give, separate cond/uncond calls)
LAYOUTS = {
    "DiTTransformer2DModel": (("Pattern_3",), False),
    "FluxTransformer2DModel": (("Pattern_1",), False),
    "WanTransformer3DModel": (("Pattern_2",), True),
}


def _cache_dit_library():
    import cache_dit

    return cache_dit


def supported(transformer) -> tuple[bool, str]:
    """(True, "") when cache-dit can be applied to this transformer class, else (False, reason a table can print)."""
    name = type(transformer).__name__
    if name not in LAYOUTS:
        return False, f"cache-dit peer covers {sorted(LAYOUTS)}, not {name}"
    try:
        _cache_dit_library()
    except ImportError:
        return False, "cache-dit is not installed (pip install cache-dit==1.5.3)"
    return True, ""


def _int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _block_count(transformer) -> int:
    kind = type(transformer).__name__
    if kind == "FluxTransformer2DModel":
        return len(transformer.transformer_blocks) + len(transformer.single_transformer_blocks)
    return len(transformer.blocks if kind == "WanTransformer3DModel" else transformer.transformer_blocks)


def _configs(transformer, variant, threshold, warmup_steps, num_inference_steps, fn_compute_blocks, bn_compute_blocks,
             taylorseer_order, max_continuous_cached_steps):
    if variant not in CACHE_DIT_VARIANTS:
        raise ValueError(f"variant must be one of {list(CACHE_DIT_VARIANTS)}, got {variant!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or not math.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite number >= 0 (0 never caches), got {threshold!r}")
    fn = _int("fn_compute_blocks", fn_compute_blocks, 1)
    bn = _int("bn_compute_blocks", bn_compute_blocks, 0)
    blocks = _block_count(transformer)
    if fn + bn > blocks:
        raise ValueError(f"fn_compute_blocks + bn_compute_blocks must be at most the {blocks} blocks, got {fn} + {bn}")
    cd = _cache_dit_library()
    cache_config = cd.DBCacheConfig(
        Fn_compute_blocks=fn, Bn_compute_blocks=bn, residual_diff_threshold=float(threshold),
        max_warmup_steps=_int("warmup_steps", warmup_steps, 0),
        num_inference_steps=_int("num_inference_steps", num_inference_steps, 1),
        max_continuous_cached_steps=_int("max_continuous_cached_steps", max_continuous_cached_steps, -1),
        enable_separate_cfg=LAYOUTS[type(transformer).__name__][1],
    )
    order = _int("taylorseer_order", taylorseer_order, 1)
    calibrator = {"dbcache": None, "dbcache-taylorseer": cd.TaylorSeerCalibratorConfig(taylorseer_order=order),
                  "dbcache-foca": cd.FoCaCalibratorConfig()}[variant]
    return cache_config, calibrator


class _NoState(BaseState):
    def reset(self, *args, **kwargs) -> None:
        pass


class CacheDitHook(_diffusers.StatefulModelHook):
    """Owns cache-dit on one transformer: enables it when registered, starts its contexts afresh when the stateful
    hooks are reset after a generation, disables it and restores the transformer when removed."""

    def __init__(self, cache_config, calibrator_config):
        super().__init__()
        self.cache_config = cache_config
        self.calibrator_config = calibrator_config
        self.branch = StateManager(_NoState)  # receives the diffusers cache_context of each call
        self.adapter = None
        self.calls = 0
        self.last_stats: dict = {}

    def initialize_hook(self, module):
        cd = _cache_dit_library()
        self._attrs = {m: dict(vars(m)) for m in module.modules()}
        self._submodules = {m: list(m._modules) for m in module.modules()}  # in order: find_blocks reads it
        adapter = cd.get_adapter(module)  # applies cache-dit's patch functor for the class, if any
        patterns = adapter.forward_pattern if isinstance(adapter.forward_pattern, list) else [adapter.forward_pattern]
        expected = LAYOUTS[type(module).__name__][0]
        if tuple(p.name for p in patterns) != expected:
            self._restore(module)
            raise RuntimeError(f"cache-dit's adapter for {type(module).__name__} gives forward patterns "
                               f"{[p.name for p in patterns]}, expected {list(expected)}")
        adapter.check_forward_pattern = True  # cache-dit skips its signature check once a diffusers hook exists
        cd.enable_cache(adapter, cache_config=self.cache_config, calibrator_config=self.calibrator_config)
        self.adapter = adapter
        return module

    def pre_forward(self, module, *args, **kwargs):
        context = _diffusers.current_context(self.branch)
        if self.cache_config.enable_separate_cfg and context is not None:
            expected = "uncond" if self.calls % 2 else "cond"
            if context.name != expected:
                raise RuntimeError(f"cache-dit counts cond and uncond calls alternately (cond first); call {self.calls}"
                                   f" of this generation came in cache_context {context.name!r}")
        self.calls += 1
        return args, kwargs

    def reset_state(self, module):
        if self.calls:
            self.last_stats = self._stats(module)
            _cache_dit_library().refresh_context(module)
        self.calls = 0
        self.branch.reset()
        return module

    def deinitalize_hook(self, module):
        _cache_dit_library().disable_cache(self.adapter)
        self._restore(module)
        return module

    def _restore(self, module):
        """Drop what cache-dit added or replaced (patched forwards, flags, the DiT functor's extra submodule)."""
        for m, before in self._attrs.items():
            for name in set(vars(m)) - set(before):
                delattr(m, name)
            for name, value in before.items():  # e.g. a `forward` left by an earlier diffusers hook, then patched
                if vars(m).get(name) is not value:
                    setattr(m, name, value)
            # the children as they were, in their order: cache-dit's additions dropped, and a block list it set anew
            # (which moves it to the end: FLUX's dual blocks after its single blocks, so the next method hooked the
            # blocks out of order) back in its place
            children = dict(m._modules)
            m._modules.clear()
            m._modules.update({name: children[name] for name in self._submodules[m] if name in children})

    def _stats(self, module) -> dict:
        manager = _cache_dit.context_manager(module)
        stats = {}
        for context_name in _cache_dit.context_names(module):
            context = manager.get_context(context_name)
            stats[context_name.rsplit("_", 1)[0]] = {
                "steps": context.executed_steps,
                "cached_steps": context.get_cached_steps(),
                "cfg_cached_steps": context.get_cfg_cached_steps(),
            }
        return stats


def _hook(transformer) -> CacheDitHook | None:
    registry = _diffusers.hook_registry(transformer)
    return None if registry is None else registry.get_hook(CACHE_DIT_HOOK)


def _hook_names(module) -> list[str]:
    """Names of the diffusers hooks registered on ``module`` or any of its submodules."""
    return sorted({name for m in module.modules() for name in _diffusers.hook_names(m)})


def apply_cache_dit(transformer, variant: str, *, threshold: float, warmup_steps: int, num_inference_steps: int,
                    fn_compute_blocks: int = 1, bn_compute_blocks: int = 0, taylorseer_order: int = 1,
                    max_continuous_cached_steps: int = -1) -> None:
    """Enable cache-dit's DBCache (optionally with its TaylorSeer or FoCa calibrator) on ``transformer``.

    ``threshold`` -> ``DBCacheConfig.residual_diff_threshold`` (0 never caches; cache-dit treats 1 or more as "always
    cache after warm-up"), ``warmup_steps`` -> ``max_warmup_steps`` (the first steps always computed),
    ``num_inference_steps``, ``fn_compute_blocks`` / ``bn_compute_blocks`` -> ``Fn_compute_blocks`` /
    ``Bn_compute_blocks``, ``max_continuous_cached_steps`` (-1: no limit); ``taylorseer_order`` is the order of the
    TaylorSeer calibrator (variant ``dbcache-taylorseer``). A cache-dit already on the transformer is replaced.
    """
    ok, reason = supported(transformer)
    if not ok:
        raise ValueError(reason)
    configs = _configs(transformer, variant, threshold, warmup_steps, num_inference_steps, fn_compute_blocks,
                       bn_compute_blocks, taylorseer_order, max_continuous_cached_steps)
    remove_cache_dit(transformer)
    others = _hook_names(transformer)
    if others:
        raise ValueError(f"cache-dit replaces the transformer's forward and does not stack on other diffusers hooks; "
                         f"remove {others} first")
    HookRegistry.check_if_exists_or_initialize(transformer).register_hook(CacheDitHook(*configs), CACHE_DIT_HOOK)


def remove_cache_dit(transformer) -> None:
    """Undo ``apply_cache_dit`` (nothing to do when cache-dit is not applied): the plain transformer again."""
    if _hook(transformer) is not None:
        _diffusers.hook_registry(transformer).remove_hook(CACHE_DIT_HOOK, recurse=False)


def cache_dit_stats(transformer) -> dict:
    """What cache-dit did in the last generation, per block list name: ``{"steps": sampling steps counted,
    "cached_steps": steps whose blocks after the first Fn came from the cache, "cfg_cached_steps": the same for the
    uncond calls where the model makes them separately}``; ``{}`` before the first generation ends. FLUX has one
    list, ``transformer_blocks``: cache-dit's chain of the dual-stream and single-stream blocks."""
    hook = _hook(transformer)
    if hook is None:
        raise ValueError("cache-dit is not applied to this transformer (apply_cache_dit first)")
    return {name: {k: list(v) if isinstance(v, list) else v for k, v in s.items()} for name, s in hook.last_stats.items()}


__all__ = ["CACHE_DIT_VARIANTS", "apply_cache_dit", "cache_dit_stats", "remove_cache_dit", "supported"]
