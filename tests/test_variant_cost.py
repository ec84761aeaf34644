"""What a forecast step costs, per CG-Taylor variant: the measurement, its rows on disk and the results section."""

import json

import pandas as pd
import pytest
from omegaconf import OmegaConf

from cgtaylor.experiments import compose
from cgtaylor.experiments.models import load_model
from cgtaylor.experiments.variant_cost import (cost_section, current_rows, forecast_step_cost, measure_variant_costs,
                                               write_variant_costs)

STEPS = 6


@pytest.fixture(scope="module")
def tiny_dit():
    cfg = compose(["model=dit-digits", "model.source=tiny"])
    return load_model(OmegaConf.to_container(cfg.model, resolve=True))


def _params(**extra):
    return {"first_block_order": 1, "last_block_order": 1, "warmup_steps": 2, "threshold": float("inf"), **extra}


@pytest.mark.parametrize("forecast", ["residual", "modules"])
def test_a_fixed_schedule_has_the_forecast_calls_it_asks_for_and_they_cost_a_fraction_of_a_full_call(tiny_dit, forecast):
    conditions = tiny_dit.default_conditions(1, seed=0)
    cost = forecast_step_cost(tiny_dit, _params(forecast=forecast, max_consecutive_forecasts=1), STEPS, conditions,
                              repeats=1)
    # warm-up 2, then forecast / compute alternating over the last 4 steps (the last step is always computed)
    assert cost["calls"] == STEPS
    assert cost["forecast_steps"] in (1, 2)
    assert 0 < cost["forecast_flops_share"] < 0.5
    assert cost["forecast_time_share"] > 0
    assert cost["cache_mib"] > 0


def test_module_forecasts_hold_more_cache_than_the_last_block_residual(tiny_dit):
    conditions = tiny_dit.default_conditions(1, seed=0)
    residual = forecast_step_cost(tiny_dit, _params(forecast="residual", max_consecutive_forecasts=1), STEPS,
                                  conditions, repeats=1)
    modules = forecast_step_cost(tiny_dit, _params(forecast="modules", max_consecutive_forecasts=1), STEPS,
                                 conditions, repeats=1)
    assert modules["cache_mib"] > residual["cache_mib"]


def _comparison_rows(params):
    return pd.DataFrame([
        dict(model="dit-digits", steps=STEPS, target=2.0, group="cg-taylor", method="cg-taylor", role="variant",
             params=json.dumps(params),
             test_psnr=40.0, test_speedup=2.0),
        dict(model="dit-digits", steps=STEPS, target=2.0, group="fora", method="fora", role="peer", params="{}",
             test_psnr=30.0, test_speedup=2.0),
    ])


def test_rows_are_kept_and_a_rerun_reads_them(tiny_dit, tmp_path, monkeypatch):
    df = _comparison_rows(_params(forecast="residual", max_consecutive_forecasts=1))
    first = measure_variant_costs(tiny_dit, df, 2.0, tmp_path / "rows", batch_size=1, repeats=1, progress=False)
    assert list(first["variant"]) == ["cg-taylor"]  # peers are not CG-Taylor settings
    assert len(list((tmp_path / "rows").glob("*.json"))) == 1

    def no_measuring(*args, **kwargs):
        raise AssertionError("a stored row was measured again")

    monkeypatch.setattr("cgtaylor.experiments.variant_cost.forecast_step_cost", no_measuring)
    again = measure_variant_costs(tiny_dit, df, 2.0, tmp_path / "rows", batch_size=1, repeats=1, progress=False)
    pd.testing.assert_frame_equal(first, again)


def test_the_section_leaves_out_rows_of_settings_the_comparison_no_longer_chooses(tmp_path):
    measured = {"first_block_order": 1, "threshold": 0.1}
    cost = pd.DataFrame([dict(model="dit-digits", steps=STEPS, target=2.0, variant="cg-taylor",
                              params=json.dumps(measured), test_psnr=40.0, test_speedup=2.0, forecast_steps=3,
                              calls=6, forecast_flops_share=0.1, forecast_time_share=0.2, cache_mib=1.0)])
    write_variant_costs(cost, tmp_path / "comparison")
    same = _comparison_rows(measured)
    kept, stale = current_rows(cost, same)
    assert len(kept) == 1 and stale.empty
    assert "Left out" not in "".join(cost_section(tmp_path, same))

    moved = _comparison_rows({**measured, "threshold": 0.2})
    kept, stale = current_rows(cost, moved)
    assert kept.empty and len(stale) == 1
    section = "".join(cost_section(tmp_path, moved))
    assert "Left out" in section and "dit-digits cg-taylor" in section


def test_no_cost_file_no_section(tmp_path):
    assert cost_section(tmp_path, _comparison_rows({})) == []


def test_measuring_some_models_keeps_the_other_models_rows(tmp_path):
    def rows(model, variant):
        return pd.DataFrame([{"model": model, "steps": 50, "target": 2.0, "variant": variant, "params": "{}",
                              "test_psnr": 40.0, "test_speedup": 2.0, "forecast_steps": 20, "calls": 50,
                              "forecast_flops_share": 0.04, "forecast_time_share": 0.05, "cache_mib": 1.0}])

    write_variant_costs(pd.concat([rows("a", "cg-taylor"), rows("b", "cg-taylor")]), tmp_path)
    write_variant_costs(rows("b", "cg-taylor-hermite"), tmp_path, only_models=["b"])
    table = pd.read_csv(tmp_path / "variant_cost.csv")
    assert list(zip(table["model"], table["variant"])) == [("a", "cg-taylor"), ("b", "cg-taylor-hermite")]
    write_variant_costs(rows("c", "cg-taylor"), tmp_path)  # every model measured: the table is replaced
    assert list(pd.read_csv(tmp_path / "variant_cost.csv")["model"]) == ["c"]
