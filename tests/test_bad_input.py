"""Bad input as a new user types it: each case ends in an error that names the argument and what it accepts."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from cgtaylor import CGTaylorConfig, apply_cg_taylor, calibrate_cg_taylor, remove_cg_taylor, zoo
from cgtaylor.bench import measure, real_scale

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_dit():
    return zoo.tiny("dit-digits")


@pytest.mark.parametrize("steps", [0, -3, 2.7, "50", None])
def test_zoo_sampling_rejects_a_step_count_that_is_not_a_positive_integer(tiny_dit, steps):
    with pytest.raises(ValueError, match=r"num_inference_steps must be an integer >= 1, got"):
        tiny_dit([3], num_inference_steps=steps)


def test_zoo_sampling_accepts_whole_numbers_of_any_integer_type(tiny_dit):
    import numpy as np

    reference = tiny_dit([3], num_inference_steps=2)
    assert torch.equal(tiny_dit([3], num_inference_steps=np.int64(2)), reference)
    assert torch.equal(tiny_dit([3], num_inference_steps=2.0), reference)


@pytest.mark.parametrize("conditions", [3, "3", None])
def test_zoo_conditions_of_the_wrong_type_name_what_a_condition_is(tiny_dit, conditions):
    with pytest.raises(TypeError, match=r"dit-digits conditions must be a list of class labels \(integers 0-9\)"):
        tiny_dit(conditions, num_inference_steps=2)


def test_zoo_captions_of_the_wrong_type_name_the_grammar():
    with pytest.raises(TypeError, match=r"flux-digits conditions must be a list of captions \('a \{colour\}"):
        zoo.tiny("flux-digits")(7, num_inference_steps=2)


@pytest.mark.parametrize("name, error, message", [
    (None, TypeError, r"zoo model name must be one of \['dit-digits', 'flux-digits', 'wan-digits'\] or a path"),
    ("", ValueError, r"zoo model name is empty; give one of \['dit-digits'"),
    ("   ", ValueError, r"zoo model name is empty"),
    ("dit-digitz", ValueError, r"unknown zoo model 'dit-digitz'; available"),
])
def test_zoo_load_rejects_names_that_are_no_model(name, error, message):
    with pytest.raises(error, match=message):
        zoo.load(name)


@pytest.mark.parametrize("dtype", ["bf16", "int8", torch.int8, "float8_e4m3fn", 16])
def test_zoo_load_rejects_a_dtype_it_cannot_compute_in(dtype):
    with pytest.raises(ValueError, match=r"zoo.load dtype must be one of the torch dtypes float32, bfloat16"):
        zoo.load("dit-digits", dtype=dtype)


def test_zoo_load_takes_a_dtype_by_name():
    assert zoo.load("dit-digits", dtype="bfloat16").dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", ["float8_e4m3fn", torch.float8_e5m2, "int8", "bf16"])
def test_config_rejects_a_cache_dtype_the_taylor_ladder_cannot_compute_in(dtype):
    with pytest.raises(ValueError, match=r"CGTaylorConfig.cache_dtype .* must be one of the torch dtypes"):
        CGTaylorConfig(cache_dtype=dtype)


def test_config_is_checked_once_and_then_immutable():
    config = CGTaylorConfig(threshold=0.1, cache_dtype="float16")
    assert config.cache_dtype is torch.float16
    with pytest.raises(AttributeError, match=r"threshold cannot be set.*config.with_updates\(threshold=\.\.\.\)"):
        config.threshold = -1.0
    with pytest.raises(AttributeError, match="cache_dtype cannot be set"):
        config.cache_dtype = "float8_e4m3fn"
    assert config.threshold == 0.1 and config.cache_dtype is torch.float16
    with pytest.raises(ValueError, match="CGTaylorConfig.threshold must be a number >= 0"):
        config.with_updates(threshold=-1.0)
    assert config.with_updates(threshold=0.2).threshold == 0.2 and config.threshold == 0.1


def test_a_half_precision_cache_samples(tiny_dit):
    """What the cache_dtype check lets through works at sampling time (the float8 case failed there)."""
    apply_cg_taylor(tiny_dit.transformer, CGTaylorConfig(threshold=1e6, warmup_steps=1, cache_dtype="bfloat16"))
    try:
        assert torch.isfinite(tiny_dit([3], num_inference_steps=5)).all()
    finally:
        remove_cg_taylor(tiny_dit.transformer)


@pytest.mark.parametrize("min_psnr", [-5, 0, float("nan"), "35"])
def test_calibration_rejects_a_psnr_floor_that_is_no_floor(tiny_dit, min_psnr):
    with pytest.raises(ValueError, match=r"min_psnr must be a finite number of dB > 0"):
        calibrate_cg_taylor(tiny_dit.transformer, lambda: tiny_dit([3], num_inference_steps=5), min_psnr=min_psnr)


@pytest.mark.parametrize("generate", [None, "model([3])"])
def test_calibration_names_generate_when_it_is_not_callable(tiny_dit, generate):
    with pytest.raises(TypeError, match=r"generate must be a zero-argument callable .* got "):
        calibrate_cg_taylor(tiny_dit.transformer, generate, target_speedup=2.0)


def test_reproduce_all_rejects_a_second_argument_before_starting_anything(tmp_path):
    """A copy of the script whose environment step would announce a start: the usage error must come first."""
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    shutil.copy(ROOT / "scripts" / "reproduce_all.sh", scripts)
    (scripts / "ensure_env.sh").write_text("#!/usr/bin/env bash\necho chain-started >&2\nexit 97\n")
    (scripts / "ensure_env.sh").chmod(0o755)
    for arguments in (["--quick", "--bogus"], ["--full", "--quick"], ["--bogus"]):
        done = subprocess.run(["bash", str(scripts / "reproduce_all.sh"), *arguments], capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 2 and "chain-started" not in done.stderr, (arguments, done.stderr)
        assert "usage:" in done.stderr
        assert ("one option at most" in done.stderr) == (len(arguments) > 1), done.stderr


BENCH_CASES = [
    (["--models", "nope"], "--models", r"unknown model spec 'nope'; accepted: dit-xl-2-256, flux1-dev"),
    (["--models", " , "], "--models", r"names no model"),
    (["--dtype", "float7"], "--dtype", r"float32, bfloat16, float16, float64.*got 'float7'"),
    (["--dtype", "int8"], "--dtype", r"got 'int8'"),
    (["--full-steps", "abc"], "--full-steps", r"'abc' is not an integer; give comma-separated full-step counts"),
    (["--full-steps", "60"], "--full-steps", r"60 is out of range; .* 2 <= S <= 50"),
    (["--full-steps", "0"], "--full-steps", r"0 is out of range"),
    (["--steps", "0"], "--steps", r"must be an integer >= 3"),
    (["--steps", "1"], "--steps", r"must be an integer >= 3"),
    (["--threads", "0"], "--threads", r"must be an integer >= 1"),
    (["--probe-steps", "0"], "--probe-steps", r"must be an integer >= 4"),
    (["--budget-s", "-1"], "--budget-s", r"must be a number of seconds > 0"),
]


@pytest.mark.parametrize("flags, flag, message", BENCH_CASES, ids=[" ".join(c[0]) for c in BENCH_CASES])
def test_bench_flags_are_checked_before_any_model_is_built(flags, flag, message, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(measure, "build_transformer", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(SystemExit) as stop:
        real_scale.main(["--reduced", "--out", str(tmp_path / "rs.md"), *flags])
    assert stop.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert f": error: argument {flag}: " in error and re.search(message, error), error
    assert not (tmp_path / "rs.md").exists()


def test_bench_device_without_cuda_is_rejected(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        real_scale.main(["--device", "cuda", "--out", str(tmp_path / "rs.md")])
    assert "argument --device: 'cuda' asks for CUDA" in capsys.readouterr().err
