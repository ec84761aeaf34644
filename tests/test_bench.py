"""The real-scale benchmark: published configs, forced schedules, and a reduced CPU run end to end."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from cgtaylor.bench import measure
from cgtaylor.bench.real_scale import main
from cgtaylor.bench.schedules import forced_compute_steps, interval_schedule, scaled_full_steps, schedule_config
from cgtaylor.bench.specs import MODEL_ORDER, build_transformer, load_spec


def test_published_configs():
    flux = load_spec("flux1-dev")
    assert flux.transformer["num_layers"] == 19 and flux.transformer["num_single_layers"] == 38
    assert flux.transformer["num_attention_heads"] * flux.transformer["attention_head_dim"] == 3072
    assert flux.transformer["axes_dims_rope"] == [16, 56, 56] and flux.transformer["guidance_embeds"]
    gh, gw = flux.inputs["image_tokens_hw"]
    assert gh * gw == 4096 and flux.inputs["text_tokens"] == 512
    wan = load_spec("wan2.1-t2v-1.3b")
    f, h, w = wan.inputs["latent_fhw"]
    assert (f, h, w) == (21, 60, 104) and f * (h // 2) * (w // 2) == 32760 and wan.cfg == "calls"
    assert wan.contexts == ("cond", "uncond")
    dit = load_spec("dit-xl-2-256")
    assert dit.transformer["num_layers"] == 28 and dit.cfg == "batch"
    reduced = load_spec("flux1-dev", reduced=True)
    assert reduced.transformer["num_layers"] == 2 and reduced.inputs["text_tokens"] == 8


@pytest.mark.parametrize("name, params", [("dit-xl-2-256", 749_826_464), ("wan2.1-t2v-1.3b", 1_418_996_800)])
def test_real_size_on_meta_device(name, params):
    # Built without memory: the parameter count is the published model's (Wan2.1-1.3B: 1.42 B).
    model = build_transformer(load_spec(name), torch.device("meta"), torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.parametrize("num_steps", [8, 50])
def test_forced_schedule_hits_every_count(num_steps):
    for full in range(2, num_steps + 1):
        steps = forced_compute_steps(num_steps, full)
        assert len(steps) == full and steps[0] == 0 and steps[-1] == num_steps - 1
        assert list(steps) == sorted(set(steps))
    with pytest.raises(ValueError, match="full_steps must be between 2"):
        forced_compute_steps(num_steps, 1)


def test_forced_schedule_spreads_paper_counts():
    # 23 of 50: the full steps are spread out, not 22 leading steps and the last one.
    steps = forced_compute_steps(50, 23)
    warmup = next(i for i, step in enumerate(steps) if step != i)
    gaps = {b - a for a, b in zip(steps[warmup - 1:-1], steps[warmup:-1])}
    assert warmup < 10 and len(gaps) == 1 and steps == interval_schedule(50, warmup, gaps.pop())
    assert interval_schedule(8, 1, 3) == (0, 3, 6, 7) and interval_schedule(8, 3, None) == (0, 1, 2, 7)
    config = schedule_config(load_spec("flux1-dev"), 50, 23)
    assert config.compute_steps == steps and config.num_inference_steps == 50
    assert not math.isinf(config.threshold)  # the schedule is forced by compute_steps, not by the gate's threshold
    assert scaled_full_steps([23, 15, 13, 11], 8) == [4, 2]
    assert scaled_full_steps([23, 15], 50) == [23, 15]


def test_reduced_run_end_to_end(tmp_path):
    out = tmp_path / "real_scale.md"
    results = main(["--reduced", "--out", str(out), "--steps", "6", "--probe-steps", "5", "--full-steps", "23,11"])
    assert [r.name for r in results] == list(MODEL_ORDER)
    text = out.read_text()
    assert "Device: CPU" in text and "reduced" in text
    table = pd.read_csv(out.with_suffix(".csv"))
    forced = table[table.method == "cg_taylor"]
    assert len(forced) == 2 * len(MODEL_ORDER) and (table.method == "plain").sum() == len(MODEL_ORDER)
    assert forced.schedule_ok.all() and table.finite.all()
    assert (table.c > 0).all() and (table.c < 1.5).all()
    for r in results:
        assert r.forecast_step_s is not None and r.cache_bytes > 0 and r.taylorseer_modules > 0
        assert not r.notes
        wan_like = r.name.startswith("wan")
        rows = [row for row in r.rows if row["method"] == "cg_taylor"]
        assert all(len(row["computed"].split("/")) == (2 if wan_like else 1) for row in rows)


def test_stopped_run_keeps_the_models_already_measured(tmp_path, monkeypatch):
    import cgtaylor.bench.real_scale as real_scale

    measured = measure.bench_model

    def stop_on_second(spec, *args, **kwargs):
        if spec.name != MODEL_ORDER[0]:
            raise KeyboardInterrupt
        return measured(spec, *args, **kwargs)

    monkeypatch.setattr(real_scale, "bench_model", stop_on_second)
    out = tmp_path / "real_scale.md"
    with pytest.raises(KeyboardInterrupt):
        main(["--reduced", "--out", str(out), "--steps", "6", "--probe-steps", "5", "--full-steps", "11"])
    table = pd.read_csv(out.with_suffix(".csv"))
    assert set(table.model) == {MODEL_ORDER[0]} and MODEL_ORDER[0] in out.read_text()


def test_empty_model_list_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--reduced", "--models", " , ", "--out", str(tmp_path / "r.md")])
    assert stop.value.code == 2 and "argument --models: names no model" in capsys.readouterr().err


def test_reduced_run_compiled(tmp_path):
    # Plain and CG-Taylor both compiled (regional, inductor): the forced schedule holds and both are reported. The
    # budget leaves room for compiling on a slow machine (the reduced default of 60 s would skip the schedules).
    out = tmp_path / "real_scale.md"
    results = main(["--reduced", "--compile", "regional", "--models", "flux1-dev", "--budget-s", "900",
                    "--out", str(out), "--steps", "6", "--probe-steps", "5", "--full-steps", "23"])
    assert "torch.compile: regional" in out.read_text()
    table = pd.read_csv(out.with_suffix(".csv"))
    assert (table["compile"] == "regional").all() and table.finite.all()
    forced = table[table.method == "cg_taylor"]
    assert len(forced) == 1 and forced.schedule_ok.all()
    (result,) = results
    assert result.first_run_s["plain"] > 0 and result.first_run_s["cg_taylor"] > 0
    assert result.forecast_step_s is not None and not result.notes
