"""calibrate_cg_taylor on a tiny random-weight DiT pipeline: targets met on the probe, cost bound, errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from tiny_pipelines import tiny_dit_pipeline

from cgtaylor import CGTaylorConfig, apply_cg_taylor, cg_taylor_config, cg_taylor_stats
from cgtaylor.api import _controller
from cgtaylor.calibrate import (
    CalibrationWarning,
    TargetUnreachableError,
    calibrate_cg_taylor,
)
from cgtaylor.meters import count_flops
from cgtaylor.threshold_search import ProbeSearch, run_reference

STEPS = 20


@pytest.fixture(scope="module")
def pipe():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: threads only contend
    yield tiny_dit_pipeline(num_layers=8)
    torch.set_num_threads(threads)


def probe(pipe, labels=(1, 2, 3, 4), seed=0, steps=STEPS):
    def generate():
        out = pipe(class_labels=list(labels), num_inference_steps=steps, generator=torch.Generator().manual_seed(seed),
                   output_type="np").images
        return torch.from_numpy(out).permute(0, 3, 1, 2)

    return generate


BASE = CGTaylorConfig(warmup_steps=3, num_inference_steps=STEPS)


def test_target_speedup_reached_on_probe(pipe):
    generate = probe(pipe)
    result = calibrate_cg_taylor(pipe, generate, target_speedup=2.0, base_config=BASE)
    report = result.report
    assert report.reached and abs(report.speedup / 2.0 - 1) <= 0.05
    assert result.config.threshold == report.threshold and result.config.warmup_steps == BASE.warmup_steps
    assert report.threshold_trace == [t.threshold for t in report.trials] and len(report.trials) == report.generations - 1
    # Left accelerated with the config found; a fresh run reproduces the reported speedup.
    assert cg_taylor_config(pipe.transformer) == result.config
    full = report.reference_flops
    _, flops = count_flops(generate, pipe.transformer)
    assert full / flops == pytest.approx(report.speedup, rel=1e-6)
    assert cg_taylor_stats(pipe.transformer).forecast_steps > 0
    assert "reached" in report.summary() and report.cost <= 12

    # A run at t shows the interval of thresholds that take the same decisions; its far end reproduces the run.
    trial = next(t for t in report.trials if t.threshold < t.same_upto < float("inf"))
    apply_cg_taylor(pipe, BASE.with_updates(threshold=trial.threshold))
    first, flops_a = count_flops(generate, pipe.transformer)
    apply_cg_taylor(pipe, BASE.with_updates(threshold=trial.same_upto))
    second, flops_b = count_flops(generate, pipe.transformer)
    assert flops_a == flops_b == trial.flops and torch.equal(first, second)


def test_min_psnr_respected_on_probe(pipe):
    result = calibrate_cg_taylor(pipe, probe(pipe), min_psnr=20.0, psnr_margin=1.0, base_config=BASE)
    report = result.report
    assert report.reached and report.speedup > 1.0
    assert report.psnr_min >= 21.0 and report.cost <= 12
    # Nothing faster that was tried kept the floor.
    assert all(t.psnr_min < 21.0 for t in report.trials if t.speedup > report.speedup)


@pytest.mark.parametrize("kwargs, message", [({}, "neither"), ({"target_speedup": 2.0, "min_psnr": 30.0}, "target_speedup and min_psnr")])
def test_exactly_one_target(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        calibrate_cg_taylor(pipe, probe(pipe), **kwargs)


def test_bad_targets(pipe):
    with pytest.raises(ValueError, match="target_speedup"):
        calibrate_cg_taylor(pipe, probe(pipe), target_speedup=0.5)
    with pytest.raises(ValueError, match="min_psnr"):
        calibrate_cg_taylor(pipe, probe(pipe), min_psnr=float("inf"))


def test_unreachable_speedup_warns_with_best_reachable(pipe):
    with pytest.warns(CalibrationWarning, match="best reachable speedup"):
        result = calibrate_cg_taylor(pipe, probe(pipe), target_speedup=50.0, base_config=BASE.with_updates(threshold=2.0))
    report = result.report
    assert not report.reached and report.best_reachable == pytest.approx(report.speedup)
    assert 1.0 < report.best_reachable < 50.0
    assert report.trials[-1].threshold == report.threshold and report.trials[-1].same_upto == float("inf")
    assert str(round(report.best_reachable, 3)) in report.message

    with pytest.raises(TargetUnreachableError) as error:
        calibrate_cg_taylor(pipe, probe(pipe), target_speedup=50.0, base_config=BASE.with_updates(threshold=2.0),
                            strict=True)
    assert error.value.report.best_reachable == pytest.approx(report.best_reachable)
    assert _controller(pipe.transformer) is None  # left plain on an exception


def test_unreachable_psnr_floor_returns_no_acceleration(pipe):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = calibrate_cg_taylor(pipe, probe(pipe), min_psnr=90.0, base_config=BASE.with_updates(threshold=0.01))
    assert any(issubclass(w.category, CalibrationWarning) for w in caught)
    assert not result.report.reached and result.config.threshold == 0.0 and result.report.speedup == 1.0
    assert result.report.best_reachable is not None and result.report.best_reachable < 91.0


def test_cost_bound(pipe):
    # A tight tolerance and a small budget: the search stops before a trial could pass max_cost, and says so.
    with pytest.warns(CalibrationWarning, match="not reached"):
        report = calibrate_cg_taylor(pipe, probe(pipe), target_speedup=1.9, tolerance=0.001, base_config=BASE,
                                     max_cost=3.0).report
    assert report.cost <= 3.0 and not report.reached and report.best_reachable == report.speedup
    assert report.cost == pytest.approx(1.0 + sum(t.cost for t in report.trials))
    assert report.generations == 1 + len(report.trials)


def test_the_reference_is_run_once_apart_from_the_search(pipe):
    generate, calls, base = probe(pipe, labels=(1, 2), steps=8), [], BASE.with_updates(num_inference_steps=8)

    def counted():
        calls.append(None)
        return generate()

    apply_cg_taylor(pipe, base)
    reference = run_reference(pipe, pipe.transformer, counted, "memo")
    assert len(calls) == 1 and _controller(pipe.transformer) is None  # taken with the accelerator removed
    _, flops = count_flops(generate, pipe.transformer)
    assert reference.flops == flops and reference.memo_flops  # every FLOP of the tiny DiT is inside a leaf
    search = ProbeSearch(pipe, pipe.transformer, counted, base, reference, max_cost=4.0, data_range=1.0)
    assert len(calls) == 1 and search.generations == 1 and search.trials[0.0].flops == flops
    trial = search.run(0.05)
    assert len(calls) == 2 and search.run(0.05) is trial and len(calls) == 2


def test_memoised_and_exact_flops_calibrate_alike(pipe):
    base = BASE.with_updates(num_inference_steps=10, warmup_steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)  # reached or not, both counts must search alike
        reports = [calibrate_cg_taylor(pipe, probe(pipe, labels=(1, 2), steps=10), target_speedup=2.0, base_config=base,
                                       max_cost=5.0, flops=mode).report for mode in ("memo", "exact")]
    assert len(reports[0].trials) >= 2
    assert reports[0].trials == reports[1].trials and reports[0].threshold == reports[1].threshold



def test_params_mapping_of_the_method_config(pipe):
    from omegaconf import OmegaConf

    from cgtaylor.calibrate import calibrate_from_params
    path = Path(__file__).resolve().parents[1] / "conf" / "method" / "cg-taylor-target.yaml"
    params = OmegaConf.to_container(OmegaConf.load(path))["params"]
    assert params["target_speedup"] and params["min_psnr"] is None
    with pytest.raises(ValueError, match="target_speedup and min_psnr"):
        calibrate_from_params(pipe, probe(pipe), dict(params, min_psnr=35.0))
    with pytest.raises(ValueError, match="Unknown CGTaylorConfig option"):
        calibrate_from_params(pipe, probe(pipe), dict(params, thresold=0.1))
