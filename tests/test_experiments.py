"""Experiment runner: methods on tiny random-weight DiT / Flux / Wan, resumable tables, configs, summaries."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf, open_dict

from cgtaylor.experiments import ALL_TABLES, compose, run_table, summary_at_speedups
from cgtaylor.experiments.methods import METHOD_NAMES, make_generator
from cgtaylor.experiments.models import load_model
from cgtaylor.experiments.rows import expand_rows, row_key
from cgtaylor.experiments.runner import TableRunner
from cgtaylor.experiments.tables import interpolate_at
from cgtaylor.meters import CacheBytesMeter, ExactFlops, MemoFlops

STEPS = 5
COMMITTED_ROWS = Path(__file__).resolve().parents[1] / "results" / "tables" / "rows"
MODELS = {"dit": "dit-digits", "flux": "flux-digits", "wan": "wan-digits"}

# Parameters that must skip work on any random model within STEPS steps.
SKIPPING = {
    "fewer-steps": {"speedup": 2},
    "fora": {"interval": 2, "warmup_steps": 1},
    "taylorseer": {"cache_interval": 2, "disable_cache_before_step": 1, "max_order": 1},
    "fbcache": {"threshold": 1e6},
    "magcache": {"threshold": 1e6, "max_skip_steps": 2, "retention_ratio": 0.2, "mag_ratios": [1.0] * STEPS},
    "teacache": {"threshold": 1e6, "coefficients": [1.0, 0.0]},
    "cg-taylor": {"threshold": 1e6, "warmup_steps": 1},
    **{f"cache-dit-{variant}": {"threshold": 0.9, "warmup_steps": 1}
       for variant in ("dbcache", "dbcache-taylorseer", "dbcache-foca")},
}


def _model_cfg(kind: str):
    cfg = compose([f"model={MODELS[kind]}", "model.source=tiny"])
    return OmegaConf.to_container(cfg.model, resolve=True)


@functools.lru_cache(maxsize=None)
def _tiny_model(kind: str):
    return load_model(_model_cfg(kind))


@pytest.fixture(scope="module", params=sorted(MODELS))
def tiny(request):
    model_cfg = _model_cfg(request.param)
    model = _tiny_model(request.param)
    conditions = model.default_conditions(1, seed=0)
    with ExactFlops(model.transformer) as flops:
        reference = model(conditions, num_inference_steps=STEPS, seed=0)
    return request.param, model_cfg, model, conditions, reference, flops.total


def _params(model_cfg: dict, method: str) -> dict:
    params = dict((model_cfg.get("method_params") or {}).get(method) or {})
    params.update(SKIPPING[method])
    return params


def test_every_method_reduces_flops_changes_output_and_is_removable(tiny):
    kind, model_cfg, model, conditions, reference, full_flops = tiny
    assert set(SKIPPING) == set(METHOD_NAMES) - {"full", "cg-taylor-target"}
    for method in SKIPPING:
        generator = make_generator(model, method, _params(model_cfg, method), num_inference_steps=STEPS)
        with ExactFlops(model.transformer) as flops, MemoFlops(model.transformer) as memo, \
                CacheBytesMeter(model.transformer) as meter:
            output = generator(conditions, seed=0)
        generator.remove()
        assert memo.calls == flops.calls, f"{method} on {kind}: memoised FLOPs differ from FlopCounterMode"
        assert flops.total < full_flops, f"{method} on {kind}: FLOPs {flops.total} not below full {full_flops}"
        assert torch.isfinite(output).all(), f"{method} on {kind}"
        assert not torch.equal(output, reference), f"{method} on {kind} left the output unchanged"
        if method not in ("fewer-steps", "cg-taylor") and not method.startswith("cache-dit-"):
            # (cache-dit keeps its buffers in its own context manager, outside the hook states the meter reads)
            assert meter.peak > 0, f"{method} on {kind}: no cache bytes measured"
    assert torch.equal(model(conditions, num_inference_steps=STEPS, seed=0), reference), "hooks not removed"


def test_calibrated_peers_calibrate_on_the_model(tmp_path):
    model = _tiny_model("dit")
    conditions = model.default_conditions(1)
    for method, key in (("magcache", "mag_ratios"), ("teacache", "coefficients")):
        path = tmp_path / f"{method}.json"
        generator = make_generator(model, method, {"threshold": 0.1}, num_inference_steps=STEPS,
                                   calibration_conditions=conditions, calibration_file=path)
        values = generator.params[key]
        generator.remove()
        assert path.exists() and all(math.isfinite(v) for v in values)
        if method == "magcache":
            assert len(values) == STEPS and values[0] == 1.0 and values[1] != 1.0


def test_cg_taylor_target_searches_a_threshold_then_runs_cg_taylor(tmp_path):
    model = _tiny_model("dit")
    conditions = model.default_conditions(1)
    params = {"target_speedup": 1.5, "max_cost": 6, "threshold": 0.05, "warmup_steps": 1}
    generator = make_generator(model, "cg-taylor-target", params, num_inference_steps=STEPS,
                               calibration_conditions=conditions, calibration_file=tmp_path / "target.json")
    assert generator.name == "cg-taylor" and generator.params["threshold"] == generator.calibration["threshold"]
    with ExactFlops(model.transformer) as flops:
        generator(conditions, seed=0)
    generator.remove()
    assert len(list(tmp_path.glob("target-*.json"))) == 1
    assert generator.calibration["reached"] is False or flops.total < 0.9 * _full_flops(model, conditions)


def _full_flops(model, conditions) -> int:
    with ExactFlops(model.transformer) as flops:
        model(conditions, num_inference_steps=STEPS, seed=0)
    return flops.total


def test_full_method_and_threshold_zero_cg_taylor_compute_everything():
    model = _tiny_model("dit")
    conditions = model.default_conditions(1)
    with ExactFlops(model.transformer) as full:
        model(conditions, num_inference_steps=STEPS, seed=0)
    generator = make_generator(model, "cg-taylor", {"threshold": 0.0}, num_inference_steps=STEPS)
    with ExactFlops(model.transformer) as gated:
        generator(conditions, seed=0)
    generator.remove()
    assert gated.total >= full.total  # nothing skipped: such a row must be flagged invalid


def _quick_table_cfg(tmp_path, entries):
    cfg = compose(["table=table_dit", "profile=quick", "model.source=tiny", f"results_dir={tmp_path}",
                   "profile.num_inference_steps=5", "profile.num_conditions=1", "profile.wallclock_repeats=0",
                   "progress=false"])
    with open_dict(cfg):
        cfg.table.entries = entries
    return cfg


def test_table_flags_invalid_rows_and_resumes(tmp_path):
    entries = [
        {"method": "full"},
        {"method": "cg-taylor", "params": {"threshold": 0.0}},
        {"method": "fora", "params": {"interval": 2, "warmup_steps": 1}},
    ]
    cfg = _quick_table_cfg(tmp_path, entries)
    df = run_table(cfg)
    assert len(df) == 3
    by_method = df.set_index("method")
    assert not bool(by_method.loc["cg-taylor", "valid"])
    assert "invalid" in by_method.loc["cg-taylor", "note"]
    assert bool(by_method.loc["fora", "valid"]) and by_method.loc["fora", "flops_speedup"] > 1.2
    assert (tmp_path / "tables" / "table_dit.csv").exists() and (tmp_path / "tables" / "table_dit.md").exists()

    # a second run (as after a kill) computes nothing new and reuses the cached reference
    runner = TableRunner(cfg)
    again = runner.run()
    assert runner.computed_keys == []
    assert len(again) == 3
    # a row lost in a kill is the only one recomputed
    rows = sorted(runner.rows_dir().glob("fora-*.json"))
    rows[0].unlink()
    runner = TableRunner(cfg)
    runner.run()
    assert len(runner.computed_keys) == 1 and runner.computed_keys[0].startswith("fora-")
    assert len(pd.read_csv(tmp_path / "tables" / "table_dit.csv")) == 3


def test_calibrations_are_kept_per_weights(tmp_path):
    runner = TableRunner(_quick_table_cfg(tmp_path, [{"method": "magcache"}]))
    runner._workload = dict(runner.workload, weights="first-weights")
    first = runner.calibration_file("magcache")
    assert first == runner.calibration_file("magcache") and first != runner.calibration_file("teacache")
    runner._workload = dict(runner.workload, weights="retrained-weights")
    assert runner.calibration_file("magcache") != first


@pytest.mark.parametrize("model", ["flux1-dev", "dit-xl-2-256", "wan2.1-t2v-1.3b"])
def test_real_model_without_local_checkpoint_fails_clearly(model, tmp_path):
    table = {"flux1-dev": "table_flux", "dit-xl-2-256": "table_dit", "wan2.1-t2v-1.3b": "table_wan"}[model]
    cfg = compose([f"table={table}", f"model={model}", f"results_dir={tmp_path}"])
    assert cfg.model.num_inference_steps == 50
    with pytest.raises(FileNotFoundError, match=r"model\.path.*Nothing is downloaded"):
        run_table(cfg)
    with open_dict(cfg):
        cfg.model.path = str(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="does not exist.*never downloads"):
        run_table(cfg)


def test_paper_sampler_settings_in_real_model_configs():
    dit = compose(["model=dit-xl-2-256"]).model
    flux = compose(["model=flux1-dev"]).model
    wan = compose(["model=wan2.1-t2v-1.3b"]).model
    assert dit.scheduler == "DDIMScheduler" and dit.sampler.guidance_scale == 1.5
    assert flux.sampler.guidance_scale == 3.5
    assert wan.scheduler == "UniPCMultistepScheduler" and wan.sampler.guidance_scale == 5.0


@pytest.mark.parametrize("table", ALL_TABLES)
@pytest.mark.parametrize("profile", ["quick", "default", "full"])
def test_every_table_expands_to_known_methods(table, profile):
    cfg = OmegaConf.to_container(compose([f"table={table}", f"profile={profile}"]), resolve=True)
    rows = expand_rows(cfg["table"], cfg["model"], cfg["profile"])
    assert rows and all(r["method"] in METHOD_NAMES for r in rows)
    if table != "ablations":
        assert {"full", "cg-taylor", "taylorseer", "fbcache", "magcache", "teacache", "fora", "fewer-steps"} <= {
            r["method"] for r in rows
        }
    else:
        groups = {r["group"] for r in rows}
        assert {"last_block_order", "first_block_order", "warmup_steps", "plain_reuse", "forecast_target",
                "taylor_formula", "probe_block_4", "probe_block_14", "gate", "fixed_schedule"} <= groups


@pytest.mark.parametrize("table", ALL_TABLES)
def test_a_rerun_of_a_committed_table_finds_every_row(table):
    """Every row the default profile expands to is stored under the key the runner looks for: a rerun computes
    nothing, and a change to keys or workload identity (which would recompute every table) fails here."""
    runner = TableRunner(compose([f"table={table}", "profile=default"]))
    stored = {path.stem for path in (COMMITTED_ROWS / table / runner.workload_id).glob("*.json")}
    expected = {row_key(row) for row in runner.rows()}
    assert expected and expected <= stored, f"{table}: {len(expected - stored)} rows of {len(expected)} not found"


def test_summary_interpolates_along_the_sweep():
    df = pd.DataFrame({
        "model": ["m"] * 6,
        "group": ["a", "a", "a", "b", "b", "full"],
        "method": ["a", "a", "a", "b", "b", "full"],
        "flops_speedup": [1.5, 2.5, 3.5, 1.2, 2.4, 1.0],
        "psnr": [40.0, 30.0, 20.0, 50.0, 38.0, math.inf],
        "valid": [True, True, True, True, True, True],
    })
    summary = summary_at_speedups(df, [2, 3]).set_index("method")
    assert summary.loc["a", "psnr@2x"] == pytest.approx(35.0)
    assert summary.loc["a", "psnr@3x"] == pytest.approx(25.0)
    assert summary.loc["b", "psnr@2x"] == pytest.approx(42.0)
    assert math.isnan(summary.loc["b", "psnr@3x"])  # never extrapolated
    assert "full" not in summary.index
    # a dominated point (slower and worse) does not drag the curve down; invalid rows are ignored
    assert interpolate_at([1.5, 2.0, 2.5], [40.0, 20.0, 30.0], 2.0) == pytest.approx(35.0)
    # a faster setting that is also better answers for a target between the sweep's start and the front's start
    assert interpolate_at([1.9, 2.6, 3.3], [56.0, 60.0, 55.0], 2.0) == pytest.approx(60.0)
    assert math.isnan(interpolate_at([2.1, 2.6], [50.0, 45.0], 2.0))
    df.loc[1, "valid"] = False
    assert summary_at_speedups(df, [2]).set_index("method").loc["a", "psnr@2x"] == pytest.approx(35.0)
    df.loc[0, "valid"] = False
    assert math.isnan(summary_at_speedups(df, [2]).set_index("method").loc["a", "psnr@2x"])


def test_real_model_config_runs_a_local_checkpoint(tmp_path):
    """The pipeline path end to end on a tiny random DiT pipeline saved locally (what a user's checkpoint is)."""
    from tiny_pipelines import tiny_dit_pipeline

    tiny_dit_pipeline().save_pretrained(tmp_path / "dit")
    cfg = compose(["model=dit-xl-2-256", f"model.path={tmp_path / 'dit'}", "model.dtype=float32", "+model.device=cpu"])
    model = load_model(cfg.model)
    conditions = model.default_conditions(2)
    assert conditions == [207, 360]
    reference = model(conditions, num_inference_steps=5, seed=0)
    assert reference.shape[:2] == (2, 3) and 0 <= float(reference.min()) <= float(reference.max()) <= 1
    generator = make_generator(model, "cg-taylor", {"threshold": 1e6, "warmup_steps": 1}, num_inference_steps=5)
    output = generator(conditions, seed=0)
    assert generator.cg_taylor_stats().forecast_steps > 0 and not torch.equal(output, reference)
    generator.remove()


@pytest.mark.parametrize("method, params", [
    ("fbcache", {"threshold": 1e6}),
    ("teacache", {"threshold": 1e6, "coefficients": [1.0, 0.0]}),
    ("magcache", {"threshold": 1e6, "max_skip_steps": 4, "mag_ratios": [1.0] * STEPS}),
    ("fora", {"interval": 4}),
])
def test_warmup_steps_are_computed_by_every_peer(method, params):
    model = _tiny_model("dit")
    conditions = model.default_conditions(1)
    flops = {}
    for warmup in (1, 3):
        generator = make_generator(model, method, dict(params, warmup_steps=warmup), num_inference_steps=STEPS)
        with ExactFlops(model.transformer) as counted:
            generator(conditions, seed=0)
        generator.remove()
        flops[warmup] = counted.total
    assert flops[3] > flops[1], f"{method}: a longer warm-up computed no more"


def test_magcache_is_calibrated_per_cache_context_on_a_cfg_model(tmp_path):
    from cgtaylor.experiments.methods import calibrate

    model = _tiny_model("wan")
    ratios = calibrate(model, "magcache", num_inference_steps=STEPS, conditions=model.default_conditions(1), seed=0)
    per_context = ratios["mag_ratios"]
    assert set(per_context) == {"cond", "uncond"} and all(len(v) == STEPS for v in per_context.values())
    assert per_context["cond"] != per_context["uncond"]
    generator = make_generator(model, "magcache", {"threshold": 0.5, "max_skip_steps": 2, **ratios},
                               num_inference_steps=STEPS)
    output = generator(model.default_conditions(1), seed=0)
    from diffusers.hooks import HookRegistry

    from cgtaylor.blocks import find_blocks
    from cgtaylor._diffusers import mag_cache_head_hook_name

    head = HookRegistry.check_if_exists_or_initialize(find_blocks(model.transformer).blocks[0])
    used = head.get_hook(mag_cache_head_hook_name()).config.mag_ratios  # the last call was the uncond pass
    generator.remove()
    assert torch.isfinite(output).all()
    assert torch.allclose(torch.as_tensor(used, dtype=torch.float32),
                          torch.as_tensor(per_context["uncond"], dtype=torch.float32))
