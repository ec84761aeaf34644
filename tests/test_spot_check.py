"""The spot check: chosen settings recomputed in a fresh folder and compared with their stored rows."""

import json

import pandas as pd
import pytest

from cgtaylor.experiments.spot_check import compare_rows, settings_to_check


def test_settings_to_check_take_each_chosen_setting_and_near_miss_once():
    table = pd.DataFrame([
        dict(group="fora", method="fora", params=json.dumps({"interval": 2}), near_miss=""),
        dict(group="fora", method="fora", params=json.dumps({"interval": 2}),   # the same setting at another target
             near_miss=json.dumps({"params": {"interval": 3}, "selection_psnr": 40.0})),
        dict(group="fbcache", method="fbcache", params=float("nan"), near_miss=float("nan")),  # nothing landed
    ])
    assert settings_to_check(table) == [("fora", "fora", {"interval": 2}), ("fora", "fora", {"interval": 3})]


def test_compare_rows_needs_equal_flops_and_each_sample_within_the_margin():
    stored = {"flops": 10, "speedup": 2.0, "psnr": [40.0, 41.0]}
    assert compare_rows(stored, dict(stored, psnr=[40.2, 40.7]), 0.5)["status"] == "ok"
    moved = compare_rows(stored, dict(stored, psnr=[40.0, 41.8]), 0.5)
    assert moved["status"] == "differs" and moved["max_psnr_gap"] == pytest.approx(0.8)
    other_flops = compare_rows(stored, dict(stored, flops=11), 0.5)
    assert other_flops["status"] == "differs" and other_flops["flops_match"] is False
    assert compare_rows(stored, dict(stored, psnr=[40.0]), 0.5)["status"] == "differs"
    assert compare_rows(None, stored, 0.5)["status"] == "not stored"


def test_spot_check_recomputes_a_tiny_comparison_and_finds_a_row_that_was_changed(tmp_path):
    from omegaconf import OmegaConf

    from cgtaylor.experiments import compose
    from cgtaylor.experiments.comparison import ModelComparison
    from cgtaylor.experiments.spot_check import spot_check

    cfg = compose(["model=dit-digits", "model.source=tiny", "comparison=quick", "model.warmup_grid=[1]"])
    comparison = OmegaConf.to_container(cfg.comparison, resolve=True)
    comparison.update(targets=[2], max_evaluations=6, variants=None)
    # TaylorSeer's table cell leaves out the model's module patterns: the check puts them back
    comparison["entries"] = [e for e in comparison["entries"] if e["group"] in ("cg-taylor", "fora", "taylorseer")]
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    table = ModelComparison(model_cfg, comparison, tmp_path / "results", steps=8, progress=False)
    table.run()

    checked = spot_check(table, tmp_path / "fresh", progress=False)
    assert set(checked["group"]) == {"cg-taylor", "fora", "taylorseer"} and (checked["status"] == "ok").all()
    assert checked.loc[checked["group"] == "taylorseer", "fresh_speedup"].gt(1).all()
    assert (checked["stored_speedup"] == checked["fresh_speedup"]).all()
    assert not list((tmp_path / "results").rglob("fresh*"))  # the fresh folder is apart from the results

    fora = json.loads(checked.loc[checked["group"] == "fora", "params"].iloc[0])
    stored = table.rows_dir / "selection"
    row_file = next(p for p in stored.glob("fora-*.json") if json.loads(p.read_text())["params"] == fora)
    row = json.loads(row_file.read_text())
    row_file.write_text(json.dumps(dict(row, psnr=[p + 1.0 for p in row["psnr"]])))
    again = spot_check(table, tmp_path / "fresh", progress=False).set_index("group")
    assert again.loc["fora", "status"] == "differs" and again.loc["cg-taylor", "status"] == "ok"
    row_file.unlink()
    assert spot_check(table, tmp_path / "fresh", progress=False).set_index("group").loc["fora", "status"] == "not stored"
