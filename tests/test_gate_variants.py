"""The gate variants: a threshold schedule, error feedback on the last-block forecast, and the gate's scope under
CFG (per branch, per sample). Pure functions on fixed numbers first, then tiny pipelines (random weights)."""

import math

import pytest
import torch

from cgtaylor import CGTaylorConfig, apply_cg_taylor, cg_taylor_stats, remove_cg_taylor
from cgtaylor.error_feedback import GAMMA_RANGE, apply_feedback, feedback_scale
from cgtaylor.experiments.registry import check_params
from cgtaylor.gate import decide
from cgtaylor.gate_scope import largest
from cgtaylor.parallel import relative_l1, relative_l1_per_sample
from cgtaylor.taylor import TaylorLadder
from cgtaylor.threshold_schedule import effective_threshold
from tiny_pipelines import sample_tiny_dit, tiny_wan_pipeline, wan_prompt_embeds

VARIANTS = [dict(threshold_schedule=(0.5, 2.0)), dict(error_feedback="scale"), dict(gate_scope="per_branch"),
            dict(gate_scope="per_sample")]


# --- the threshold schedule -------------------------------------------------------------------------------------

def test_effective_threshold_is_linear_in_progress():
    assert effective_threshold(0.1, None, 3, 11) == 0.1
    assert effective_threshold(0.1, (0.5, 2.0), 0, 11) == pytest.approx(0.05)
    assert effective_threshold(0.1, (0.5, 2.0), 5, 11) == pytest.approx(0.125)
    assert effective_threshold(0.1, (0.5, 2.0), 10, 11) == pytest.approx(0.2)
    assert effective_threshold(0.1, (0.5, 2.0), 7, None) == pytest.approx(0.05)  # unknown length: start scale
    assert effective_threshold(0.1, (0.5, 2.0), 0, 1) == pytest.approx(0.05)
    assert effective_threshold(math.inf, (0.5, 2.0), 4, 11) == math.inf


def forecast_steps(errors, threshold, schedule=None, warmup_steps=1):
    """The steps the gate forecasts on a fixed first-block error sequence (errors[s] at step s)."""
    forecast, in_a_row = [], 0
    for step, error in enumerate(errors):
        decision = decide(step=step, num_steps=len(errors), warmup_steps=warmup_steps, first_block_error=error,
                          threshold=effective_threshold(threshold, schedule, step, len(errors)),
                          last_block_ready=True, consecutive_forecasts=in_a_row, max_consecutive_forecasts=None)
        in_a_row = 0 if decision.compute else in_a_row + 1
        if not decision.compute:
            forecast.append(step)
    return forecast


def test_a_loosening_schedule_moves_the_forecasts_late():
    errors = [None] + [0.06] * 10  # 11 steps, one error throughout
    assert forecast_steps(errors, 0.05) == []
    assert forecast_steps(errors, 0.07) == list(range(1, 10))
    # 0.05 * (0.5 + 1.5 s / 10) reaches 0.06 at s = 4.67: steps 5..9 forecast, the last one computed
    assert forecast_steps(errors, 0.05, (0.5, 2.0)) == [5, 6, 7, 8, 9]
    # the reverse schedule is loose early: forecast until the threshold falls below the error (s < 5.33)
    assert forecast_steps(errors, 0.05, (2.0, 0.5)) == [1, 2, 3, 4, 5]


def test_a_flat_schedule_keeps_the_schedule_of_one_threshold():
    errors = [None, 0.01, 0.2, 0.03, 0.04, 0.08, 0.02, 0.05, 0.01]
    assert forecast_steps(errors, 0.05, (1.0, 1.0)) == forecast_steps(errors, 0.05) == [1, 3, 4, 6]  # 0.05 is not below


# --- validation -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(threshold_schedule=0.5), r"threshold_schedule must be None or a pair"),
    (dict(threshold_schedule=(0.5,)), r"threshold_schedule must be None or a pair"),
    (dict(threshold_schedule=(0.0, 1.0)), r"threshold_schedule must be .*> 0"),
    (dict(threshold_schedule=(1.0, math.inf)), r"threshold_schedule must be .*finite"),
    (dict(threshold_schedule=("a", 1.0)), r"threshold_schedule must be"),
    (dict(threshold_schedule=(True, 1.0)), r"threshold_schedule must be"),
    (dict(threshold_schedule=(1.0, 2.0), compute_steps=[0, 2]), r"threshold_schedule must be None when compute_steps"),
    (dict(error_feedback="blend"), r"error_feedback must be one of \('none', 'scale'\)"),
    (dict(error_feedback="scale", forecast="modules"), r"error_feedback='scale' needs forecast in"),
    (dict(gate_scope="per_token"), r"gate_scope must be one of \('shared', 'per_branch', 'per_sample'\)"),
])
def test_bad_variant_options_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CGTaylorConfig(**kwargs)


def test_variant_defaults_and_conversions():
    config = CGTaylorConfig()
    assert (config.threshold_schedule, config.error_feedback, config.gate_scope) == (None, "none", "shared")
    assert CGTaylorConfig(threshold_schedule=[1, 3]).threshold_schedule == (1.0, 3.0)
    assert CGTaylorConfig.from_dict({"gate_scope": "per_sample"}).gate_scope == "per_sample"


def test_the_comparison_accepts_the_variant_options():
    params = {"threshold": 0.1, "threshold_schedule": [0.5, 2.0], "error_feedback": "scale", "gate_scope": "per_branch"}
    assert check_params("cg-taylor", params) == params
    with pytest.raises(ValueError, match=r"parameter 'gate_scope' must be one of"):
        check_params("cg-taylor", {"gate_scope": "everything"})


# --- error feedback -------------------------------------------------------------------------------------------------

def test_gamma_is_the_per_sample_least_squares_scale_clamped():
    previous = torch.zeros(5, 3, 4)
    forecast = torch.ones(5, 3, 4)
    actual = torch.stack([torch.ones(3, 4), 0.5 * torch.ones(3, 4), -torch.ones(3, 4), 3 * torch.ones(3, 4),
                          torch.ones(3, 4)])
    forecast[4] = 0  # the forecast did not move this sample: no scale to measure
    assert feedback_scale(forecast, actual, previous).tolist() == [1.0, 0.5, GAMMA_RANGE[0], GAMMA_RANGE[1], 1.0]


def test_linear_features_give_gamma_one_and_the_unchanged_forecast():
    ladder = TaylorLadder(1)
    start, slope = torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    for step in (2, 4):
        ladder.update(start + slope * step, step)
    actual = start + slope * 6  # the first block moves exactly as its order-1 forecast says
    gamma = feedback_scale(ladder.forecast(6), actual, ladder.factors[0])
    torch.testing.assert_close(gamma, torch.ones(2), rtol=0, atol=1e-5)
    last = torch.randn(2, 6, 8)
    assert torch.equal(apply_feedback(last, torch.randn(2, 6, 8), torch.ones(2)), last)


def test_feedback_scales_each_samples_increment():
    anchor, forecast = torch.zeros(2, 3), torch.tensor([[2.0, 2.0, 2.0], [4.0, 4.0, 4.0]])
    corrected = apply_feedback(forecast, anchor, torch.tensor([0.5, 1.5]))
    assert corrected.tolist() == [[1.0, 1.0, 1.0], [6.0, 6.0, 6.0]]


# --- per-sample errors ------------------------------------------------------------------------------------------

def test_per_sample_errors_are_each_samples_relative_l1():
    estimate, actual = torch.randn(3, 5, 7), torch.randn(3, 5, 7)
    errors = relative_l1_per_sample(estimate, actual)
    expected = [relative_l1(estimate[i:i + 1], actual[i:i + 1]) for i in range(3)]
    assert errors == pytest.approx(expected, rel=1e-6)
    assert largest(errors) == max(errors)
    assert math.isnan(largest([0.1, math.nan]))


# --- on tiny pipelines ------------------------------------------------------------------------------------------

DIT_STEPS, DIT_LABELS = 16, [1, 3]


@pytest.fixture
def dit(tiny_dit):
    return tiny_dit


def run_dit(pipe):
    return sample_tiny_dit(pipe, DIT_LABELS, DIT_STEPS)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
def test_each_variant_at_threshold_zero_equals_the_plain_model(dit, variant):
    remove_cg_taylor(dit)
    reference = run_dit(dit)
    apply_cg_taylor(dit, CGTaylorConfig(threshold=0, warmup_steps=2, **variant))
    torch.testing.assert_close(run_dit(dit), reference, rtol=0, atol=0)
    assert cg_taylor_stats(dit).forecast_steps == 0


def test_error_feedback_corrects_the_forecast_steps_only(dit):
    apply_cg_taylor(dit, CGTaylorConfig(threshold=0.3, warmup_steps=2))
    plain, plain_records = run_dit(dit), cg_taylor_stats(dit).records
    apply_cg_taylor(dit, CGTaylorConfig(threshold=0.3, warmup_steps=2, error_feedback="scale"))
    corrected, records = run_dit(dit), cg_taylor_stats(dit).records
    forecast = [r for r in records if not r.computed]
    assert forecast and all(GAMMA_RANGE[0] <= r.feedback_gamma <= GAMMA_RANGE[1] for r in forecast)
    assert all(r.feedback_gamma is None for r in records if r.computed)
    assert any(r.feedback_gamma != 1.0 for r in forecast)
    first_forecast = min(r.step for r in forecast)
    assert [r.computed for r in records[:first_forecast + 1]] == [r.computed for r in plain_records[:first_forecast + 1]]
    assert not torch.equal(corrected, plain)


def test_per_sample_gate_decides_on_the_largest_sample_error(dit):
    threshold = 0.2
    apply_cg_taylor(dit, CGTaylorConfig(threshold=threshold, warmup_steps=2, gate_scope="per_sample"))
    run_dit(dit)
    records = cg_taylor_stats(dit).records
    gated = [r for r in records if r.reason in ("error", "forecast")]
    assert {r.reason for r in gated} == {"error", "forecast"}
    for r in gated:
        assert len(r.sample_errors) == 2 * len(DIT_LABELS)  # cond and uncond halves of the CFG batch
        assert r.first_block_error == max(r.sample_errors)
        assert r.computed == (max(r.sample_errors) >= threshold)
    # the cost of agreement: computed steps where some sample alone would have been forecast
    assert any(r.computed and min(r.sample_errors) < threshold for r in gated)
    assert all(r.threshold == threshold for r in gated)


def test_a_schedule_records_the_threshold_it_compared_with(dit):
    apply_cg_taylor(dit, CGTaylorConfig(threshold=0.3, warmup_steps=2, threshold_schedule=(0.5, 2.0)))
    run_dit(dit)
    for r in cg_taylor_stats(dit).records:
        assert r.threshold == pytest.approx(0.3 * (0.5 + 1.5 * r.step / (DIT_STEPS - 1)))
        if r.reason in ("error", "forecast"):
            assert r.computed == (r.first_block_error >= r.threshold)


WAN_THRESHOLD = 0.25  # at step 8 the cond error is 0.28 and the uncond one 0.22 (both 11% away)


def run_wan(pipe, steps):
    # an uncond embedding far from the cond one, so that the two branches' errors differ
    embeds = wan_prompt_embeds()
    embeds["negative_prompt_embeds"] = 10 * embeds["negative_prompt_embeds"]
    return pipe(height=16, width=16, num_frames=5, num_inference_steps=steps, guidance_scale=5.0,
                generator=torch.Generator().manual_seed(0), output_type="pt", **embeds).frames


def test_per_branch_lets_uncond_decide_differently_from_cond():
    wan = tiny_wan_pipeline()
    run_wan(wan, 2)  # the model has answered cache_context once before hooks exist
    reference = run_wan(wan, 12)
    apply_cg_taylor(wan, CGTaylorConfig(threshold=0, warmup_steps=2, gate_scope="per_branch"))
    torch.testing.assert_close(run_wan(wan, 12), reference, rtol=0, atol=0)
    schedules = {}
    for scope in ("shared", "per_branch"):
        apply_cg_taylor(wan, CGTaylorConfig(threshold=WAN_THRESHOLD, warmup_steps=2, gate_scope=scope))
        run_wan(wan, 12)
        stats = cg_taylor_stats(wan)
        schedules[scope] = {c: [r.computed for r in stats.for_context(c)] for c in ("cond", "uncond")}
        if scope == "per_branch":
            for r in stats.records:
                if r.reason in ("error", "forecast"):
                    assert r.computed == (r.first_block_error >= WAN_THRESHOLD), (r.context, r.step)
    assert schedules["shared"]["cond"] == schedules["shared"]["uncond"]
    assert schedules["per_branch"]["cond"] != schedules["per_branch"]["uncond"]
    remove_cg_taylor(wan)



# --- under context parallelism: the per-sample sums are taken over every rank's shard ------------------------------

def on_two_ranks(function, per_rank_args, monkeypatch):
    """``function(*args, group=...)`` on each rank's shard, with a SUM all-reduce emulated across the two calls."""
    import torch.distributed as dist

    local = []
    monkeypatch.setattr(dist, "all_reduce", lambda tensor, op=None, group=None: local.append(tensor.clone()))
    for args in per_rank_args:
        function(*args, group="context-parallel")
    total = local[0] + local[1]
    monkeypatch.setattr(dist, "all_reduce", lambda tensor, op=None, group=None: tensor.copy_(total))
    return [function(*args, group="context-parallel") for args in per_rank_args]


def test_per_sample_sums_are_all_reduced_over_the_context_parallel_group(monkeypatch):
    generator = torch.Generator().manual_seed(3)
    forecast, actual, previous = (torch.randn(3, 8, 5, generator=generator) for _ in range(3))
    shards = [[t.chunk(2, dim=1)[rank] for t in (forecast, actual, previous)] for rank in range(2)]
    errors = on_two_ranks(relative_l1_per_sample, [s[:2] for s in shards], monkeypatch)
    gammas = on_two_ranks(feedback_scale, shards, monkeypatch)
    for rank in range(2):
        assert errors[rank] == pytest.approx(relative_l1_per_sample(forecast, actual), rel=1e-6)
        torch.testing.assert_close(gammas[rank], feedback_scale(forecast, actual, previous))
    assert relative_l1_per_sample(*shards[0][:2]) != pytest.approx(errors[0], rel=1e-3)  # a shard alone differs
