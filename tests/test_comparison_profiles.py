"""The comparison profiles: what the default one runs, what the extended one adds, and preset entries."""

import pytest
from omegaconf import OmegaConf

from cgtaylor import CGTaylorConfig
from cgtaylor.experiments import compose
from cgtaylor.experiments.comparison import ModelComparison, expected_groups, model_entries
from cgtaylor.presets import SEARCHED

MODELS = ["dit-digits", "flux-digits", "wan-digits"]


def _comparison(profile: str) -> dict:
    return OmegaConf.to_container(compose([f"comparison={profile}"]).comparison, resolve=True)


def _model(name: str) -> dict:
    return OmegaConf.to_container(compose([f"model={name}"]).model, resolve=True)


def test_a_preset_entry_takes_the_presets_form_for_the_models_family_and_leaves_threshold_and_warmup_to_the_search():
    comparison = _comparison("default")
    for name in MODELS:
        model_cfg = _model(name)
        entry = next(e for e in model_entries(comparison, model_cfg) if e.group == "cg-taylor-best")
        preset = CGTaylorConfig.preset("best", model_cfg["kind"])
        assert entry.params == {k: getattr(preset, k) for k in entry.params}
        assert not set(entry.params) & set(SEARCHED)
        assert {"forecast", "taylor_formula", "first_block_order", "last_block_order"} <= set(entry.params)


def test_a_preset_entry_names_the_preset_and_the_accepted_ones_when_it_is_unknown():
    comparison = {"targets": [2], "entries": [{"group": "x", "method": "cg-taylor", "role": "variant",
                                               "preset": "fastest"}]}
    with pytest.raises(ValueError, match=r"comparison entry 'x': preset: .*must be one of \['best', 'paper'\], "
                                         r"got 'fastest'"):
        model_entries(comparison, _model("dit-digits"))
    comparison["entries"][0]["preset"] = "best"
    with pytest.raises(ValueError, match=r"family must be one of \['dit', 'flux', 'wan'\].*kind 'sd3'"):
        model_entries(comparison, dict(_model("dit-digits"), kind="sd3"))


def test_the_default_profile_runs_every_peer_and_a_few_variants_at_each_models_own_step_count_only():
    default, extended = _comparison("default"), _comparison("extended")
    models = {name: _model(name) for name in MODELS}
    groups = expected_groups(default, models)
    assert sorted(groups) == [(name, 50) for name in MODELS]
    every = expected_groups(extended, models)
    for name in MODELS:
        peers = [g for g in every[(name, 50)] if not g.startswith("cg-taylor")]
        assert peers and set(peers) <= set(groups[(name, 50)])  # no peer is left to the extended profile
        variants = {g for g in groups[(name, 50)] if g.startswith("cg-taylor")}
        assert {"cg-taylor", "cg-taylor-paper", "cg-taylor-best", "cg-taylor-fixed-schedule",
                "cg-taylor-calibrated"} <= variants < set(every[(name, 50)])
    assert {steps for _, steps in every} == {50, 25, 28}


def test_the_extended_profile_shares_the_default_profiles_stored_rows():
    default, extended = _comparison("default"), _comparison("extended")
    for name in MODELS:
        model_cfg = _model(name)
        assert (ModelComparison(model_cfg, default, "r").rows_dir == ModelComparison(model_cfg, extended, "r").rows_dir)
    assert _comparison("full")["samples"] != default["samples"]  # the full profile's larger sets are its own


def test_the_extended_results_page_holds_the_comparison_alone_and_the_default_page_points_to_it():
    from cgtaylor.experiments.report import scope_text

    assert "results-extended/README.md" in scope_text("default")
    assert "comparison alone" in scope_text("extended") and "results/README.md" in scope_text("extended")
    assert "at 3x and 4x" in scope_text("reach", [4.0, 3.0])
