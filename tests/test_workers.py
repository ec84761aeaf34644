"""Several processes on one table: who takes which share, and what bad worker settings are told."""

from __future__ import annotations

import pytest

from cgtaylor.experiments.workers import Worker


def test_each_worker_takes_its_own_share_first_and_then_every_other_item_from_the_last_back():
    orders = [Worker(rank, 3).order(7) for rank in range(3)]
    assert orders[0] == [0, 3, 6, 5, 4, 2, 1]
    assert orders[1] == [1, 4, 6, 5, 3, 2, 0]
    assert orders[2] == [2, 5, 6, 4, 3, 1, 0]
    assert all(sorted(order) == list(range(7)) for order in orders)
    assert {order[0] for order in orders} == {0, 1, 2}  # every worker starts on a different item
    assert Worker().order(4) == [0, 1, 2, 3]
    # two workers: the one that finishes early starts on the item its peer would reach last
    assert Worker(0, 2).order(5) == [0, 2, 4, 3, 1] and Worker(1, 2).order(5) == [1, 3, 4, 2, 0]


def test_the_worker_comes_from_torchrun_when_not_given(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert Worker.parse(None) == Worker(0, 1)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert Worker.parse(None) == Worker(2, 4) and Worker.parse("") == Worker(2, 4)
    assert Worker.parse("1/2") == Worker(1, 2)  # given by hand, it wins


@pytest.mark.parametrize("text", ["2/2", "-1/2", "1", "a/b", "1/0", "1/2/3"])
def test_a_bad_worker_names_the_accepted_form(text):
    with pytest.raises(ValueError, match=r"worker must (look like RANK/WORLD|be RANK/WORLD)"):
        Worker.parse(text)
