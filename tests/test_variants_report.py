"""CG-Taylor's own variants in the comparison: peers-only verdict counts, the ablation table, the best variant."""

import json

import pandas as pd
import pytest

from cgtaylor.experiments.protocol import Entry
from cgtaylor.experiments.report import verdict_counts
from cgtaylor.experiments.variants import best_against_peers, best_variant, roles, variant_table


def _row(group, role, selection_psnr, scores, on_target=True, speedup=2.0):
    return dict(model="m", steps=50, group=group, role=role, target=2.0, on_target=on_target,
                selection_speedup=speedup, selection_psnr=selection_psnr, test_speedup=speedup, tolerance=0.04,
                caveat="", near_miss="", test_psnr=sum(scores) / len(scores),
                test_psnr_per_sample=json.dumps(scores), verdict="", reference_minus_this=float("nan"),
                difference_low=float("nan"), difference_high=float("nan"))


def _frame():
    base = [30.0 + 0.1 * i for i in range(20)]
    return pd.DataFrame([
        _row("cg-taylor", "variant", 40.0, base),
        # best on selection but worse on test: it is still the one chosen, the test set takes no part in choosing
        _row("cg-taylor-b", "variant", 45.0, [v - 1 for v in base]),
        _row("cg-taylor-c", "variant", 50.0, [v + 5 for v in base], on_target=False, speedup=1.5),
        _row("peer-low", "peer", 38.0, [v - 3 for v in base]),
        _row("peer-high", "peer", 44.0, [v + 3 for v in base]),
    ])


def test_the_best_variant_is_chosen_on_selection_among_those_on_target():
    frame = _frame()
    assert best_variant(frame)["group"] == "cg-taylor-b"
    best = best_against_peers(frame, resamples=2000).set_index("peer")
    assert set(best.index) == {"peer-low", "peer-high"}
    assert best.loc["peer-low", "verdict"] == "ahead" and best.loc["peer-low", "best − peer (dB)"] == pytest.approx(2.0)
    assert best.loc["peer-high", "verdict"] == "behind"


def test_verdict_counts_leave_out_variants():
    frame = _frame()
    frame.loc[frame["group"] == "cg-taylor-b", "verdict"] = "behind"
    frame.loc[frame["group"].str.startswith("peer"), "verdict"] = "ahead"
    counts = verdict_counts(frame)
    assert counts["ahead"].tolist() == [2] and "behind" not in counts


def test_tables_without_a_role_column_count_cg_taylor_groups_as_variants():
    frame = _frame().drop(columns=["role"])
    assert roles(frame).tolist() == ["variant", "variant", "variant", "peer", "peer"]
    assert variant_table(frame)["variant"].tolist() == ["cg-taylor", "cg-taylor-b", "cg-taylor-c"]


def test_an_entry_role_must_be_peer_or_variant():
    assert Entry.from_dict({"method": "fora"}).role == "peer"
    assert Entry.from_dict({"method": "cg-taylor", "role": "variant"}).role == "variant"
    with pytest.raises(ValueError, match="role must be one of"):
        Entry.from_dict({"method": "fora", "role": "ours"})


def test_an_entry_can_be_limited_to_some_models():
    from cgtaylor.experiments.comparison import ModelComparison, check_comparison_cfg

    entries = [{"method": "fora"}, {"method": "fbcache", "models": ["other-model"]}]
    comparison = {"targets": [2], "samples": {"dit-digits": {"batch_size": 1, "selection_batches": 1,
                                                              "test_batches": 1}}, "entries": entries}
    model = ModelComparison({"name": "dit-digits", "source": "tiny"}, comparison, "unused")
    assert [e.group for e in model.entries()] == ["fora"]
    with pytest.raises(ValueError, match="models must be a non-empty list"):
        check_comparison_cfg(dict(comparison, entries=[{"method": "fora", "models": "dit-digits"}]))


def test_lower_step_counts_run_every_peer_the_reference_and_the_named_variants_only():
    from cgtaylor.experiments.comparison import ModelComparison, check_comparison_cfg, expected_groups

    entries = [{"group": "cg-taylor", "method": "cg-taylor", "role": "variant"},
               {"group": "cg-taylor-a", "method": "cg-taylor", "role": "variant"},
               {"group": "cg-taylor-b", "method": "cg-taylor", "role": "variant"},
               {"method": "fora"}]
    comparison = {"targets": [2], "samples": {"dit-digits": {"batch_size": 1, "selection_batches": 1,
                                                              "test_batches": 1}},
                  "entries": entries, "step_counts": {"dit-digits": [25]}, "lower_step_variants": ["cg-taylor-b"]}
    model_cfg = {"name": "dit-digits", "source": "tiny", "num_inference_steps": 50}
    every = ["cg-taylor", "cg-taylor-a", "cg-taylor-b", "fora"]
    assert [e.group for e in ModelComparison(model_cfg, comparison, "unused").entries()] == every
    lower = ModelComparison(model_cfg, comparison, "unused", steps=25).entries()
    assert [e.group for e in lower] == ["cg-taylor", "cg-taylor-b", "fora"]
    assert expected_groups(comparison, {"dit-digits": model_cfg}) == {
        ("dit-digits", 50): every, ("dit-digits", 25): ["cg-taylor", "cg-taylor-b", "fora"]}
    assert ModelComparison(model_cfg, comparison, "unused", steps=25).tolerance == 0.04  # none set: the main one
    wider = dict(comparison, tolerance=0.04, lower_step_tolerance=0.05)
    assert ModelComparison(model_cfg, wider, "unused", steps=25).tolerance == 0.05
    assert ModelComparison(model_cfg, wider, "unused").tolerance == 0.04
    with pytest.raises(ValueError, match=r"comparison.lower_step_tolerance must be a number in \(0, 0.5\)"):
        check_comparison_cfg(dict(comparison, lower_step_tolerance="5%"))
    everything = dict(comparison, lower_step_variants=None)
    assert [e.group for e in ModelComparison(model_cfg, everything, "unused", steps=25).entries()] == every
    with pytest.raises(ValueError, match=r"lower_step_variants names \['fora'\].*accepted: \['cg-taylor', "):
        check_comparison_cfg(dict(comparison, lower_step_variants=["fora"]))
    check_comparison_cfg(dict(comparison, lower_step_variants=["fora"], step_counts={"dit-digits": []}))
    with pytest.raises(ValueError, match="lower_step_variants must be a list"):
        check_comparison_cfg(dict(comparison, lower_step_variants="cg-taylor-b"))

    # `variants` limits the variants at every step count (the reference always runs), under lower_step_variants too
    trimmed = dict(comparison, variants=["cg-taylor-a"])
    assert [e.group for e in ModelComparison(model_cfg, trimmed, "unused").entries()] == ["cg-taylor", "cg-taylor-a",
                                                                                           "fora"]
    assert [e.group for e in ModelComparison(model_cfg, trimmed, "unused", steps=25).entries()] == ["cg-taylor", "fora"]
    with pytest.raises(ValueError, match=r"comparison.variants names \['cg-taylor-c'\].*accepted: \['cg-taylor', "):
        check_comparison_cfg(dict(comparison, variants=["cg-taylor-c"], step_counts={"dit-digits": []}))


def test_entries_a_table_lacks_are_listed_as_not_yet_measured():
    from cgtaylor.experiments.report import missing_entries

    frame = _frame()
    expected = {("m", 50): ["cg-taylor", "peer-low", "cg-taylor-new", "cg-taylor-new"], ("absent", 50): ["x"]}
    lines = missing_entries(frame, expected)
    assert len(lines) == 1 and lines[0].startswith("- m, 50 steps: not yet in its table: cg-taylor-new (")
    assert missing_entries(frame, {("m", 50): ["cg-taylor"]}) == [] and missing_entries(frame, None) == []


def test_the_best_preset_is_checked_against_the_comparisons_choice(monkeypatch):
    from cgtaylor import presets
    from cgtaylor.experiments.variants import preset_agreement

    frame = _frame()
    frame["params"] = json.dumps({"threshold": 0.05, "warmup_steps": 3, "max_consecutive_forecasts": 2})
    frame.loc[frame["group"] == "cg-taylor-b", "params"] = json.dumps(
        {"threshold": 0.04, "warmup_steps": 6, "taylor_formula": "bdf2_heun", "last_block_order": 2})
    same = dict(threshold=0.04, warmup_steps=6, taylor_formula="bdf2_heun", last_block_order=2)
    monkeypatch.setitem(presets.PRESETS, "best", {"fam": same})
    assert preset_agreement(frame, {"m": "fam"}) == [
        "- m, 50 steps: `CGTaylorConfig.preset('best', 'fam')` matches cg-taylor-b, the best variant at 2x on selection"]
    lower = frame.assign(steps=25, params=json.dumps({"threshold": 0.05, "warmup_steps": 3}))
    assert len(preset_agreement(pd.concat([frame, lower]), {"m": "fam"})) == 1  # the lower step count is not checked
    monkeypatch.setitem(presets.PRESETS, "best", {"fam": dict(same, threshold=0.1, last_block_order=1)})
    line = preset_agreement(frame, {"m": "fam"})[0]
    assert "differs from cg-taylor-b in last_block_order" in line
    monkeypatch.setitem(presets.PRESETS, "best", {"fam": dict(same, threshold=0.1)})
    assert "except its threshold, which the protocol landed elsewhere" in preset_agreement(frame, {"m": "fam"})[0]
    assert preset_agreement(frame, {"other": "fam"}) == []
    # a variant whose step scales are fitted when it runs: the form says so, and a preset without them differs
    frame.loc[frame["group"] == "cg-taylor-b", "params"] = json.dumps(dict(same, step_scales="fit"))
    assert "differs from cg-taylor-b in step_scales" in preset_agreement(frame, {"m": "fam"})[0]


def test_presets_name_the_accepted_values():
    from cgtaylor import CGTaylorConfig

    assert CGTaylorConfig.preset("paper", "flux") == CGTaylorConfig.paper_preset("flux")
    with pytest.raises(ValueError, match="preset name must be one of"):
        CGTaylorConfig.preset("fastest", "flux")
    with pytest.raises(ValueError, match="family must be one of"):
        CGTaylorConfig.preset("paper", "sdxl")


@pytest.mark.parametrize("family", ["dit", "flux", "wan"])
def test_every_shipped_preset_is_a_valid_config(family):
    from cgtaylor import CGTaylorConfig
    from cgtaylor.presets import PRESETS

    for name in PRESETS:
        config = CGTaylorConfig.preset(name, family, num_inference_steps=50)
        assert config.threshold > 0 and config.warmup_steps >= 1


def test_tables_from_an_older_protocol_revision_are_named():
    from cgtaylor.experiments.protocol import PROTOCOL_REVISION
    from cgtaylor.experiments.report import older_protocol

    old = _frame()  # written before rows recorded a revision: revision 1
    assert older_protocol(old) == [] if PROTOCOL_REVISION == 1 else "revision 1" in older_protocol(old)[0]
    current = _frame().assign(protocol=PROTOCOL_REVISION)
    assert older_protocol(current) == []
    mixed = pd.concat([current, _frame().assign(model="n", protocol=PROTOCOL_REVISION - 1)])
    assert [line.split(",")[0] for line in older_protocol(mixed)] == ["- n"]


def test_the_results_header_names_each_tolerance_with_its_step_counts():
    from cgtaylor.experiments.report import tolerance_text

    frame = pd.DataFrame({"steps": [50, 50, 25, 28], "tolerance": [0.04, 0.04, 0.05, 0.05]})
    assert tolerance_text(frame) == "±4% (±5% at 25, 28 steps)"
    assert tolerance_text(frame.assign(tolerance=0.04)) == "±4%"


def test_half_widths_name_the_test_size_that_reaches_one_db():
    from cgtaylor.experiments.report import half_widths

    frame = pd.DataFrame([
        dict(model="m", steps=50, target=2.0, n_test=8, test_psnr_low=40.0, test_psnr_high=46.0,
             difference_low=-1.0, difference_high=3.0),   # PSNR half-width 3 dB: 8 * 3**2 samples
        dict(model="m", steps=50, target=3.0, n_test=40, test_psnr_low=30.0, test_psnr_high=31.0,
             difference_low=0.0, difference_high=1.2),    # both under 1 dB: the set as it is
    ])
    table = half_widths(frame).set_index("target")
    assert table.loc[2.0, "max_psnr_half_width"] == 3.0 and table.loc[2.0, "max_difference_half_width"] == 2.0
    assert table.loc[2.0, "n_test_for_1_db"] == 72 and table.loc[3.0, "n_test_for_1_db"] == 40


def test_reach_compares_the_gate_at_the_higher_target_with_the_best_peer_at_the_lower_one():
    from cgtaylor.experiments.variants import reach_against_peers

    base = [30.0 + 0.1 * i for i in range(20)]

    def at(target, group, role, selection_psnr, scores, **extra):
        return dict(_row(group, role, selection_psnr, scores, speedup=target), target=float(target), **extra)

    frame = pd.DataFrame([
        at(2, "peer-a", "peer", 45.0, [v + 2 for v in base]),
        at(2, "peer-b", "peer", 47.0, [v + 1 for v in base]),                  # best on selection, not on test
        at(2, "peer-c", "peer", 50.0, [v + 9 for v in base], caveat="broken"),  # a caveat never counts
        at(3, "peer-a", "peer", 35.0, base),
        at(3, "cg-taylor", "variant", 40.0, [v + 1 for v in base]),            # level with peer-b at 2x
        at(3, "cg-taylor-x", "variant", 44.0, [v + 3 for v in base]),          # best variant on selection: shown
        at(3, "cg-taylor-y", "variant", 41.0, [v + 5 for v in base]),          # neither: left out
        at(3, "cg-taylor-best", "variant", 39.0, base, on_target=False),
    ])
    reach = reach_against_peers(frame, resamples=2000).set_index("CG-Taylor entry")
    assert set(reach.index) == {"cg-taylor", "cg-taylor-x", "cg-taylor-best"}
    assert (reach["best peer at the lower target"] == "peer-b").all() and (reach["targets"] == "3x against 2x").all()
    assert reach.loc["cg-taylor", "verdict"] == "level" and reach.loc["cg-taylor", "it − peer (dB)"] == 0.0
    assert reach.loc["cg-taylor-x", "verdict"] == "ahead" and reach.loc["cg-taylor-x", "it − peer (dB)"] == 2.0
    assert reach.loc["cg-taylor-best", "verdict"].startswith("n/a: off target")
    assert reach_against_peers(frame[frame["target"] == 3.0]).empty  # one target: nothing to reach
