"""The gate deciding ahead (decide_ahead=True): the plan on fixed numbers, then on tiny pipelines (random weights):
exact at threshold 0, no block computed on a planned step, the uncond pass following the cond pass's plan."""

import math

import pytest
import torch

from cgtaylor import CGTaylorConfig, apply_cg_taylor, cg_taylor_stats, remove_cg_taylor
from cgtaylor.blocks import find_blocks
from cgtaylor.decide_ahead import forecasts_ahead
from cgtaylor.experiments.registry import check_params
from tiny_pipelines import sample_tiny_dit, tiny_wan_pipeline, wan_prompt_embeds

STEPS, LABELS = 16, [1, 3]  # the tiny DiT's run

# --- the plan on fixed numbers ------------------------------------------------------------------------------------


def test_the_error_grows_with_the_distance_as_the_forecasts_order_says():
    # measured 0.01 at distance 1, order 1: the grown error is 0.01 j^2 -> under 0.05 for j = 1, 2 (0.04), not 3
    assert forecasts_ahead(error=0.01, measured_distance=1, order=1, thresholds=[0.05] * 10, cap=None) == 2
    # measured at distance 2, the same error is 0.01 (j / 2)^2: j = 4 gives 0.04, j = 5 gives 0.0625
    assert forecasts_ahead(error=0.01, measured_distance=2, order=1, thresholds=[0.05] * 10, cap=None) == 4
    # a higher order grows faster beyond the measured distance: 0.01 (j / 2)^3 is 0.0339 at 3 and 0.08 at 4
    assert forecasts_ahead(error=0.01, measured_distance=2, order=2, thresholds=[0.05] * 10, cap=None) == 3


def test_the_plan_stops_at_the_cap_the_run_and_a_tighter_threshold():
    assert forecasts_ahead(error=0.001, measured_distance=1, order=0, thresholds=[0.05] * 10, cap=3) == 3
    assert forecasts_ahead(error=0.001, measured_distance=1, order=0, thresholds=[0.05] * 2, cap=None) == 2
    # a threshold schedule that tightens: 0.01 j fits under 0.05, 0.05, 0.02 only for j = 1, 2 (0.03 > 0.02 at j=3)
    assert forecasts_ahead(error=0.01, measured_distance=1, order=0, thresholds=[0.05, 0.05, 0.02, 0.5],
                           cap=None) == 2


@pytest.mark.parametrize("error, distance", [(None, 1), (0.01, 0), (math.nan, 1), (0.05, 1)])
def test_nothing_is_planned_without_a_measured_error_under_the_threshold(error, distance):
    assert forecasts_ahead(error=error, measured_distance=distance, order=1, thresholds=[0.05] * 5, cap=None) == 0


def test_an_infinite_threshold_plans_the_cap_a_fixed_schedule():
    assert forecasts_ahead(error=3.0, measured_distance=1, order=3, thresholds=[math.inf] * 9, cap=2) == 2
    assert forecasts_ahead(error=3.0, measured_distance=1, order=3, thresholds=[0.0] * 9, cap=2) == 0


# --- validation -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(decide_ahead="yes"), r"decide_ahead must be True or False"),
    (dict(decide_ahead=True), r"decide_ahead=True needs forecast in \('last_block', 'modules'\)"),
    (dict(decide_ahead=True, forecast="last_block", forecast_budget=0.5),
     r"does not combine with \['forecast_budget'\]"),
    (dict(decide_ahead=True, forecast="modules", probe_block=2, compute_steps=[0, 3]),
     r"does not combine with \['compute_steps', 'probe_block'\]"),
])
def test_bad_combinations_name_the_fields(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CGTaylorConfig(**kwargs)


def test_the_comparison_accepts_the_option():
    assert check_params("cg-taylor", {"decide_ahead": True}) == {"decide_ahead": True}
    with pytest.raises(ValueError, match=r"parameter 'decide_ahead' must be bool"):
        check_params("cg-taylor", {"decide_ahead": 1})


# --- on tiny pipelines: a DiT (cond and uncond in one batch) and a Wan (cond and uncond as two passes) ---------

@pytest.fixture
def dit(tiny_dit):
    return tiny_dit


def run_dit(pipe):
    return sample_tiny_dit(pipe, LABELS, STEPS)


def count_calls(module):
    calls = []
    handle = module.register_forward_hook(lambda *_: calls.append(1))
    return calls, handle


@pytest.mark.parametrize("forecast", ["last_block", "modules"])
def test_threshold_zero_equals_the_plain_model(dit, forecast):
    remove_cg_taylor(dit)
    reference = run_dit(dit)
    apply_cg_taylor(dit, CGTaylorConfig(threshold=0, warmup_steps=2, forecast=forecast, decide_ahead=True))
    torch.testing.assert_close(run_dit(dit), reference, rtol=0, atol=0)
    assert cg_taylor_stats(dit).forecast_steps == 0


@pytest.mark.parametrize("forecast", ["last_block", "modules"])
def test_a_cap_of_one_alternates_and_a_planned_step_computes_no_block(dit, forecast):
    apply_cg_taylor(dit, CGTaylorConfig(threshold=math.inf, warmup_steps=1, forecast=forecast, decide_ahead=True,
                                        max_consecutive_forecasts=1))
    first = find_blocks(dit.transformer).blocks[0]
    # the first block's attention computes (its query projection runs) on computed steps only: last_block skips the
    # block whole, modules forecasts its attention
    calls, handle = count_calls(first.attn1.to_q)
    run_dit(dit)
    handle.remove()
    records = cg_taylor_stats(dit).records
    # step 0 has nothing to forecast from; step 1 measures the first error and plans step 2, and so on
    assert [r.step for r in records if not r.computed] == list(range(2, STEPS - 1, 2))
    assert {r.reason for r in records if not r.computed} == {"planned"}
    assert len(calls) == sum(r.computed for r in records)


def test_the_plan_follows_the_measured_errors(dit):
    threshold = 0.3
    apply_cg_taylor(dit, CGTaylorConfig(threshold=threshold, warmup_steps=2, forecast="last_block",
                                        first_block_order=2, decide_ahead=True))
    run_dit(dit)
    records = cg_taylor_stats(dit).records
    assert any(not r.computed for r in records) and records[-1].computed
    computed = [r for r in records if r.computed]
    for r, following in zip(computed, computed[1:]):
        planned = following.step - r.step - 1
        if r.first_block_error is None or r.step < 1:
            assert planned == 0
            continue
        distance = r.step - max(c.step for c in computed if c.step < r.step)
        steps_left = STEPS - 2 - r.step
        expected = forecasts_ahead(error=r.first_block_error, measured_distance=distance, order=2,
                                   thresholds=[threshold] * steps_left, cap=None)
        assert planned == expected, r.step


def test_analysis_mode_computes_every_step_and_records_the_plan(dit):
    config = CGTaylorConfig(threshold=0.3, warmup_steps=2, forecast="last_block", first_block_order=2,
                            decide_ahead=True)
    apply_cg_taylor(dit, config)
    run_dit(dit)
    gated = [r.computed for r in cg_taylor_stats(dit).records]
    apply_cg_taylor(dit, config.with_updates(analysis=True))
    run_dit(dit)
    records = cg_taylor_stats(dit).records
    assert all(r.computed for r in records)
    assert [r.would_compute for r in records] == gated
    assert all(r.first_block_error is not None for r in records if r.step >= 1)


def run_wan(pipe, steps):
    return pipe(height=16, width=16, num_frames=5, num_inference_steps=steps, guidance_scale=5.0,
                generator=torch.Generator().manual_seed(0), output_type="pt", **wan_prompt_embeds()).frames


def test_under_cfg_the_uncond_pass_follows_the_cond_passs_plan():
    wan = tiny_wan_pipeline()
    run_wan(wan, 2)  # the model has answered cache_context once before hooks exist
    reference = run_wan(wan, 12)
    apply_cg_taylor(wan, CGTaylorConfig(threshold=0, warmup_steps=2, forecast="last_block", decide_ahead=True))
    torch.testing.assert_close(run_wan(wan, 12), reference, rtol=0, atol=0)
    apply_cg_taylor(wan, CGTaylorConfig(threshold=math.inf, warmup_steps=2, forecast="last_block", decide_ahead=True,
                                        max_consecutive_forecasts=2))
    run_wan(wan, 12)
    stats = cg_taylor_stats(wan)
    cond, uncond = ([r.computed for r in stats.for_context(c)] for c in ("cond", "uncond"))
    assert cond == uncond
    assert [s for s, computed in enumerate(cond) if not computed] == [2, 3, 5, 6, 8, 9]
    remove_cg_taylor(wan)
