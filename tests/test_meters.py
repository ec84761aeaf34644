"""The meters on small torch modules: exact per-call FLOPs, memoised FLOPs and when they may be trusted, call times."""

from __future__ import annotations

import pytest
import torch

from cgtaylor.meters import CallTimer, CheckedFlops, ExactFlops, MemoFlops, count_flops, flops_meter


class Net(torch.nn.Module):
    """Two linear layers; ``outside=True`` adds a matrix product in the net's own forward (outside any leaf module);
    ``skip=True`` makes every second call return without running the layers (as a forecast does)."""

    def __init__(self, outside: bool = False, skip: bool = False):
        super().__init__()
        self.first, self.second = torch.nn.Linear(8, 16), torch.nn.Linear(16, 4)
        self.mix = torch.nn.Parameter(torch.randn(4, 4)) if outside else None
        self.skip, self.calls = skip, 0

    def forward(self, x):
        self.calls += 1
        if self.skip and self.calls % 2 == 0:
            return x[..., :4] * 2.0  # elementwise: no FLOPs counted
        out = self.second(self.first(x))
        return out @ self.mix if self.mix is not None else out


def linear_flops(batch: int) -> int:
    return 2 * batch * (8 * 16 + 16 * 4)


def test_exact_flops_counts_each_call_and_sums_to_the_whole_run():
    net = Net()
    with ExactFlops(net) as meter:
        net(torch.randn(3, 8))
        net(torch.randn(5, 8))
    assert meter.calls == [linear_flops(3), linear_flops(5)]
    _, whole = count_flops(lambda: (net(torch.randn(3, 8)), net(torch.randn(5, 8))))
    assert meter.total == whole
    assert count_flops(lambda: net(torch.randn(3, 8)), net)[1] == linear_flops(3)


def test_memoised_flops_match_exact_ones_with_calls_that_skip_their_layers():
    net = Net(skip=True)
    inputs = [torch.randn(3, 8), torch.randn(3, 8), torch.randn(5, 8), torch.randn(3, 8), torch.randn(3, 8)]
    with ExactFlops(net) as exact, MemoFlops(net) as memo:
        for x in inputs:
            net(x)
    assert memo.calls == exact.calls == [linear_flops(3), 0, linear_flops(5), 0, linear_flops(3)]


@pytest.mark.parametrize("outside", [False, True])
def test_checked_flops_says_whether_the_memo_may_be_trusted(outside):
    net = Net(outside=outside)
    with CheckedFlops(net) as checked:
        net(torch.randn(3, 8))
    extra = 2 * 3 * 4 * 4 if outside else 0  # the product outside the leaves: the memo misses it
    assert checked.calls == [linear_flops(3) + extra] and checked.total == linear_flops(3) + extra
    assert checked.memo.calls == [linear_flops(3)]
    assert checked.memo_exact is (not outside)
    assert flops_meter(checked.memo_exact) is (ExactFlops if outside else MemoFlops)


def test_meters_leave_no_hooks_behind():
    net = Net()
    with CheckedFlops(net), CallTimer(net) as timer:
        net(torch.randn(2, 8))
        net(torch.randn(2, 8))
    assert len(timer.times) == 2 and all(t > 0 for t in timer.times)
    modules = list(net.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in modules)
