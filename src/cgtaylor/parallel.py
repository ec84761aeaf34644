"""Context parallelism: one gate decision for all ranks that hold shards of one sequence.

Under diffusers' ``transformer.enable_parallelism(config=ContextParallelConfig(...))`` every rank of the context
parallel mesh runs the transformer on its own shard of the token sequence, so each measures the first block's
forecast error on its shard only. Were each to decide on its own, the ranks could disagree, and the one that
skips the remaining blocks would leave the other waiting in an attention all-to-all it never joins. The error's
numerator and denominator are therefore summed over the mesh (one collective of two scalars) before the
comparison; each rank keeps forecasting its own shard.

diffusers' (private) parallel configuration is read through :mod:`cgtaylor._diffusers`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from . import _diffusers


def context_parallel_group(transformer: torch.nn.Module | None):
    """The process group of ``transformer``'s context parallel mesh, or None when it is not parallelised.

    Read at every call rather than once, so that ``apply_cg_taylor`` may come before or after
    ``enable_parallelism``.
    """
    if transformer is None or not (dist.is_available() and dist.is_initialized()):
        return None
    mesh = _diffusers.context_parallel_mesh(transformer)
    if mesh is None or mesh.size() < 2:
        return None
    return mesh.get_group()


def relative_l1(estimate: torch.Tensor, actual: torch.Tensor, group=None) -> float:
    """``mean|estimate - actual| / mean|actual|``; with ``group``, over the union of every rank's shard."""
    actual = actual.float()
    if group is None:
        ratio = (estimate.float() - actual).abs().mean() / actual.abs().mean().clamp_min(1e-12)
        return float(ratio.item())
    sums = torch.stack([(estimate.float() - actual).abs().sum(), actual.abs().sum()])
    dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=group)
    return float((sums[0] / sums[1].clamp_min(1e-12)).item())


def relative_l1_per_sample(estimate: torch.Tensor, actual: torch.Tensor, group=None) -> list[float]:
    """``relative_l1`` of each sample (the leading dimension) on its own; with ``group``, over every rank's shard."""
    actual = actual.float()
    difference = (estimate.float().to(actual.device) - actual).abs().flatten(1).sum(1)
    sums = torch.stack([difference, actual.abs().flatten(1).sum(1)])
    if group is not None:
        dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=group)
    return (sums[0] / sums[1].clamp_min(1e-12)).tolist()
