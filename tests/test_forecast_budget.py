"""The forecast budget: an exact count of forecast steps per run, the gate choosing where. Pure counting first, the
gate on fixed error sequences next, then tiny pipelines (random weights) and the comparison protocol."""

import math

import pytest
import torch

from cgtaylor import CGTaylorConfig, apply_cg_taylor, cg_taylor_stats, remove_cg_taylor
from cgtaylor.experiments.protocol import Entry, EntrySearch
from cgtaylor.experiments.registry import knob_of
from cgtaylor.experiments.sample_sets import SampleSet
from cgtaylor.forecast_budget import PACE_GAIN, Budget
from cgtaylor.gate import decide
from tiny_pipelines import tiny_dit_pipeline

DIT_LABELS = [1, 7]


def test_a_budget_counts_the_share_of_all_steps_within_the_steps_the_gate_may_forecast():
    assert Budget.for_run(0.5, 50, 3) == Budget(25, 46)  # steps 3..48 are gated
    assert Budget.for_run(0.5, 50, 0) == Budget(25, 48)  # step 0 is always computed
    assert Budget.for_run(0.67, 25, 1) == Budget(17, 23)  # 16.75 rounds to 17
    assert Budget.for_run(0.95, 10, 3) == Budget(6, 6)  # no more than every gated step
    assert Budget.for_run(0.0, 50, 3).forecasts == 0


def test_the_budget_forces_a_compute_when_spent_and_a_forecast_when_the_rest_must_be():
    budget = Budget(10, 20)
    assert budget.forced(10, 5, 30) is True  # nothing left
    assert budget.forced(5, 24, 30) is False  # 5 left, steps 24..28 left: all must be forecast
    assert budget.forced(5, 23, 30) is None
    assert budget.pace(5, 19, 30) == pytest.approx((5 / 10) / (10 / 20))  # on plan: 1
    assert budget.threshold_scale(2, 19, 30) == pytest.approx(((8 / 10) / 0.5) ** PACE_GAIN)  # behind: looser
    assert budget.threshold_scale(10, 19, 30) == 0.0


def test_decide_follows_the_budget_before_the_cap_and_the_error():
    common = dict(step=10, num_steps=30, warmup_steps=3, threshold=0.05, last_block_ready=True)
    forced = decide(first_block_error=0.0, consecutive_forecasts=9, max_consecutive_forecasts=2, budget_forced=False,
                    **common)
    assert (forced.compute, forced.reason) == (False, "budget")
    spent = decide(first_block_error=0.0, consecutive_forecasts=0, max_consecutive_forecasts=None, budget_forced=True,
                   **common)
    assert (spent.compute, spent.reason) == (True, "budget")
    no_history = decide(first_block_error=0.0, consecutive_forecasts=0, max_consecutive_forecasts=None,
                        budget_forced=False, **dict(common, last_block_ready=False))
    assert no_history.reason == "no_history"


def budget_schedule(errors, threshold, share, warmup_steps=1):
    """The steps a budgeted gate forecasts on a fixed first-block error sequence (errors[s] at step s)."""
    steps = len(errors)
    budget, forecast = Budget.for_run(share, steps, warmup_steps), []
    for step, error in enumerate(errors):
        forced, scale = None, 1.0
        if warmup_steps <= step < steps - 1 and step > 0:
            forced = budget.forced(len(forecast), step, steps)
            scale = budget.threshold_scale(len(forecast), step, steps)
        decision = decide(step=step, num_steps=steps, warmup_steps=warmup_steps, first_block_error=error,
                          threshold=threshold * scale, last_block_ready=True, consecutive_forecasts=0,
                          max_consecutive_forecasts=None, budget_forced=forced)
        if not decision.compute:
            forecast.append(step)
    return forecast


@pytest.mark.parametrize("threshold", [0.0, 1e-3, 0.05, 1.0, math.inf])
def test_any_threshold_forecasts_exactly_the_budget(threshold):
    errors = [None] + [0.02, 0.08, 0.01, 0.2, 0.03, 0.04, 0.01, 0.06, 0.02, 0.05, 0.03, 0.01, 0.09, 0.02, 0.01, 0.04,
                       0.03, 0.02, 0.01]
    assert len(budget_schedule(errors, threshold, 0.5)) == 10


def test_within_the_budget_the_gate_forecasts_where_the_errors_are_small():
    # one large error in every pair of steps: a threshold between the two levels forecasts the small ones
    errors = [None] + [0.01, 0.5] * 9 + [0.01]
    # 8 forecasts among the 9 small errors; ahead of its pace after step 11, the gate skips step 13 to spread them
    assert budget_schedule(errors, 0.05, 0.4) == [1, 3, 5, 7, 9, 11, 15, 17]


# --- on a tiny pipeline -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dit():
    pipe = tiny_dit_pipeline()
    yield pipe
    remove_cg_taylor(pipe)


def run_dit(pipe, seed=0, steps=12):
    return pipe(class_labels=DIT_LABELS, num_inference_steps=steps, guidance_scale=1.5,
                generator=torch.Generator().manual_seed(seed), output_type="pt").images


@pytest.mark.parametrize("threshold", [0.0, 0.05, math.inf])
def test_every_run_forecasts_the_same_count_whatever_the_threshold_and_seed(dit, threshold):
    apply_cg_taylor(dit, CGTaylorConfig(threshold=threshold, warmup_steps=2, forecast_budget=0.5))
    for seed in (0, 1):
        run_dit(dit, seed)
        stats = cg_taylor_stats(dit)
        assert all(totals.forecast_steps == 6 for totals in stats.totals().values())  # round(0.5 * 12)
    run_dit(dit, 0, steps=20)  # the count follows the run's own step count
    assert all(totals.forecast_steps == 10 for totals in cg_taylor_stats(dit).totals().values())


def test_a_budget_of_zero_is_the_plain_model(dit):
    remove_cg_taylor(dit)
    reference = run_dit(dit)
    apply_cg_taylor(dit, CGTaylorConfig(threshold=math.inf, warmup_steps=2, forecast_budget=0.0))
    torch.testing.assert_close(run_dit(dit), reference, rtol=0, atol=0)
    assert cg_taylor_stats(dit).forecast_steps == 0


def test_a_budget_without_a_step_count_is_refused_when_sampling(dit):
    remove_cg_taylor(dit)
    transformer = dit.transformer  # a bare transformer: no pipeline tells the step count
    apply_cg_taylor(transformer, CGTaylorConfig(threshold=0.05, forecast_budget=0.5))
    latents = torch.randn(1, transformer.config.in_channels, 4, 4)
    try:
        with pytest.raises(ValueError, match=r"forecast_budget needs the run's step count"):
            transformer(latents, timestep=torch.tensor([999]), class_labels=torch.tensor([1]))
    finally:
        remove_cg_taylor(transformer)


@pytest.mark.parametrize("kwargs, message", [
    (dict(forecast_budget=1.0), r"forecast_budget must be None or a number in \[0, 1\)"),
    (dict(forecast_budget=-0.1), r"forecast_budget must be None or a number in \[0, 1\)"),
    (dict(forecast_budget=True), r"forecast_budget must be"),
    (dict(forecast_budget="half"), r"forecast_budget must be"),
    (dict(forecast_budget=0.5, compute_steps=[0, 2]), r"forecast_budget must be None when compute_steps"),
])
def test_bad_budgets_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CGTaylorConfig(**kwargs)


# --- in the comparison protocol -----------------------------------------------------------------------------------

def test_an_entry_may_land_on_the_budget_and_nothing_else_the_method_lacks():
    assert knob_of("cg-taylor") == ("threshold", (1e-4, 2.0))
    assert knob_of("cg-taylor", "forecast_budget")[0] == "forecast_budget"
    with pytest.raises(ValueError, match=r"cannot land on knob 'interval'; accepted: \['threshold', 'forecast_budget'\]"):
        Entry.from_dict({"group": "x", "method": "cg-taylor", "knob": "interval"})
    with pytest.raises(ValueError, match=r"cannot land on knob 'threshold'; accepted: \[\]"):
        Entry.from_dict({"group": "y", "method": "fora", "knob": "threshold"})


def test_a_budget_entry_lands_its_share_and_sweeps_its_threshold_as_a_grid():
    class BudgetSpeed:
        def __init__(self):
            self.seen = []

        def evaluate(self, method, params, sample_set):
            self.seen.append(dict(params))
            forecasts = round(params["forecast_budget"] * 50)
            speedup = 50 / (50 - forecasts + 0.04 * forecasts)
            return {"speedup": speedup, "psnr": [40.0 - abs(math.log(params["threshold"] / 0.03))]}

    evaluator = BudgetSpeed()
    entry = Entry.from_dict({"group": "cg-taylor-budget", "method": "cg-taylor", "knob": "forecast_budget",
                             "grid": {"threshold": [0.01, 0.03, 0.1]}})
    chosen = EntrySearch(entry, {"warmup_steps": 3}, [1, 3, 6], evaluator, SampleSet("selection", (0,), 1, 0),
                         [2.0, 3.0], 0.04, 6).run()
    assert {params["threshold"] for params in evaluator.seen} == {0.01, 0.03, 0.1}
    assert all(selection.on_target and selection.params["threshold"] == 0.03 for selection in chosen)
