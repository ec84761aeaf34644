"""Per-step threshold scales (CGTaylorConfig(step_scales=...), cgtaylor.step_scales): validation, the arithmetic of
the fit on fixed numbers, the gate's schedule on a tiny DiT (random weights), and the fit itself."""

import math

import pytest
import torch

from cgtaylor import CGTaylorConfig, apply_cg_taylor, cg_taylor_stats, fit_step_scales, remove_cg_taylor
from cgtaylor.gate import decide
from cgtaylor.step_scales import SCALE_LIMIT, scales_from_gains
from cgtaylor.threshold_schedule import effective_threshold
from tiny_pipelines import sample_tiny_dit

STEPS, LABELS = 12, [1, 3]


@pytest.mark.parametrize("value", ["fit", [1.0], [1.0, 0.0], [1.0, math.inf], [1.0, True], 3.0])
def test_bad_scales_name_the_field_and_what_is_accepted(value):
    with pytest.raises(ValueError, match=r"CGTaylorConfig.step_scales must be None or a list of finite numbers > 0"):
        CGTaylorConfig(step_scales=value)


def test_scales_refuse_a_forced_schedule_and_another_step_count():
    with pytest.raises(ValueError, match=r"step_scales must be None when compute_steps is set"):
        CGTaylorConfig(step_scales=[1.0] * 4, compute_steps=[0, 2])
    with pytest.raises(ValueError, match=r"holds 4 scales, one per step, but num_inference_steps is 5"):
        CGTaylorConfig(step_scales=[1.0] * 4, num_inference_steps=5)
    assert CGTaylorConfig(step_scales=[1, 2.5]).step_scales == (1.0, 2.5)


def test_the_threshold_of_a_step_is_scaled_and_a_run_of_another_length_is_refused():
    scales = (1.0, 0.5, 4.0)
    assert effective_threshold(0.1, None, 1, 3, scales) == pytest.approx(0.05)
    assert effective_threshold(0.1, (1.0, 3.0), 2, 3, scales) == pytest.approx(0.1 * 4.0 * 3.0)  # with a schedule
    with pytest.raises(ValueError, match=r"holds 3 scales \(fitted for 3 steps\), but this run has 5 steps"):
        effective_threshold(0.1, None, 1, 5, scales)
    with pytest.raises(ValueError, match=r"step_scales needs the run's step count"):
        effective_threshold(0.1, None, 1, None, scales)


def test_scales_are_the_mean_gain_over_each_gain_within_the_limit():
    gains = {1: 4.0, 2: 1.0, 3: 0.25, 4: 1e-5, 5: 0.0}   # 6 steps; step 0 never measured
    scales = scales_from_gains(gains, 6)
    centre = math.exp((math.log(4.0) + math.log(1.0) + math.log(0.25) + math.log(1e-5)) / 4)
    assert scales[0] == 1.0                                   # not measured: the plain threshold
    assert scales[1] == pytest.approx(centre / 4.0) and scales[3] == pytest.approx(centre / 0.25)
    assert scales[4] == SCALE_LIMIT and scales[5] == SCALE_LIMIT   # clipped; a forecast that changed nothing
    assert scales_from_gains({}, 3) == (1.0, 1.0, 1.0)


def test_the_last_step_is_gated_only_with_scales():
    common = dict(step=9, num_steps=10, warmup_steps=2, first_block_error=0.01, threshold=0.1, last_block_ready=True,
                  consecutive_forecasts=0, max_consecutive_forecasts=None)
    assert decide(**common).reason == "last"
    forecast = decide(**common, gate_last_step=True)
    assert not forecast.compute and forecast.reason == "forecast"


# --- on a tiny DiT --------------------------------------------------------------------------------------------------

def run(pipe):
    return sample_tiny_dit(pipe, LABELS, STEPS)


def test_threshold_zero_with_scales_equals_the_plain_model(tiny_dit):
    remove_cg_taylor(tiny_dit)
    reference = run(tiny_dit)
    apply_cg_taylor(tiny_dit, CGTaylorConfig(threshold=0, warmup_steps=1, step_scales=[50.0] * STEPS))
    torch.testing.assert_close(run(tiny_dit), reference, rtol=0, atol=0)
    assert cg_taylor_stats(tiny_dit).forecast_steps == 0


@pytest.mark.parametrize("forecast, decide_ahead", [("residual", False), ("last_block", True)])
def test_the_gate_forecasts_where_the_scales_allow_and_may_forecast_the_last_step(tiny_dit, forecast, decide_ahead):
    # a threshold no error passes, scaled up at steps 4, 7 and the last: those are the forecast steps
    loose = {4, 7, STEPS - 1}
    scales = [1e9 if step in loose else 1.0 for step in range(STEPS)]
    apply_cg_taylor(tiny_dit, CGTaylorConfig(threshold=1e-9, warmup_steps=2, forecast=forecast,
                                             decide_ahead=decide_ahead, step_scales=scales, first_block_order=1))
    run(tiny_dit)
    records = cg_taylor_stats(tiny_dit).records
    assert {r.step for r in records if not r.computed} == loose
    remove_cg_taylor(tiny_dit)


def test_a_run_with_another_step_count_is_refused(tiny_dit):
    apply_cg_taylor(tiny_dit, CGTaylorConfig(threshold=0.1, warmup_steps=1, step_scales=[1.0] * (STEPS + 1)))
    with pytest.raises(ValueError, match=rf"holds {STEPS + 1} scales .* but this run has {STEPS} steps"):
        run(tiny_dit)
    remove_cg_taylor(tiny_dit)


def test_the_fit_measures_each_forecastable_step_and_leaves_the_model_plain(tiny_dit):
    remove_cg_taylor(tiny_dit)
    reference = run(tiny_dit)
    fit = fit_step_scales(tiny_dit.transformer, lambda: run(tiny_dit), CGTaylorConfig(first_block_order=1),
                          num_inference_steps=STEPS)
    # every step but the first can be forecast (step 1 from step 0 alone, at order 0)
    assert sorted(fit.gains) == list(range(1, STEPS)) and len(fit.scales) == STEPS
    for step, gain in fit.gains.items():
        assert gain == pytest.approx(fit.output_errors[step] / fit.first_block_errors[step])
        assert fit.output_errors[step] > 0
    measured = [math.log(fit.scales[s]) for s in fit.gains]
    assert sum(measured) / len(measured) == pytest.approx(0.0, abs=1e-9)  # the scales' geometric mean is 1
    assert fit.scales[0] == 1.0
    assert len(fit.rows()) == STEPS
    torch.testing.assert_close(run(tiny_dit), reference, rtol=0, atol=0)
    CGTaylorConfig(step_scales=fit.scales, num_inference_steps=STEPS)  # usable as it is


def test_a_comparison_entry_fits_its_scales_once_per_forecaster(tmp_path, monkeypatch):
    from cgtaylor.experiments import compose
    from cgtaylor.experiments import methods
    from cgtaylor.experiments.models import load_model
    from cgtaylor.experiments.registry import check_params

    assert check_params("cg-taylor", {"step_scales": "fit"}) == {"step_scales": "fit"}
    with pytest.raises(ValueError, match=r"'step_scales' must be a list of per-step scales, 'fit'"):
        check_params("cg-taylor", {"step_scales": "auto"})
    model = load_model(compose(["model=dit-digits", "model.source=tiny"]).model)
    params = dict(forecast="residual", taylor_formula="newton", threshold=0.05, warmup_steps=1, step_scales="fit")
    calibration = tmp_path / "cg-taylor-calibration-v2-6.json"
    generator = methods.make_generator(model, "cg-taylor", params, num_inference_steps=6,
                                       calibration_file=calibration)
    scales = generator.params["step_scales"]
    generator.remove()
    assert len(scales) == 6 and all(s > 0 for s in scales)
    assert len(list(tmp_path.glob("step-scales-6-*.json"))) == 1

    def no_refit(*args, **kwargs):
        raise AssertionError("fitted again")

    monkeypatch.setattr("cgtaylor.step_scales.fit_step_scales", no_refit)
    # another threshold, warm-up or cap is the same forecaster: read from the file
    again = methods.make_generator(model, "cg-taylor", dict(params, threshold=0.2, max_consecutive_forecasts=2),
                                   num_inference_steps=6, calibration_file=calibration)
    assert again.params["step_scales"] == scales
    again.remove()
    with pytest.raises(AssertionError, match="fitted again"):  # another forecaster is fitted for itself
        methods.make_generator(model, "cg-taylor", dict(params, last_block_order=2), num_inference_steps=6,
                               calibration_file=calibration)


def test_the_fits_in_a_cache_are_kept_with_the_results_and_summed_up(tmp_path):
    import json

    import pandas as pd

    from cgtaylor.experiments.step_gains import refresh, step_gains_section, summary

    cache = tmp_path / "comparison" / ".cache" / "dit-digits-abc123"
    cache.mkdir(parents=True)
    gains = {1: 0.4, 2: 0.2, 3: 0.05, 4: 0.04, 5: 0.06, 6: 0.03, 7: 0.1}
    rows = [{"step": s, "output_error": None if s == 0 else gains[s] * 0.01,
             "first_block_error": None if s == 0 else 0.01, "gain": gains.get(s), "scale": 1.0} for s in range(8)]
    form = {"forecast": "residual", "taylor_formula": "newton"}
    fit = {"step_scales": [1.0] * 8, "steps": rows, "form": form, "num_inference_steps": 8, "conditions": 2}
    (cache / "step-scales-8-aaaa.json").write_text(json.dumps(fit))
    frame = refresh(tmp_path)
    assert len(frame) == 8 and set(frame["model"]) == {"dit-digits"}
    assert (tmp_path / "figures" / "step_gains.png").stat().st_size > 0
    row = summary(frame).iloc[0]
    # median of the 7 gains is 0.06: the largest are steps 1, 2 and 7
    assert row["largest gains (step: x median)"] == "1: 6.7, 2: 3.3, 7: 1.7"
    assert row["largest / smallest"] == round(0.4 / 0.03, 1) and row["last step / median"] == round(0.1 / 0.06, 2)
    # the cache gone, the CSV keeps the fit and the section still renders it
    (cache / "step-scales-8-aaaa.json").unlink()
    assert refresh(tmp_path).equals(pd.read_csv(tmp_path / "comparison" / "step_gains.csv"))
    assert "residual/newton" in "".join(step_gains_section(tmp_path))
