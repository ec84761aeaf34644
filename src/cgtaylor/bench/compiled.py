"""CG-Taylor under torch.compile: compiling a hooked transformer, and what the compiled run costs per step.

Two ways of compiling, as diffusers users do:

- ``full``: ``torch.compile(transformer)``. The hooks run inside the compiled forward; each call into the
  controller (``torch.compiler.disable``: step bookkeeping, the gate's decision, the Taylor ladders) is a graph
  break, and the skip branch is specialised by dynamo's guards (one graph variant per branch, compiled once).
- ``regional``: ``transformer.compile_repeated_blocks()`` (diffusers' regional compilation; for a transformer
  that declares no repeated blocks, such as DiT, each block is compiled the same way by hand).

``GraphCounter`` is a compile backend that counts how many compiled graphs run; ``count_host_syncs`` counts the
``Tensor.item()``-like reads that make the host wait for the device.
"""

from __future__ import annotations

import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .. import _diffusers
from ..blocks import find_blocks

COMPILE_MODES = ("none", "full", "regional")


def compile_transformer(transformer: torch.nn.Module, mode: str, backend="inductor") -> torch.nn.Module:
    """The module to call: ``transformer`` compiled as ``mode`` says (``none`` returns it unchanged)."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {COMPILE_MODES}, got {mode!r}")
    if mode == "full":
        return torch.compile(transformer, backend=backend)
    if mode == "regional":
        if _diffusers.repeated_block_classes(transformer):
            transformer.compile_repeated_blocks(backend=backend)
        else:
            for block in find_blocks(transformer).blocks:
                block.compile(backend=backend)
    return transformer


class GraphCounter:
    """A torch.compile backend: compiles each graph with ``backend`` and counts the graphs compiled and run."""

    def __init__(self, backend: str = "inductor"):
        self.backend = backend
        self.graphs_compiled = 0
        self.graphs_run = 0

    def __call__(self, graph_module, example_inputs):
        compiled = torch._dynamo.lookup_backend(self.backend)(graph_module, example_inputs)
        self.graphs_compiled += 1

        def run(*args):
            self.graphs_run += 1
            return compiled(*args)

        run._boxed_call = getattr(compiled, "_boxed_call", False)  # inductor takes its inputs as one list
        return run


class _SyncCounter(TorchDispatchMode):
    # aten._local_scalar_dense is what Tensor.item(), float(tensor) and bool(tensor) dispatch to.
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def count_host_syncs():
    """Counts reads of a tensor's value into Python (each one a host-device synchronisation on a GPU).

    Eager code only: run the same hooks without compiling to count them.
    """
    counter = _SyncCounter()
    with counter:
        yield counter


def reset_dynamo() -> None:
    """Forget every compiled graph and dynamo's counters (``torch._dynamo.reset()`` keeps the counters)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()


def dynamo_counts() -> dict[str, int]:
    """Dynamo's totals since ``reset_dynamo()``: graphs compiled, frames compiled, graph breaks met while tracing."""
    from torch._dynamo.utils import counters

    return {
        "unique_graphs": int(counters["stats"]["unique_graphs"]),
        "frames_compiled": int(counters["frames"]["ok"]),
        "graph_breaks": int(sum(counters["graph_break"].values())),
    }
