"""What a generation costs: the FLOPs a module executes (exactly or memoised), its calls' wall time, the steps it
ran in full, the bytes its caches hold, and peak accelerator memory.

Every meter is a context manager attached to a module through forward hooks, so it measures whatever runs the
module (a sampler, a pipeline, a hooked accelerator) without touching the caller::

    with ExactFlops(transformer) as flops:
        pipe(...)
    flops.total, flops.calls    # FLOPs of the whole generation, and of each transformer call

``FlopCounterMode`` counts matrix products, convolutions and attention only; elementwise work (a Taylor forecast,
the gate's error) counts nothing.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

import torch
from torch.utils.flop_counter import FlopCounterMode

from . import _diffusers
from .blocks import find_blocks


class _TotalsOnly:
    """Stands in for ``FlopCounterMode``'s module tracker: every FLOP counts once, under "Global". The tracker walks
    the module tree on every call, which is slow and recurses forever on models that put a parent under a child
    during their forward (cache-dit's patched transformers)."""

    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def flop_counter() -> FlopCounterMode:
    """A ``FlopCounterMode`` that counts total FLOPs only (``get_total_flops()``), without per-module attribution."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _TotalsOnly()
    return counter


def input_signature(args, kwargs) -> tuple:
    """Shapes and dtypes of a call's tensor arguments: calls with equal signatures run the same FLOPs."""

    def signature(value):
        if isinstance(value, torch.Tensor):
            return (tuple(value.shape), value.dtype)
        if isinstance(value, (tuple, list)):
            return tuple(signature(v) for v in value)
        return None

    return signature(args), tuple(sorted((k, signature(v)) for k, v in kwargs.items()))


class _ModuleMeter(ABC):
    """Attaches hooks to ``module`` on enter (``_attach`` returns their handles) and removes them on exit."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self._handles: list = []

    @abstractmethod
    def _attach(self) -> list:
        """Register this meter's hooks; return their handles."""

    def __enter__(self):
        self._handles = self._attach()
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles = []


class ExactFlops(_ModuleMeter):
    """FLOPs of each call of ``module``, every call counted with ``FlopCounterMode`` (``calls``; ``total``)."""

    def __init__(self, module: torch.nn.Module):
        super().__init__(module)
        self.calls: list[int] = []
        self._active: list[FlopCounterMode] = []

    def _attach(self) -> list:
        def enter(module, args):
            self._active.append(flop_counter())
            self._active[-1].__enter__()

        def leave(module, args, output):
            counter = self._active.pop()
            counter.__exit__(None, None, None)
            self.calls.append(counter.get_total_flops())

        return [self.module.register_forward_pre_hook(enter), self.module.register_forward_hook(leave)]

    @property
    def total(self) -> int:
        return sum(self.calls)


def _has_diffusers_hook(module: torch.nn.Module) -> bool:
    """A diffusers hook may replace the module's forward (e.g. a TaylorSeer forecast): its FLOPs vary by call."""
    registry = _diffusers.hook_registry(module)
    return registry is not None and bool(registry.hooks)


class MemoFlops(_ModuleMeter):
    """The same per-call FLOPs as :class:`ExactFlops`, several times cheaper on long runs.

    ``FlopCounterMode`` routes every op through Python; here each leaf module (and each module with a ``processor``,
    i.e. diffusers' attention, for the attention product outside its leaves) is counted with ``FlopCounterMode`` the
    first time it runs on given input shapes, and the count is reused afterwards. A module that returns without
    running its children (a forecast) counts nothing. FLOPs outside those modules are missed: check it against
    :class:`ExactFlops` on a full generation first (:class:`CheckedFlops`) and count exactly where the two disagree.
    """

    def __init__(self, module: torch.nn.Module):
        super().__init__(module)
        self.calls: list[int] = []
        self._memo: dict = {}
        self._stack: list = []
        self._leaf_runs = 0
        self._current = 0

    def _pre(self, module, args, kwargs):
        key = (id(module), input_signature(args, kwargs))
        counter = None
        if key not in self._memo or (not list(module.children()) and _has_diffusers_hook(module)):
            counter = flop_counter()
            counter.__enter__()
        self._stack.append((key, counter, self._leaf_runs, self._current))

    def _post_leaf(self, module, args, kwargs, output):
        key, counter, _, _ = self._stack.pop()
        if counter is not None:
            counter.__exit__(None, None, None)
            flops = counter.get_total_flops()
            if not _has_diffusers_hook(module):
                self._memo[key] = flops
        else:
            flops = self._memo[key]
        self._current += flops
        if flops:
            self._leaf_runs += 1

    def _post_composite(self, module, args, kwargs, output):
        key, counter, leaf_runs_before, current_before = self._stack.pop()
        children = self._current - current_before
        if counter is not None:
            counter.__exit__(None, None, None)
            if self._leaf_runs > leaf_runs_before:
                self._memo[key] = counter.get_total_flops() - children
        if self._leaf_runs > leaf_runs_before and key in self._memo:  # it computed (not a forecast)
            self._current += self._memo[key]

    def _attach(self) -> list:
        handles = []
        for sub in self.module.modules():
            leaf = not list(sub.children())
            if leaf or hasattr(sub, "processor"):
                handles.append(sub.register_forward_pre_hook(self._pre, with_kwargs=True))
                post = self._post_leaf if leaf else self._post_composite
                handles.append(sub.register_forward_hook(post, with_kwargs=True))

        def begin(module, args):
            self._current = 0

        def end(module, args, output):
            self.calls.append(self._current)

        return handles + [self.module.register_forward_pre_hook(begin), self.module.register_forward_hook(end)]

    @property
    def total(self) -> int:
        return sum(self.calls)


class CheckedFlops:
    """Exact and memoised per-call FLOPs of the same generation (``calls``, ``total``: the exact ones);
    ``memo_exact`` says whether :class:`MemoFlops` agreed on every call, i.e. may count this module's later runs."""

    def __init__(self, module: torch.nn.Module):
        self.exact, self.memo = ExactFlops(module), MemoFlops(module)

    def __enter__(self):
        self.exact.__enter__()
        self.memo.__enter__()
        return self

    def __exit__(self, *exc):
        self.memo.__exit__(*exc)
        self.exact.__exit__(*exc)

    @property
    def calls(self) -> list[int]:
        return self.exact.calls

    @property
    def total(self) -> int:
        return self.exact.total

    @property
    def memo_exact(self) -> bool:
        return self.memo.calls == self.exact.calls


def flops_meter(memo_exact: bool) -> type[ExactFlops] | type[MemoFlops]:
    """The FLOP meter for later runs of a module whose full generation was counted by :class:`CheckedFlops`."""
    return MemoFlops if memo_exact else ExactFlops


def count_flops(fn, module: torch.nn.Module | None = None) -> tuple[object, int]:
    """Run ``fn()`` and return its result with the FLOPs executed (inside ``module`` only, if given)."""
    if module is None:
        with flop_counter() as counter:
            result = fn()
        return result, counter.get_total_flops()
    with ExactFlops(module) as meter:
        result = fn()
    return result, meter.total


class CallTimer(_ModuleMeter):
    """Wall time of each call of ``module`` (``times``, seconds)."""

    def __init__(self, module: torch.nn.Module):
        super().__init__(module)
        self.times: list[float] = []
        self._start = 0.0

    def _attach(self) -> list:
        def enter(module, args):
            self._start = time.perf_counter()

        def leave(module, args, output):
            self.times.append(time.perf_counter() - self._start)

        return [self.module.register_forward_pre_hook(enter), self.module.register_forward_hook(leave)]


class FullStepCounter(_ModuleMeter):
    """How many steps ran the network in full: calls of the linear layers of a middle block (the fewest-called one,
    so that modules forecast by TaylorSeer count as not computed), per transformer call."""

    def __init__(self, transformer: torch.nn.Module):
        super().__init__(transformer)
        blocks = find_blocks(transformer).blocks
        block = blocks[len(blocks) // 2]
        self.leaves = [m for m in block.modules() if isinstance(m, torch.nn.Linear)]
        self.counts = [0] * len(self.leaves)
        self.calls = 0

    def _attach(self) -> list:
        def counter(index):
            def hook(module, args):
                self.counts[index] += 1

            return hook

        def call(module, args):
            self.calls += 1

        handles = [leaf.register_forward_pre_hook(counter(i)) for i, leaf in enumerate(self.leaves)]
        return handles + [self.module.register_forward_pre_hook(call)]

    def full_steps(self, trajectories: int, steps: int) -> float:
        """Full steps per trajectory (and per cache context when a step makes several calls, e.g. Wan's CFG)."""
        if not self.calls or not self.leaves:
            return float("nan")
        contexts = self.calls / (trajectories * steps)
        return min(self.counts) / trajectories / contexts


class CacheBytesMeter(_ModuleMeter):
    """Largest :func:`cgtaylor.experiments.hooks.cache_state_bytes` seen after any call of ``module`` while attached
    (states are reset at the end of a generation, so they must be measured during it)."""

    def __init__(self, module: torch.nn.Module):
        super().__init__(module)
        self.peak = 0

    def _attach(self) -> list:
        from .experiments.hooks import cache_state_bytes  # not at the top: the experiments package imports this module

        def after(module, args, output):
            self.peak = max(self.peak, cache_state_bytes(module))

        return [self.module.register_forward_hook(after)]


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window on ``device`` (after the work queued so far has finished)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int | None:
    """Peak accelerator memory allocated on ``device`` since :func:`reset_peak_memory`; None off CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated(device))
    return None
