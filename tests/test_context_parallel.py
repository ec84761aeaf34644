"""CG-Taylor under diffusers' context parallelism: two CPU processes (gloo), Ulysses degree 2, one decision per step."""

from __future__ import annotations

import datetime
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cgtaylor import CGTaylorConfig, apply_cg_taylor
from cgtaylor.bench.compile_probe import decisions, mixed_threshold
from cgtaylor.bench.driver import Driver
from cgtaylor.bench.specs import build_transformer, load_spec

WORLD = 2
STEPS = 10
COLLECTIVE_TIMEOUT_S = 60  # a rank left waiting in a collective fails the test instead of hanging it
SPECS = {"flux": "flux1-dev", "wan": "wan2.1-t2v-1.3b"}  # FLUX splits at the model's input, Wan at blocks.0's


def _model(family: str):
    spec = load_spec(SPECS[family], reduced=True)
    return spec, build_transformer(spec, torch.device("cpu"), torch.float32)


def _generate(spec, transformer, seed: int = 0):
    driver = Driver(spec, transformer, torch.device("cpu"), torch.float32, seed=seed)
    driver.run(STEPS)
    return driver.last_sample, decisions(transformer)


def _parallelise(transformer) -> None:
    from diffusers import ContextParallelConfig

    transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=WORLD))


def _worker(rank: int, port: int, configs: dict, out_dir: str) -> None:
    # Work-around for diffusers 0.42.1 on a CPU-only torch build: resolving the parallel config divides by
    # torch.accelerator.device_count(), which is 0 there. One "device" per process is what the CPU run means.
    torch.accelerator.device_count = lambda: 1
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    try:
        results = {family: _rank_runs(rank, family, config) for family, config in configs.items()}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _rank_runs(rank: int, family: str, config: CGTaylorConfig) -> dict:
    results = {}
    spec, before = _model(family)
    apply_cg_taylor(before, config)  # CG-Taylor first, then the split hooks
    _parallelise(before)
    results["applied_before"] = _generate(spec, before)
    spec, after = _model(family)
    _parallelise(after)
    apply_cg_taylor(after, config)  # split hooks first, then CG-Taylor
    results["applied_after"] = _generate(spec, after)
    results["own_input"] = _generate(spec, after, seed=rank)  # each rank a different input
    return results


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(family: str) -> CGTaylorConfig:
    """Paper settings with a threshold between the single-process run's first-block errors: both decisions occur."""
    spec, transformer = _model(family)
    return CGTaylorConfig(**spec.cg_taylor).with_updates(threshold=mixed_threshold(spec, transformer, STEPS),
                                                         warmup_steps=2)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Both families in one pair of processes (starting a process costs more than the runs)."""
    configs = {family: _config(family) for family in SPECS}
    out_dir = tmp_path_factory.mktemp("context_parallel")
    mp.spawn(_worker, args=(_free_port(), configs, str(out_dir)), nprocs=WORLD, join=True)
    return configs, [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.parametrize("family", list(SPECS))
def test_ulysses_two_ranks_take_one_decision_and_match_one_process(family, two_ranks):
    configs, ranks = two_ranks
    spec, single = _model(family)
    apply_cg_taylor(single, configs[family])
    reference, reference_decisions = _generate(spec, single)
    computed = [c for _, _, c, *_ in reference_decisions]
    assert any(computed) and not all(computed), "the threshold must give both decisions"

    for order in ("applied_before", "applied_after"):
        for rank in ranks:
            sample, rank_decisions = rank[family][order]
            torch.testing.assert_close(sample, reference, rtol=1e-4, atol=1e-5, msg=order)
            assert [d[:4] for d in rank_decisions] == [d[:4] for d in reference_decisions], order
            assert [d[4] is None for d in rank_decisions] == [d[4] is None for d in reference_decisions]
            torch.testing.assert_close([d[4] or 0.0 for d in rank_decisions],
                                       [d[4] or 0.0 for d in reference_decisions], rtol=1e-4, atol=1e-7)
    # Different inputs per rank: the outputs differ, the decisions (and the error they came from) do not.
    own = [rank[family]["own_input"] for rank in ranks]
    assert not torch.allclose(own[0][0], own[1][0])
    assert own[0][1] == own[1][1]
    assert [d[:2] for d in own[0][1]] == [d[:2] for d in reference_decisions]


def test_single_process_gate_uses_no_collective():
    from cgtaylor.parallel import context_parallel_group, relative_l1

    _, transformer = _model("flux")
    assert not dist.is_initialized() and context_parallel_group(transformer) is None
    actual, estimate = torch.tensor([1.0, -2.0, 3.0]), torch.tensor([1.5, -2.0, 2.0])
    assert relative_l1(estimate, actual) == pytest.approx(1.5 / 6.0)
