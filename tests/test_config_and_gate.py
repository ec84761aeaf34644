import math

import pytest
import torch

from cgtaylor import CGTaylorConfig
from cgtaylor.gate import SharedDecisions, decide


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(threshold=-0.1), "threshold"),
        (dict(threshold=float("nan")), "threshold"),
        (dict(threshold="0.1"), "threshold"),
        (dict(warmup_steps=-1), "warmup_steps"),
        (dict(first_block_order=-1), "first_block_order"),
        (dict(last_block_order=9), "last_block_order"),
        (dict(last_block_order=1.0), "last_block_order"),
        (dict(forecast="middle"), "forecast"),
        (dict(taylor_formula="euler"), "taylor_formula"),
        (dict(max_consecutive_forecasts=0), "max_consecutive_forecasts"),
        (dict(num_inference_steps=0), "num_inference_steps"),
        (dict(cache_dtype="int8"), "cache_dtype"),
        (dict(cache_device="not-a-device"), "cache_device"),
        (dict(analysis="yes"), "analysis"),
        (dict(probe_block=0), "probe_block"),
        (dict(probe_block=2.0), "probe_block"),
        (dict(probe_block=True), "probe_block"),
        (dict(compute_steps="0,5"), "compute_steps"),
        (dict(compute_steps=5), "compute_steps"),
        (dict(compute_steps=[0, -1]), "compute_steps"),
        (dict(compute_steps=[0, 2.0]), "compute_steps"),
        (dict(compute_steps=[1, 2]), "compute_steps.*include step 0"),
        (dict(compute_steps=[0, 3, 9], num_inference_steps=8), r"compute_steps.*below num_inference_steps=8.*\[9\]"),
    ],
)
def test_bad_option_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        CGTaylorConfig(**kwargs)


def test_accepted_values_and_conversions():
    config = CGTaylorConfig(threshold=math.inf, cache_dtype="bfloat16", cache_device="cpu", max_consecutive_forecasts=3)
    assert config.cache_dtype is torch.bfloat16 and config.cache_device == torch.device("cpu")
    assert CGTaylorConfig(threshold=0).threshold == 0.0


def test_compute_steps_are_kept_sorted_and_distinct():
    assert CGTaylorConfig(compute_steps=[5, 0, 2, 5]).compute_steps == (0, 2, 5)
    assert CGTaylorConfig().compute_steps is None and CGTaylorConfig().probe_block == 1
    assert CGTaylorConfig.from_dict({"compute_steps": [0, 4], "probe_block": 3}).compute_steps == (0, 4)


def test_from_dict_rejects_unknown_keys_and_lists_the_accepted_ones():
    with pytest.raises(ValueError, match="thresold.*accepted"):
        CGTaylorConfig.from_dict({"thresold": 0.1})
    assert CGTaylorConfig.from_dict({"threshold": 0.2}).threshold == 0.2


def test_paper_presets():
    dit = CGTaylorConfig.paper_preset("dit")
    assert (dit.threshold, dit.first_block_order, dit.last_block_order, dit.warmup_steps) == (0.008, 3, 1, 3)
    assert dit.forecast == "last_block"
    with pytest.raises(ValueError, match="dit"):
        CGTaylorConfig.paper_preset("sdxl")


BASE = dict(num_steps=50, warmup_steps=3, threshold=0.1, last_block_ready=True, consecutive_forecasts=0,
            max_consecutive_forecasts=None)


@pytest.mark.parametrize(
    "step, error, overrides, compute, reason",
    [
        (0, None, {}, True, "first"),
        (49, 0.0, {}, True, "last"),
        (2, 0.0, {}, True, "warmup"),
        (10, None, {}, True, "no_history"),
        (10, 0.01, dict(last_block_ready=False), True, "no_history"),
        (10, 0.01, dict(consecutive_forecasts=2, max_consecutive_forecasts=2), True, "cap"),
        (10, 0.1, {}, True, "error"),
        (10, float("nan"), {}, True, "error"),
        (10, 0.0999, {}, False, "forecast"),
        (60, 0.0, dict(num_steps=None), False, "forecast"),
    ],
)
def test_decide(step, error, overrides, compute, reason):
    decision = decide(step=step, first_block_error=error, **{**BASE, **overrides})
    assert type(decision.compute) is bool
    assert (decision.compute, decision.reason) == (compute, reason)


@pytest.mark.parametrize(
    "step, error, overrides, compute, reason",
    [
        (0, None, {}, True, "first"),
        (4, 0.0, {}, True, "scheduled"),
        (1, 0.0, {}, False, "forecast"),  # inside warmup_steps: the schedule replaces the warm-up
        (5, 5.0, {}, False, "forecast"),  # an error above the threshold does not compute
        (5, float("nan"), {}, False, "forecast"),
        (49, 0.0, {}, False, "forecast"),  # nor does the last step
        (5, 0.0, dict(consecutive_forecasts=9, max_consecutive_forecasts=2), False, "forecast"),
        (5, 0.0, dict(last_block_ready=False), True, "no_history"),
    ],
)
def test_decide_with_a_forced_schedule(step, error, overrides, compute, reason):
    decision = decide(step=step, first_block_error=error, compute_steps=(0, 4), **{**BASE, **overrides})
    assert (decision.compute, decision.reason) == (compute, reason)


def test_shared_decisions_leader_and_follower():
    shared = SharedDecisions()
    shared.start_trajectory("cond")
    shared.start_trajectory("uncond")
    assert shared.is_leader("cond") and not shared.is_leader("uncond")
    shared.record(4, decide(step=4, first_block_error=0.0, **BASE))
    assert shared.lookup(4).compute is False and shared.lookup(5) is None
    shared.start_trajectory("cond")
    assert shared.lookup(4) is None
