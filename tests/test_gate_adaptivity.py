"""The confidence gate adapts: its decisions follow the first-block error it measures, so two conditions at one
threshold get different schedules. A fixed schedule (any rule that ignores the error) fails these tests; the last
test shows the checks catching one.

Tiny DiT (4 blocks, random weights), 16 steps, threshold 0.3, class labels 1 and 3. On this machine every
first-block error of these runs lies at least 4% away from the threshold (gated runs and analysis runs alike), so
rounding differences between machines cannot flip a decision.
"""

import pytest
import torch

from cgtaylor import CGTaylorConfig, apply_cg_taylor, cg_taylor_stats, remove_cg_taylor
from tiny_pipelines import tiny_dit_pipeline

THRESHOLD = 0.3
STEPS = 16
LABELS = (1, 3)


@pytest.fixture(scope="module")
def dit():
    pipe = tiny_dit_pipeline()
    yield pipe
    remove_cg_taylor(pipe)


def gate_records(pipe, label: int, **config):
    apply_cg_taylor(pipe, CGTaylorConfig(threshold=THRESHOLD, warmup_steps=2, **config))
    pipe(class_labels=[label], num_inference_steps=STEPS, guidance_scale=1.5,
         generator=torch.Generator().manual_seed(0), output_type="pt")
    return cg_taylor_stats(pipe).records


def violations(records, threshold: float = THRESHOLD, decided=lambda r: r.computed) -> list[str]:
    """Records whose decision contradicts their first-block error (``decided``: the decision taken or, in
    analysis mode, the one the gate would have taken)."""
    found = []
    for r in records:
        if not decided(r) and not (r.first_block_error is not None and r.first_block_error < threshold):
            found.append(f"step {r.step} forecast with error {r.first_block_error}")
        if r.reason == "error" and not (decided(r) and r.first_block_error >= threshold):
            found.append(f"step {r.step} computed for its error {r.first_block_error}")
    return found


def schedule(records, decided=lambda r: r.computed) -> list[int]:
    return [r.step for r in records if decided(r)]


def test_forecast_steps_are_below_the_threshold_and_error_steps_at_or_above(dit):
    for label in LABELS:
        records = gate_records(dit, label)
        assert violations(records) == [], label
        reasons = {r.reason for r in records}
        assert {"forecast", "error"} <= reasons, (label, reasons)  # both sides of the threshold are exercised


def test_two_conditions_at_one_threshold_get_different_schedules(dit):
    schedules = [schedule(gate_records(dit, label)) for label in LABELS]
    assert schedules[0] != schedules[1]
    assert all(0 < len(s) < STEPS for s in schedules)


def test_analysis_records_show_the_same_adaptivity(dit):
    def would(r):
        return r.would_compute

    schedules = []
    for label in LABELS:
        records = gate_records(dit, label, analysis=True)
        assert all(r.computed for r in records)
        assert violations(records, decided=would) == [], label
        schedules.append(schedule(records, decided=would))
    assert schedules[0] != schedules[1]


def test_a_fixed_schedule_fails_these_checks(dit):
    first = schedule(gate_records(dit, LABELS[0]))
    forced = gate_records(dit, LABELS[1], compute_steps=tuple(first))
    assert schedule(forced) == first  # the same schedule whatever the condition
    assert violations(forced) != []  # and forecasts the gate would not have trusted
