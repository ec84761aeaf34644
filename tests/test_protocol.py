"""The equal-footing protocol: method registry, landing search, selection, shared warm-up grid, bootstrap."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from cgtaylor.experiments.bootstrap import Interval, bootstrap_mean, paired_difference, verdict
from cgtaylor.experiments.landing import land_knob, pick
from cgtaylor.experiments.protocol import Entry, EntrySearch, extend_grid
from cgtaylor.experiments.registry import METHODS, check_params
from cgtaylor.experiments.sample_sets import SampleSet, make_sample_sets


# --- registry ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, params, message", [
    ("taylorseer", {"cache_intervall": 2}, "unknown parameter(s) ['cache_intervall']"),
    ("taylorseer", {"cache_interval": 0}, "'cache_interval' must be int >= 1"),
    ("fbcache", {"threshold": -0.1}, "'threshold' must be int/float >= 0"),
    ("fbcache", {"threshold": float("nan")}, "'threshold' must be"),
    ("cg-taylor", {"forecast": "absolute"}, "'forecast' must be one of ['residual', 'last_block', 'modules']"),
    ("fora", {"warmup_steps": True}, "'warmup_steps' must be int"),
    ("magcache", {"retention_ratio": 1.5}, "'retention_ratio' must be int/float >= 0 and <= 1"),
    ("nope", {}, "unknown method 'nope'"),
])
def test_registry_rejects_unknown_or_out_of_range_parameters_by_name(name, params, message):
    with pytest.raises(ValueError) as error:
        check_params(name, params)
    assert message in str(error.value)


def test_registry_accepts_the_shipped_method_configs():
    assert check_params("cg-taylor", {"threshold": math.inf, "warmup_steps": 3, "max_consecutive_forecasts": None})
    assert check_params("magcache", {"mag_ratios": {"cond": [1.0], "uncond": [1.0]}, "warmup_steps": 6})


def test_every_step_skipping_method_has_a_warmup_parameter():
    skipping = {name for name, spec in METHODS.items() if name not in ("full", "fewer-steps", "cg-taylor-target")}
    assert skipping and all(METHODS[name].warmup in METHODS[name].params for name in skipping)


# --- landing ----------------------------------------------------------------------------------------------------------
def test_land_knob_reaches_the_target_of_a_monotone_speedup():
    calls = []

    def measure(threshold):
        calls.append(threshold)
        return 1 + 4 * threshold / (threshold + 0.2)  # 1x at 0, towards 5x

    landing = land_knob(measure, 3.0, 1e-3, 10.0, tolerance=0.01, max_evaluations=12)
    assert landing.on_target and abs(landing.speedup / 3 - 1) <= 0.01 and landing.evaluations == len(calls)


def test_land_knob_stops_at_a_jump_and_says_it_is_off_target():
    landing = land_knob(lambda t: 2.0 if t < 0.5 else 4.0, 3.0, 1e-3, 10.0, tolerance=0.04, max_evaluations=40)
    assert not landing.on_target and landing.speedup in (2.0, 4.0) and landing.evaluations < 40


def test_land_knob_reports_when_the_range_is_too_short():
    landing = land_knob(lambda t: 1.0 + t, 3.0, 0.01, 1.0, tolerance=0.01, max_evaluations=10)
    assert landing.at_bound and not landing.on_target and landing.value == 1.0


def test_land_knob_shares_points_between_targets():
    known = {}
    first = land_knob(lambda t: 1 + t, 2.0, 0.01, 10.0, tolerance=0.01, max_evaluations=10, known=known)
    again = land_knob(lambda t: pytest.fail("re-measured"), 2.0, 0.01, 10.0, tolerance=0.01, known=known)
    assert first.on_target and again.evaluations == 0 and again.value == first.value


def test_pick_prefers_the_best_score_within_tolerance_and_else_the_nearest():
    assert pick([1.9, 2.05, 2.5], [30.0, 28.0, 40.0], 2.0, 0.04).index == 1
    choice = pick([1.5, 2.6], [30.0, 10.0], 2.0, 0.04)
    assert choice.index == 1 and not choice.on_target  # |log(2.6/2)| < |log(1.5/2)|


def test_extend_grid_adds_one_step_past_a_chosen_top():
    assert extend_grid([1, 3, 6], 6) == [1, 3, 6, 9]
    assert extend_grid([1, 3, 6], 3) == [1, 3, 6]


# --- the shared warm-up grid ------------------------------------------------------------------------------------------
class _FakeEvaluator:
    """Speedup from the parameters, a score that prefers longer warm-ups: enough to drive EntrySearch."""

    def __init__(self):
        self.seen = []

    def evaluate(self, method, params, sample_set):
        self.seen.append((method, dict(params)))
        warmup = params.get(METHODS[method].warmup, 0) if METHODS[method].warmup else 0
        knob = params.get("threshold", 0.0)
        interval = params.get("interval") or params.get("cache_interval") or 1
        speedup = (1 + 4 * knob / (knob + 0.1)) if METHODS[method].knob else interval * 0.9
        return {"speedup": speedup * 50 / (50 + warmup), "psnr": [30.0 + warmup + knob]}


@pytest.mark.parametrize("method", ["cg-taylor", "fbcache", "teacache", "magcache", "fora", "taylorseer",
                                    "cache-dit-dbcache"])
def test_every_method_is_swept_over_the_same_warmup_grid(method):
    evaluator = _FakeEvaluator()
    sample_set = SampleSet("selection", (0,), 1, 0)
    base = {"warmup_steps": 99} if method == "cg-taylor" else {}  # a model preset must not survive: see _entry_base
    from cgtaylor.experiments.comparison import _entry_base

    entry = Entry(method, method)
    search = EntrySearch(entry, _entry_base(entry, {method: base}), [1, 3, 6], evaluator,
                         sample_set, [2.0, 3.0], 0.04, 6)
    search.run()
    warmups = {params[METHODS[method].warmup] for _, params in evaluator.seen}
    # the best (longest) warm-up always sits on the top, so the grid grows by its last spacing GRID_EXTENSIONS times
    assert warmups == {1, 3, 6, 9, 12, 15}


def test_warmup_grid_stops_growing_once_the_choice_is_inside_it():
    class PeakAtNine(_FakeEvaluator):
        def evaluate(self, method, params, sample_set):
            row = super().evaluate(method, params, sample_set)
            return {**row, "psnr": [30.0 - abs(params["warmup_steps"] - 9)]}

    evaluator = PeakAtNine()
    search = EntrySearch(Entry("cg-taylor", "cg-taylor"), {}, [1, 3, 6], evaluator, SampleSet("selection", (0,), 1, 0),
                         [2.0, 3.0], 0.04, 6)
    chosen = search.run()
    assert {params["warmup_steps"] for _, params in evaluator.seen} == {1, 3, 6, 9, 12}
    assert all(s.params["warmup_steps"] == 9 and not s.edges for s in chosen)


def test_fewer_steps_lands_on_each_target_by_construction():
    evaluator = _FakeEvaluator()
    search = EntrySearch(Entry("fewer-steps", "fewer-steps"), {}, [1, 3], evaluator, SampleSet("s", (0,), 1, 0),
                         [2.0, 3.0], 0.04, 6)
    search.run()
    assert sorted(p["speedup"] for _, p in evaluator.seen) == [2.0, 3.0]


def test_sample_sets_are_disjoint_and_batched_alike():
    class Model:
        def default_conditions(self, n, seed=0):
            return [(seed + k) % 10 for k in range(n)]

    selection, test = make_sample_sets(Model(), batch_size=2, selection_batches=1, test_batches=3)
    assert len(selection) == 2 and len(test) == 6
    seeds = {seed for _, seed in selection.batches()} & {seed for _, seed in test.batches()}
    assert not seeds and all(len(batch) == 2 for batch, _ in test.batches())
    with pytest.raises(ValueError, match="test_batches must be a positive integer"):
        make_sample_sets(Model(), 2, 1, 0)


# --- bootstrap --------------------------------------------------------------------------------------------------------
def test_bootstrap_interval_of_a_normal_mean_matches_the_textbook_interval():
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 3.0, size=400)
    interval = bootstrap_mean(x, resamples=20000, seed=3)
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x))  # 0.29
    assert abs(interval.mean - x.mean()) < 1e-12
    assert abs(interval.half_width - half) < 0.03 and interval.low < x.mean() < interval.high


def test_paired_difference_sees_a_shift_that_unpaired_noise_hides():
    rng = np.random.default_rng(0)
    base = rng.normal(40.0, 8.0, size=30)  # large spread between samples
    shifted = base + 0.5 + rng.normal(0, 0.2, size=30)  # but a consistent 0.5 dB per sample
    interval = paired_difference(shifted, base)
    assert verdict(interval) == "ahead" and 0.4 < interval.mean < 0.6
    assert verdict(paired_difference(base, shifted)) == "behind"
    assert verdict(Interval(0.1, -0.2, 0.4, 10)) == "level"


def test_bootstrap_rejects_empty_or_infinite_samples():
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_mean([])
    with pytest.raises(ValueError, match="non-finite"):
        bootstrap_mean([1.0, math.inf])
    with pytest.raises(ValueError, match="same shape"):
        paired_difference([1.0, 2.0], [1.0])


# --- end to end on a tiny model ---------------------------------------------------------------------------------------
def test_comparison_on_a_tiny_model_writes_rows_verdicts_and_the_results_section(tmp_path):
    from omegaconf import OmegaConf

    from cgtaylor.experiments import compose
    from cgtaylor.experiments.comparison import run_comparison
    from cgtaylor.experiments.report import write_results_readme
    from cgtaylor.experiments.workers import Worker

    cfg = compose(["model=dit-digits", "model.source=tiny", "comparison=quick", "model.warmup_grid=[1]"])
    comparison = OmegaConf.to_container(cfg.comparison, resolve=True)
    comparison.update(targets=[2], max_evaluations=6)
    comparison["entries"] = [e for e in comparison["entries"] if e["group"] in ("cg-taylor", "fora", "fbcache")]
    comparison["variants"] = None  # the quick profile's variants were trimmed away with the entries
    frame = run_comparison(cfg.model, comparison, tmp_path, steps=8, progress=False)
    assert list(frame["group"]) == ["cg-taylor", "fora", "fbcache"]
    assert (frame["n_test"] == 4).all() and frame["selection_speedup"].gt(1).all() and frame["test_speedup"].ge(1).all()
    peers = frame[frame["group"] != "cg-taylor"]
    assert peers["verdict"].str.match(r"^(ahead|level|behind|n/a: .*)$").all()
    text = write_results_readme(tmp_path)
    assert "### dit-digits, 8 steps" in text and (tmp_path / "README.md").read_text() == text
    cost = json.loads((tmp_path / "comparison" / "dit-digits-8steps.cost.json").read_text())
    assert cost["evaluations"] == cost["timed_evaluations"] > 0 and cost["evaluation_seconds"] > 0
    assert cost["references"] == cost["timed_references"] == 2  # selection and test
    assert "Compute: " in text and "not counted" not in text
    assert "`results/real_scale.csv`, `results/real_scale.md` are missing" in text  # the other benches' pages follow
    assert (tmp_path / "comparison" / "summary.md").read_text() in text
    again = run_comparison(cfg.model, comparison, tmp_path, steps=8, progress=False)  # resumes: nothing recomputed
    assert again.drop(columns=["machine"]).equals(frame.drop(columns=["machine"]))
    second = run_comparison(cfg.model, comparison, tmp_path, steps=8, progress=False, worker=Worker(1, 2))
    assert second.drop(columns=["machine"]).equals(frame.drop(columns=["machine"]))  # rows stay in config order
    damaged = sorted((tmp_path / "comparison" / "rows").rglob("test/fora-*.json"))[0]
    damaged.write_bytes(b"\x00\xff not json")
    from cgtaylor.io import DamagedFileWarning

    with pytest.warns(DamagedFileWarning, match=damaged.name):
        recovered = run_comparison(cfg.model, comparison, tmp_path, steps=8, progress=False)
    assert recovered.drop(columns=["machine"]).equals(frame.drop(columns=["machine"]))


def test_verdicts_need_both_sides_on_target_and_no_caveat():
    import json

    import pandas as pd

    from cgtaylor.experiments.comparison import add_verdicts

    ours = [40.0 + 0.1 * i for i in range(20)]
    worse = [v - 2.0 for v in ours]
    better = [v + 2.0 for v in ours]
    near = json.dumps({"params": {"interval": 2}, "selection_speedup": 1.92, "selection_psnr": 47.0,
                       "reference_psnr_at_least_as_fast": 46.0})
    covered = json.dumps({"params": {"interval": 2}, "selection_speedup": 1.92, "selection_psnr": 47.0,
                          "reference_psnr_at_least_as_fast": 48.0})
    rows = [dict(group=g, target=2.0, on_target=on, selection_speedup=s, test_speedup=t, tolerance=0.04, caveat=c,
                 test_psnr_per_sample=json.dumps(p), selection_psnr=45.0, near_miss=n)
            for g, on, s, t, c, p, n in (
                ("cg-taylor", True, 2.0, 1.9, "", ours, ""), ("h", True, 2.0, 1.95, "", worse, near),
                ("i", True, 2.0, 1.95, "", better, near), ("j", True, 2.0, 1.95, "", worse, covered))]
    rows += [dict(group=g, target=2.0, on_target=on, selection_speedup=s, test_speedup=t, tolerance=0.04, caveat=c,
                  test_psnr_per_sample=json.dumps(p), selection_psnr=45.0, near_miss="")
             for g, on, s, t, c, p in (("a", True, 2.0, 1.95, "", worse),
                                      ("b", False, 2.5, 2.5, "", worse), ("c", True, 2.0, 2.0, "known to be off", worse),
                                      ("d", True, 2.0, 2.1, "", worse), ("e", True, 2.0, 2.1, "", better),
                                      ("f", True, 1.9, 1.6, "", better), ("g", True, 1.9, 1.6, "", worse))]
    verdicts = add_verdicts(pd.DataFrame(rows), "cg-taylor", 2000).set_index("group")["verdict"]
    assert verdicts["a"] == "ahead"  # test speedups within the tolerance of each other
    assert verdicts["b"] == "n/a: peer off target (2.50x)"
    assert verdicts["c"] == "n/a: see the caveat on this method"
    # the reference ran >4% slower than the peer: its lead may be the extra FLOPs, its deficit stands
    assert verdicts["d"] == "n/a: reference slower (1.90x against 2.10x on the test set)"
    assert verdicts["e"] == "behind"
    # the peer ran >4% slower: its lead may be the extra FLOPs, the reference's lead stands
    assert verdicts["f"] == "n/a: peer slower (1.90x against 1.60x on the test set)"
    assert verdicts["g"] == "ahead"
    # the peer's landed setting lost, but one just outside the tolerance beat the reference's best at that speed
    assert verdicts["h"] == ("n/a: a peer setting just outside the tolerance (1.92x) scored 47.0 dB on selection "
                             "(the reference's best at least as fast: 46.0)")
    assert verdicts["i"] == "behind"  # a near miss cannot withhold a verdict against the reference
    assert verdicts["j"] == "ahead"  # the reference did better at least as fast as the near miss


def test_the_results_section_sets_each_cell_beside_the_sweep_tables_reading(tmp_path):
    import pandas as pd

    from cgtaylor.experiments.report import against_sweeps

    (tmp_path / "tables").mkdir()
    pd.DataFrame([{"model": "m", "group": "a", "psnr@2x": 40.04, "psnr@3x": float("nan")}]).to_csv(
        tmp_path / "tables" / "summary.csv", index=False)
    cells = pd.DataFrame([dict(model="m", steps=50, group="a", target=t, test_psnr=p, test_speedup=s)
                          for t, p, s in ((2.0, 38.26, 1.97), (3.0, 33.0, 3.01))]
                         + [dict(model="m", steps=50, group="new", target=2.0, test_psnr=1.0, test_speedup=2.0)])
    moved = against_sweeps(cells, tmp_path)
    assert moved[["target", "protocol, test set (dB)"]].values.tolist() == [["2x", 38.3], ["3x", 33.0]]
    # a sweep that never reached 3x reads empty; groups the sweeps do not have are left out
    assert moved["sweep reading (dB)"].iloc[0] == 40.0 and pd.isna(moved["sweep reading (dB)"].iloc[1])
    assert against_sweeps(cells, tmp_path / "nowhere").empty


def test_a_near_miss_is_the_best_setting_just_outside_the_tolerance_that_beat_the_choice():
    from types import SimpleNamespace

    from cgtaylor.experiments.protocol import EntrySearch, Point

    chosen = Point({"interval": 3}, 2.06, 55.0)
    points = [chosen, Point({"interval": 2}, 1.92, 63.0), Point({"interval": 2, "w": 9}, 1.90, 64.0),
              Point({"interval": 4}, 1.70, 70.0), Point({"interval": 3, "w": 1}, 2.01, 56.0)]
    search = SimpleNamespace(tolerance=0.04)
    near = EntrySearch._near_miss(search, points, chosen, 2.0)
    assert near.params == {"interval": 2, "w": 9}  # 1.70x is more than twice the tolerance away; 2.01x is inside
    assert EntrySearch._near_miss(search, points[:1] + points[3:], chosen, 2.0) is None


def test_the_calibrated_entry_takes_cg_taylors_model_parameters_and_lands_by_its_own_target():
    from cgtaylor.experiments.comparison import _entry_base

    entry = Entry("cg-taylor-calibrated", "cg-taylor-target", {"forecast": "residual"})
    model_params = {"cg-taylor": {"first_block_order": 3, "warmup_steps": 3}}
    base = _entry_base(entry, model_params)
    # no search over the warm-up grid: the model's preset warm-up is the one a user's single call gets
    assert base == {"first_block_order": 3, "warmup_steps": 3, "forecast": "residual"}

    evaluator = _FakeEvaluator()
    search = EntrySearch(entry, base, [1, 3, 6], evaluator, SampleSet("selection", (0,), 1, 0), [2.0, 3.0], 0.04, 6)
    search.run()
    assert sorted(params["target_speedup"] for _, params in evaluator.seen) == [2.0, 3.0]
    assert {params["warmup_steps"] for _, params in evaluator.seen} == {3}


def test_a_step_in_the_speedup_is_found_by_bisection_not_crept_up_on():
    # a gate's speedup is a step function of its threshold: 1.04x below 0.040, 1.93x up to 0.045, 2.17x up to 0.060;
    # interpolation alone keeps moving the upper end by a tenth of the bracket and needs nine probes
    def speedup(threshold):
        return 1.04 if threshold < 0.040 else 1.93 if threshold < 0.045 else 2.172 if threshold < 0.060 else 2.6

    landing = land_knob(speedup, 2.0, 1e-4, 2.0, max_evaluations=5, start=0.0327)
    assert landing.on_target and 0.040 <= landing.value < 0.045 and landing.evaluations <= 5


def test_a_methods_own_grid_grows_once_and_the_warmup_grid_up_to_three_times():
    class PrefersHighOrder(_FakeEvaluator):
        def evaluate(self, method, params, sample_set):
            row = super().evaluate(method, params, sample_set)
            return {**row, "psnr": [row["psnr"][0] + 10 * params["last_block_order"]]}

    evaluator = PrefersHighOrder()
    entry = Entry("cg-taylor", "cg-taylor", grid={"last_block_order": [1, 2]})
    EntrySearch(entry, {}, [1, 3, 6], evaluator, SampleSet("selection", (0,), 1, 0), [2.0, 3.0], 0.04, 6).run()
    assert {p["last_block_order"] for _, p in evaluator.seen} == {1, 2, 3}
    assert {p["warmup_steps"] for _, p in evaluator.seen} == {1, 3, 6, 9, 12, 15}


def test_an_own_grid_whose_top_is_chosen_only_after_the_warmup_grid_grew_still_grows_once():
    class HighOrderOnceWarm(_FakeEvaluator):
        def evaluate(self, method, params, sample_set):
            row = super().evaluate(method, params, sample_set)
            sign = 1 if params["warmup_steps"] >= 9 else -1  # a higher order pays only after a long warm-up
            return {**row, "psnr": [row["psnr"][0] + sign * 10 * params["last_block_order"]]}

    evaluator = HighOrderOnceWarm()
    entry = Entry("cg-taylor", "cg-taylor", grid={"last_block_order": [1, 2]})
    EntrySearch(entry, {}, [1, 3, 6], evaluator, SampleSet("selection", (0,), 1, 0), [2.0, 3.0], 0.04, 6).run()
    assert {p["last_block_order"] for _, p in evaluator.seen} == {1, 2, 3}  # grew once, in the second round


def test_a_tables_cost_says_when_its_evaluations_predate_timing():
    from cgtaylor.experiments.comparison import describe_cost

    old = {"evaluations": 9, "timed_evaluations": 0, "evaluation_seconds": 0.0, "references": 2,
           "timed_references": 2, "reference_seconds": 30.0}
    assert describe_cost(old) == "not recorded: its 9 evaluations were computed before evaluations recorded their time"
    mixed = dict(old, timed_evaluations=6, evaluation_seconds=570.0, threads=1)
    assert describe_cost(mixed) == ("10.0 CPU-minutes, at 1 torch thread(s) per process, for 6 evaluations and 2 "
                                    "full-compute references; 3 more evaluations were computed before evaluations "
                                    "recorded their time and are not counted")


def test_untimed_evaluations_are_estimated_from_the_timed_ones_of_the_same_set(tmp_path):
    from cgtaylor.experiments.compute_cost import cost_table, estimated_seconds

    cost = {"evaluations": 10, "timed_evaluations": 6, "evaluation_seconds": 0.0, "references": 2,
            "timed_references": 2, "reference_seconds": 30.0,
            "by_set": {"selection": {"evaluations": 8, "timed_evaluations": 5, "evaluation_seconds": 10.0},
                       "test": {"evaluations": 2, "timed_evaluations": 1, "evaluation_seconds": 40.0}}}
    # 30 s of references; selection 10 s + 3 x 2 s; test 40 s + 1 x 40 s (never the overall mean)
    assert estimated_seconds(cost) == pytest.approx(30 + 16 + 80)
    nothing_timed = dict(cost, by_set={"test": {"evaluations": 2, "timed_evaluations": 0, "evaluation_seconds": 0.0}})
    assert estimated_seconds(nothing_timed) is None
    older = {k: v for k, v in cost.items() if k != "by_set"}  # written before the per-set counts
    assert estimated_seconds(older) is None
    assert estimated_seconds(dict(older, timed_evaluations=10, evaluation_seconds=60.0)) == 90.0

    (tmp_path / "comparison").mkdir()
    (tmp_path / "comparison" / "m-50steps.cost.json").write_text(json.dumps(dict(cost, evaluation_seconds=50.0)))
    table = cost_table(tmp_path, [("m", 50), ("absent", 25)])
    assert list(table["model"]) == ["m", "all"]
    assert table.iloc[0]["untimed"] == 4 and table.iloc[0]["measured_cpu_min"] == pytest.approx(80 / 60, abs=0.05)
    assert table.iloc[-1]["estimated_cpu_min"] == pytest.approx(126 / 60, abs=0.05)


def test_a_larger_test_set_costs_in_proportion_and_serves_both_targets(tmp_path):
    from cgtaylor.experiments.compute_cost import test_set_cost

    cost = {"evaluations": 6, "timed_evaluations": 5, "evaluation_seconds": 0.0, "references": 1,
            "timed_references": 1, "reference_seconds": 30.0,
            "by_set": {"selection": {"evaluations": 2, "timed_evaluations": 2, "evaluation_seconds": 600.0},
                       "test": {"evaluations": 4, "timed_evaluations": 3, "evaluation_seconds": 180.0}}}
    (tmp_path / "comparison").mkdir()
    (tmp_path / "comparison" / "m-50steps.cost.json").write_text(json.dumps(cost))
    needed = pd.DataFrame([dict(model="m", steps=50, target=2.0, n_test=8, n_test_for_1_db=16),
                           dict(model="m", steps=50, target=3.0, n_test=8, n_test_for_1_db=40),
                           dict(model="absent", steps=50, target=2.0, n_test=8, n_test_for_1_db=9)])
    table = test_set_cost(tmp_path, needed)
    assert list(table["model"]) == ["m"]  # no cost file, no row
    row = table.iloc[0]
    # the test set now: 3 timed evaluations of 60 s and one untimed at their mean = 4 min; the larger size (40) is 5x
    assert row["n_test_for_goal"] == 40 and row["test_cpu_min"] == 4.0
    assert row["test_cpu_min_at_goal"] == 20.0 and row["added_cpu_min"] == 16.0
