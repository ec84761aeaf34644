"""CG-Taylor on real diffusers pipelines built offline from tiny random-weight components."""

import math

import pytest
import torch
from diffusers.hooks import FirstBlockCacheConfig

from cgtaylor import CGTaylorConfig, apply_cg_taylor, cg_taylor_stats, remove_cg_taylor, reset_cg_taylor
from cgtaylor.meters import count_flops
from tiny_pipelines import flux_prompt_embeds, tiny_dit_pipeline, tiny_flux_pipeline, tiny_wan_pipeline, wan_prompt_embeds

HUGE = 1e9


@pytest.fixture(scope="module")
def dit():
    return tiny_dit_pipeline()


@pytest.fixture(scope="module")
def flux():
    return tiny_flux_pipeline()


@pytest.fixture(scope="module")
def wan():
    return tiny_wan_pipeline()


def run_dit(pipe, steps=10, labels=(1, 2), seed=0):
    return pipe(class_labels=list(labels), num_inference_steps=steps, guidance_scale=1.5,
                generator=torch.Generator().manual_seed(seed), output_type="pt").images


def run_flux(pipe, steps=8, batch=1, seed=0):
    embeds = {k: v.to(pipe.transformer.dtype) for k, v in flux_prompt_embeds(batch).items()}
    return pipe(height=32, width=32, num_inference_steps=steps, guidance_scale=3.5,
                generator=torch.Generator().manual_seed(seed), output_type="pt", **embeds).images


def run_wan(pipe, steps=8, seed=0):
    return pipe(height=16, width=16, num_frames=5, num_inference_steps=steps, guidance_scale=5.0,
                generator=torch.Generator().manual_seed(seed), output_type="pt", **wan_prompt_embeds()).frames


RUNNERS = {"dit": run_dit, "flux": run_flux, "wan": run_wan}


@pytest.fixture(autouse=True)
def clean(request):
    yield
    for name in ("dit", "flux", "wan"):
        if name in request.fixturenames:
            remove_cg_taylor(request.getfixturevalue(name))


@pytest.mark.parametrize("name", ["dit", "flux", "wan"])
def test_threshold_zero_equals_unaccelerated_output(name, request):
    pipe, run = request.getfixturevalue(name), RUNNERS[name]
    reference = run(pipe)
    apply_cg_taylor(pipe, CGTaylorConfig(threshold=0))
    accelerated = run(pipe)
    torch.testing.assert_close(accelerated, reference, rtol=1e-5, atol=1e-5)
    stats = cg_taylor_stats(pipe)
    assert stats.forecast_steps == 0 and stats.computed_steps > 0


@pytest.mark.parametrize("name, steps, warmup", [("dit", 10, 3), ("flux", 8, 2), ("wan", 8, 3)])
def test_huge_threshold_computes_only_warmup_first_and_last_steps(name, steps, warmup, request):
    pipe, run = request.getfixturevalue(name), RUNNERS[name]
    _, full_flops = count_flops(lambda: run(pipe, steps), pipe.transformer)
    apply_cg_taylor(pipe, CGTaylorConfig(threshold=HUGE, warmup_steps=warmup))
    output, flops = count_flops(lambda: run(pipe, steps), pipe.transformer)
    assert torch.isfinite(output).all()
    stats = cg_taylor_stats(pipe)
    for context in stats.contexts:
        computed = [r.step for r in stats.for_context(context) if r.computed]
        assert computed == list(range(warmup)) + [steps - 1], context
    computed_fraction = (warmup + 1) / steps
    # forecast steps still pay embeddings, the first block and the head: cheap only next to the full depth
    assert computed_fraction < flops / full_flops < 0.85


def test_gate_skips_with_a_moderate_threshold_and_records_python_types(flux):
    """The reference FLUX port tests a tensor with `is False` and never skips; this one must."""
    apply_cg_taylor(flux, CGTaylorConfig(threshold=0.5, warmup_steps=2))
    run_flux(flux, steps=10)
    stats = cg_taylor_stats(flux)
    assert stats.forecast_steps > 0
    for record in stats.records:
        assert type(record.computed) is bool
        assert record.first_block_error is None or type(record.first_block_error) is float


def test_flux_gates_on_image_stream_and_forecasts_image_tokens(flux):
    apply_cg_taylor(flux, CGTaylorConfig(threshold=HUGE, warmup_steps=2, forecast="last_block"))
    output = run_flux(flux, steps=6)
    assert torch.isfinite(output).all()
    stats = cg_taylor_stats(flux)
    assert stats.forecast_steps > 0
    image_tokens = (32 // 2) ** 2  # 32x32 latent packed 2x2; the 6 text tokens must not be what is cached
    hidden = flux.transformer.inner_dim
    assert stats.total_cache_bytes == (2 + 2) * image_tokens * hidden * 4


def test_cond_and_uncond_have_separate_caches_and_uncond_follows_cond(wan):
    run_wan(wan, steps=4)  # the model has answered cache_context once before hooks exist
    apply_cg_taylor(wan, CGTaylorConfig(threshold=0.3, warmup_steps=2))
    run_wan(wan, steps=12)
    stats = cg_taylor_stats(wan)
    assert set(stats.contexts) == {"cond", "uncond"}
    cond = {r.step: r.computed for r in stats.for_context("cond")}
    uncond = {r.step: r.computed for r in stats.for_context("uncond")}
    assert cond == uncond and len(cond) == 12
    assert stats.cache_bytes["cond"] > 0 and stats.cache_bytes["uncond"] > 0


def test_dit_without_cache_context_uses_a_default_context(dit):
    apply_cg_taylor(dit, CGTaylorConfig(threshold=HUGE))
    run_dit(dit)
    assert cg_taylor_stats(dit).contexts == ["default"]


@pytest.mark.parametrize("name", ["dit", "flux", "wan"])
def test_repeated_calls_are_identical_even_when_steps_or_batch_change(name, request):
    pipe, run = request.getfixturevalue(name), RUNNERS[name]
    apply_cg_taylor(pipe, CGTaylorConfig(threshold=0.3, warmup_steps=2))
    first = run(pipe, 8)
    run(pipe, 5)
    if name == "dit":
        run_dit(pipe, 6, labels=(3, 4, 5))
    elif name == "flux":
        run_flux(pipe, 6, batch=2)
    again = run(pipe, 8)
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    records = cg_taylor_stats(pipe).records
    assert max(r.step for r in records) == 7 and records[-1].reason == "last"


def test_transformer_driven_from_own_loop_resets_on_new_trajectory_and_knows_last_step_from_config(dit):
    transformer = dit.transformer
    apply_cg_taylor(transformer, CGTaylorConfig(threshold=HUGE, num_inference_steps=6, warmup_steps=1))
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([1, 2])

    def trajectory():
        outputs = []
        for t in torch.linspace(900, 0, 6).long():
            outputs.append(transformer(x, timestep=t.expand(2), class_labels=labels).sample)
        return outputs

    with torch.no_grad():
        first, second = trajectory(), trajectory()
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert [r.reason for r in cg_taylor_stats(transformer).records] == ["first"] + ["forecast"] * 4 + ["last"]


def test_reset_cg_taylor_and_diffusers_reset_forget_state(flux):
    apply_cg_taylor(flux, CGTaylorConfig(threshold=HUGE, warmup_steps=2))
    run_flux(flux, steps=5)
    controller = flux.transformer._diffusers_hook.get_hook("cg_taylor_transformer").controller
    # FluxPipeline calls transformer._reset_stateful_cache() at the end of every call
    assert controller.state_manager._state_cache == {}
    assert len(cg_taylor_stats(flux).records) == 5  # statistics of the last call survive the reset
    reset_cg_taylor(flux)
    assert cg_taylor_stats(flux).records == []


def test_analysis_mode_computes_everything_and_records_both_errors(dit):
    reference = run_dit(dit, steps=12)
    apply_cg_taylor(dit, CGTaylorConfig(threshold=0.3, warmup_steps=2, analysis=True))
    output = run_dit(dit, steps=12)
    torch.testing.assert_close(output, reference, rtol=1e-5, atol=1e-5)
    frame = cg_taylor_stats(dit).to_dataframe()
    assert frame["computed"].all()
    later = frame[frame.step >= 2]
    assert later["last_block_error"].notna().all() and later["first_block_error"].notna().all()
    assert frame["would_compute"].notna().all()
    assert later["first_block_change"].notna().all()


def test_few_step_runs_warn_that_nothing_can_be_skipped(dit, caplog):
    apply_cg_taylor(dit, CGTaylorConfig(threshold=HUGE, warmup_steps=3))
    with caplog.at_level("WARNING", logger="cgtaylor"):
        run_dit(dit, steps=4)
    assert "cannot skip any step of a 4-step run" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="cgtaylor"):
        run_dit(dit, steps=10)
    assert "cannot skip" not in caplog.text


def test_remove_restores_plain_model_and_apply_twice_replaces(dit):
    reference = run_dit(dit)
    apply_cg_taylor(dit, CGTaylorConfig(threshold=HUGE))
    apply_cg_taylor(dit, CGTaylorConfig(threshold=0))
    torch.testing.assert_close(run_dit(dit), reference, rtol=1e-5, atol=1e-5)
    remove_cg_taylor(dit)
    assert run_dit(dit).equal(reference) or torch.allclose(run_dit(dit), reference, atol=1e-6)
    assert dit.transformer._diffusers_hook.hooks == {}
    for block in dit.transformer.transformer_blocks:
        assert block._diffusers_hook.hooks == {}


def test_cache_holds_order_plus_one_tensors_per_ladder_whatever_the_depth():
    sizes = {}
    for layers in (3, 8):
        pipe = tiny_dit_pipeline(num_layers=layers)
        apply_cg_taylor(pipe, CGTaylorConfig(threshold=HUGE, first_block_order=2, last_block_order=1))
        run_dit(pipe, steps=8)
        sizes[layers] = cg_taylor_stats(pipe).total_cache_bytes
    hidden = 4 * 16 * 16 * 4  # batch 4 (CFG doubled) x 16 tokens x 16 channels x fp32
    assert sizes[3] == sizes[8] == (3 + 2) * hidden


def test_bf16_runs(flux):
    flux.to(torch.bfloat16)
    try:
        apply_cg_taylor(flux, CGTaylorConfig(threshold=0.5, warmup_steps=2))
        output = run_flux(flux, steps=6)
        assert torch.isfinite(output.float()).all()
        assert cg_taylor_stats(flux).forecast_steps > 0
    finally:
        flux.to(torch.float32)


def test_unsupported_targets_raise_clear_errors(flux):
    with pytest.raises(TypeError, match="pipeline with a `transformer`"):
        apply_cg_taylor(object(), CGTaylorConfig())
    with pytest.raises(ValueError, match="at least 2"):
        apply_cg_taylor(torch.nn.Linear(2, 2), CGTaylorConfig())

    class Custom(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)])

    with pytest.raises(TypeError, match="supported block classes"):
        apply_cg_taylor(Custom(), CGTaylorConfig())
    with pytest.raises(ValueError, match="not applied"):
        cg_taylor_stats(flux)
    flux.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.2))
    try:
        with pytest.raises(ValueError, match="disable_cache"):
            apply_cg_taylor(flux, CGTaylorConfig())
    finally:
        flux.transformer.disable_cache()
