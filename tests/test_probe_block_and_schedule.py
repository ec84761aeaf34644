"""CGTaylorConfig.probe_block (which block the gate measures) and compute_steps (a forced schedule) on tiny
diffusers pipelines."""

import pytest
import torch

from cgtaylor import CGTaylorConfig, apply_cg_taylor, cg_taylor_config, cg_taylor_stats, remove_cg_taylor
from cgtaylor.blocks import find_blocks
from cgtaylor.experiments.methods import apply_method
from tiny_pipelines import tiny_dit_pipeline, tiny_wan_pipeline, wan_prompt_embeds

LAYERS = 6
STEPS = 10


@pytest.fixture(scope="module")
def dit():
    return tiny_dit_pipeline(num_layers=LAYERS)


@pytest.fixture(autouse=True)
def clean(request):
    yield
    for name in ("dit", "wan"):
        if name in request.fixturenames:
            remove_cg_taylor(request.getfixturevalue(name))


def run_dit(pipe, steps=STEPS):
    return pipe(class_labels=[1, 2], num_inference_steps=steps, guidance_scale=1.5,
                generator=torch.Generator().manual_seed(0), output_type="pt").images


class BlockWork:
    """Per block, the transformer calls (one per step here) in which its first linear layer ran; a block passed
    through runs none."""

    def __init__(self, transformer):
        blocks = find_blocks(transformer).blocks
        self.call = -1
        self.ran = [set() for _ in blocks]
        linears = [next(m for m in b.modules() if isinstance(m, torch.nn.Linear)) for b in blocks]
        self.handles = [linear.register_forward_pre_hook(self._hook(i)) for i, linear in enumerate(linears)]
        self.handles.append(transformer.register_forward_pre_hook(self._next_call))

    def _next_call(self, module, args):
        self.call += 1

    def _hook(self, index):
        def hook(module, args):
            self.ran[index].add(self.call)
        return hook

    def remove(self):
        for handle in self.handles:
            handle.remove()


@pytest.mark.parametrize("probe_block", [1, 3, LAYERS - 1])
def test_probe_block_runs_the_blocks_up_to_it_and_skips_the_rest(dit, probe_block):
    apply_cg_taylor(dit, CGTaylorConfig(threshold=1e9, warmup_steps=2, probe_block=probe_block))
    work = BlockWork(dit.transformer)
    try:
        run_dit(dit)
    finally:
        work.remove()
    forecast = {r.step for r in cg_taylor_stats(dit).records if not r.computed}
    assert forecast == set(range(2, STEPS - 1))
    for index, ran in enumerate(work.ran):
        if index < probe_block:  # blocks 1..probe_block (counted from 1) run at every step
            assert ran == set(range(STEPS)), index
        else:  # the rest, the last block included, only at computed steps
            assert ran == set(range(STEPS)) - forecast, index


def test_probe_block_one_is_the_default_and_a_later_probe_changes_the_errors(dit):
    apply_cg_taylor(dit, CGTaylorConfig(threshold=0.3, warmup_steps=2))
    default = run_dit(dit)
    default_errors = [r.first_block_error for r in cg_taylor_stats(dit).records]
    apply_cg_taylor(dit, CGTaylorConfig(threshold=0.3, warmup_steps=2, probe_block=1))
    torch.testing.assert_close(run_dit(dit), default, rtol=0, atol=0)
    apply_cg_taylor(dit, CGTaylorConfig(threshold=0.3, warmup_steps=2, probe_block=4))
    run_dit(dit)
    assert [r.first_block_error for r in cg_taylor_stats(dit).records] != default_errors


@pytest.mark.parametrize("probe_block", [LAYERS, LAYERS + 5])
def test_probe_block_out_of_range_names_the_field_and_block_count(dit, probe_block):
    with pytest.raises(ValueError, match=rf"probe_block must be in 1\.\.{LAYERS - 1} .* {LAYERS} blocks"):
        apply_cg_taylor(dit, CGTaylorConfig(probe_block=probe_block))
    with pytest.raises(ValueError, match="not applied"):
        cg_taylor_config(dit)  # nothing was hooked


def test_experiment_methods_pass_probe_block_to_the_config(dit):
    applied = apply_method(dit.transformer, "cg-taylor", {"threshold": 0.2, "probe_block": 4}, num_inference_steps=8)
    try:
        assert cg_taylor_config(dit.transformer).probe_block == 4
    finally:
        applied.remove()
    with pytest.raises(ValueError, match="probe_block"):
        apply_method(dit.transformer, "cg-taylor", {"probe_block": LAYERS}, num_inference_steps=8)


FORCED = (0, 2, 3, 7)


def test_compute_steps_is_the_schedule_exactly(dit):
    # Warm-up (3 by default), threshold and the last-step rule are replaced: step 1 and the last step are forecast.
    apply_cg_taylor(dit, CGTaylorConfig(threshold=0.0, compute_steps=FORCED))
    output = run_dit(dit)
    records = cg_taylor_stats(dit).records
    assert [r.step for r in records if r.computed] == list(FORCED)
    assert [r.reason for r in records if r.computed] == ["first"] + ["scheduled"] * (len(FORCED) - 1)
    assert all(r.reason == "forecast" for r in records if not r.computed)
    # the gate still measures its error on every step after the first (recorded, not acted on)
    assert all(r.first_block_error is not None for r in records[1:]) and torch.isfinite(output).all()


def test_compute_steps_in_analysis_mode_records_the_forced_decisions(dit):
    apply_cg_taylor(dit, CGTaylorConfig(compute_steps=FORCED, analysis=True))
    run_dit(dit)
    records = cg_taylor_stats(dit).records
    assert all(r.computed for r in records)
    assert [r.step for r in records if r.would_compute] == list(FORCED)


def test_compute_steps_followed_by_every_cache_context():
    wan = tiny_wan_pipeline()
    apply_cg_taylor(wan, CGTaylorConfig(compute_steps=(0, 1, 4)))
    wan(height=16, width=16, num_frames=5, num_inference_steps=6, guidance_scale=5.0,
        generator=torch.Generator().manual_seed(0), output_type="pt", **wan_prompt_embeds())
    stats = cg_taylor_stats(wan)
    assert set(stats.contexts) == {"cond", "uncond"}
    for context in stats.contexts:
        assert [r.step for r in stats.for_context(context) if r.computed] == [0, 1, 4], context
