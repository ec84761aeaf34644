"""forecast="modules": each block's attention and MLP outputs forecast on a skipped step, the rest computed."""

from types import SimpleNamespace

import pytest
import torch

from cgtaylor import CGTaylorConfig, apply_cg_taylor, cg_taylor_stats, remove_cg_taylor
from cgtaylor.gate import GateDecision
from cgtaylor.meters import count_flops
from cgtaylor.module_forecast import MODULE_LAYOUTS, ModuleForecastHook, block_children
from cgtaylor.taylor import TaylorLadder
from test_core_pipelines import RUNNERS
from tiny_pipelines import tiny_dit_pipeline, tiny_flux_pipeline, tiny_wan_pipeline

HUGE = 1e9


@pytest.fixture(scope="module")
def pipes():
    return {"dit": tiny_dit_pipeline(), "flux": tiny_flux_pipeline(), "wan": tiny_wan_pipeline()}


@pytest.fixture(autouse=True)
def clean(pipes):
    yield
    for pipe in pipes.values():
        remove_cg_taylor(pipe)


@pytest.mark.parametrize("name", ["dit", "flux", "wan"])
def test_threshold_zero_equals_the_plain_model(name, pipes):
    pipe, run = pipes[name], RUNNERS[name]
    reference = run(pipe)
    apply_cg_taylor(pipe, CGTaylorConfig(threshold=0, forecast="modules"))
    torch.testing.assert_close(run(pipe), reference, rtol=1e-5, atol=1e-5)
    assert cg_taylor_stats(pipe).forecast_steps == 0


@pytest.mark.parametrize("name, steps, warmup", [("dit", 10, 3), ("flux", 8, 2), ("wan", 8, 3)])
def test_forecast_steps_skip_attention_and_mlps_but_run_the_rest(name, steps, warmup, pipes):
    pipe, run = pipes[name], RUNNERS[name]
    reference, full_flops = count_flops(lambda: run(pipe, steps), pipe.transformer)
    apply_cg_taylor(pipe, CGTaylorConfig(threshold=HUGE, warmup_steps=warmup, forecast="last_block"))
    _, last_block_flops = count_flops(lambda: run(pipe, steps), pipe.transformer)
    apply_cg_taylor(pipe, CGTaylorConfig(threshold=HUGE, warmup_steps=warmup, forecast="modules"))
    output, flops = count_flops(lambda: run(pipe, steps), pipe.transformer)
    stats = cg_taylor_stats(pipe)
    for context in stats.contexts:
        assert [r.step for r in stats.for_context(context) if r.computed] == list(range(warmup)) + [steps - 1]
    assert torch.isfinite(output).all() and not torch.equal(output, reference)
    # a forecast step still pays each block's norms and modulation (matmuls in DiT's and FLUX's adaptive norms,
    # none in Wan's, whose modulation is a table lookup): at least a last-block forecast's cost
    assert last_block_flops <= flops < 0.85 * full_flops
    assert (last_block_flops < flops) == (name != "wan")


def test_the_cache_holds_order_plus_one_tensors_per_forecast_child(pipes):
    pipe = pipes["flux"]
    apply_cg_taylor(pipe, CGTaylorConfig(threshold=0, forecast="modules", last_block_order=2))
    outputs: dict[str, list[torch.Tensor]] = {}
    handles = []
    from cgtaylor.blocks import block_metadata, find_blocks

    blocks = find_blocks(pipe.transformer)
    for block_name, block in zip(blocks.names[1:], blocks.blocks[1:]):
        for child_name, child, skipped in block_children(block):
            if not skipped:
                key = f"{block_name}.{child_name}"
                handles.append(child.register_forward_hook(
                    lambda m, a, out, key=key: outputs.__setitem__(key, [t for t in (
                        out if isinstance(out, tuple) else (out,)) if t is not None])))
    index = block_metadata(blocks.blocks[0]).return_hidden_states_index
    handles.append(blocks.blocks[0].register_forward_hook(lambda m, a, out: outputs.__setitem__("probe", [out[index]])))
    RUNNERS["flux"](pipe, 8)
    for handle in handles:
        handle.remove()
    probe = outputs.pop("probe")[0]
    expected = sum(3 * t.numel() * t.element_size() for tensors in outputs.values() for t in tensors)
    expected += 2 * probe.numel() * probe.element_size()  # the gate's own ladder (first_block_order 1)
    assert cg_taylor_stats(pipe).cache_bytes["cond"] == expected
    apply_cg_taylor(pipe, CGTaylorConfig(threshold=0, forecast="last_block", last_block_order=2))
    RUNNERS["flux"](pipe, 8)
    assert cg_taylor_stats(pipe).cache_bytes["cond"] < expected / 3  # 3.5x smaller on this 5-block model


class _Linear(torch.nn.Module):
    """Output a + b * step and a pair for a tuple-returning child; counts its calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, step):
        self.calls += 1
        value = torch.full((2, 3), 1.0 + 0.5 * step)
        return value, None


def _state(step: int, compute: bool, modules: dict):
    ladder = lambda: TaylorLadder(1)  # noqa: E731
    return SimpleNamespace(step=step, skipping=not compute, decision=GateDecision(compute, "x"), modules=modules,
                           new_ladder=ladder)


def test_a_child_forecasts_linear_outputs_exactly_and_skipped_children_return_zeros():
    from diffusers.hooks import HookRegistry

    child, skipped = _Linear(), _Linear()
    modules: dict = {}
    current = {}
    controller = SimpleNamespace(_state=lambda: current["state"])
    HookRegistry.check_if_exists_or_initialize(child).register_hook(ModuleForecastHook(controller, "c", False), "m")
    HookRegistry.check_if_exists_or_initialize(skipped).register_hook(ModuleForecastHook(controller, "s", True), "m")
    for step, compute in ((0, True), (2, True), (3, False), (5, False), (6, True)):
        current["state"] = _state(step, compute, modules)
        value, none = child(step)
        zeros, _ = skipped(step)
        torch.testing.assert_close(value, torch.full((2, 3), 1.0 + 0.5 * step))
        assert none is None
        if not compute:
            assert torch.equal(zeros, torch.zeros(2, 3))
    assert child.calls == 3 and skipped.calls == 3  # forecast steps never ran the children


def test_an_unknown_block_class_names_the_field_and_the_known_classes():
    with pytest.raises(ValueError, match=r"forecast='modules' does not know .*Linear.*known block classes"):
        block_children(torch.nn.Linear(2, 2))
    assert set(MODULE_LAYOUTS) >= {"BasicTransformerBlock", "FluxTransformerBlock", "WanTransformerBlock"}
