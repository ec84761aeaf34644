"""cache-dit as a peer method on tiny random-weight DiT / FLUX / Wan: it caches, resets, and comes off cleanly."""

import functools

import pytest
import torch

pytest.importorskip("cache_dit")

from cgtaylor.blocks import find_blocks
from cgtaylor.experiments import hooks as skip_hooks
from cgtaylor.experiments.cache_dit_peer import (
    CACHE_DIT_VARIANTS, apply_cache_dit, cache_dit_stats, remove_cache_dit, supported,
)
from cgtaylor.experiments.models import load_model

KINDS = ("dit", "flux", "wan")
STEPS = 4
CACHING = dict(threshold=0.9, warmup_steps=1, num_inference_steps=STEPS)


@functools.lru_cache(maxsize=None)
def _tiny(kind: str, guidance: float | None = None):
    sampler = {} if guidance is None else {"guidance_scale": guidance}
    model = load_model({"name": f"{kind}-digits", "source": "tiny", "sampler": sampler})
    conditions = model.default_conditions(1, seed=0)
    return model, conditions, model(conditions, num_inference_steps=STEPS, seed=0)


@pytest.mark.parametrize("variant", CACHE_DIT_VARIANTS)
@pytest.mark.parametrize("kind", KINDS)
def test_variant_caches_repeats_and_comes_off_bit_for_bit(kind, variant):
    import cache_dit

    model, conditions, plain = _tiny(kind)
    keys = set(model.transformer.state_dict())
    blocks_before = find_blocks(model.transformer).names
    apply_cache_dit(model.transformer, variant, **CACHING)
    first = model(conditions, num_inference_steps=STEPS, seed=0)
    stats = cache_dit_stats(model.transformer)
    summary = cache_dit.summary(model.transformer, logging=False)[-1]
    second = model(conditions, num_inference_steps=STEPS, seed=0)
    remove_cache_dit(model.transformer)
    after = model(conditions, num_inference_steps=STEPS, seed=0)

    (blocks,) = stats.values()
    assert blocks["steps"] == STEPS and blocks["cached_steps"] == list(range(1, STEPS))
    assert blocks["cached_steps"] == summary.cached_steps
    assert blocks["cfg_cached_steps"] == (list(range(1, STEPS)) if kind == "wan" else [])
    assert (first - plain).abs().max() > 1e-4
    assert torch.equal(first, second)
    assert torch.equal(after, plain)
    assert set(model.transformer.state_dict()) == keys and "forward" not in vars(model.transformer)
    # the next method finds the blocks in execution order (FLUX: the dual-stream list before the single-stream one)
    assert find_blocks(model.transformer).names == blocks_before


@pytest.mark.parametrize("kind", KINDS)
def test_zero_threshold_computes_as_the_plain_model(kind):
    model, conditions, plain = _tiny(kind)
    for variant in CACHE_DIT_VARIANTS:
        apply_cache_dit(model.transformer, variant, threshold=0.0, warmup_steps=0, num_inference_steps=STEPS)
        out = model(conditions, num_inference_steps=STEPS, seed=0)
        assert cache_dit_stats(model.transformer)
        assert all(not s["cached_steps"] for s in cache_dit_stats(model.transformer).values())
        torch.testing.assert_close(out, plain, rtol=0, atol=1e-6)
    remove_cache_dit(model.transformer)


def test_calibrators_forecast_differently_from_plain_reuse():
    # cache-dit's TaylorSeer has its first derivative after the 4th computed step and its second after the 5th
    model, conditions, _ = _tiny("flux")
    outputs = {}
    for variant in CACHE_DIT_VARIANTS:
        apply_cache_dit(model.transformer, variant, threshold=0.9, warmup_steps=5, num_inference_steps=8,
                        taylorseer_order=2)
        outputs[variant] = model(conditions, num_inference_steps=8, seed=0)
        assert cache_dit_stats(model.transformer)["transformer_blocks"]["cached_steps"] == [5, 6, 7]
    remove_cache_dit(model.transformer)
    assert not torch.equal(outputs["dbcache"], outputs["dbcache-taylorseer"])
    assert not torch.equal(outputs["dbcache"], outputs["dbcache-foca"])
    assert not torch.equal(outputs["dbcache-taylorseer"], outputs["dbcache-foca"])


def test_removing_every_diffusers_hook_takes_cache_dit_off():
    model, conditions, plain = _tiny("dit")
    apply_cache_dit(model.transformer, "dbcache", **CACHING)
    skip_hooks.remove_all_hooks(model.transformer)
    assert torch.equal(model(conditions, num_inference_steps=STEPS, seed=0), plain)
    with pytest.raises(ValueError, match="not applied"):
        cache_dit_stats(model.transformer)


def test_wan_without_uncond_pass_breaks_the_branch_order_and_says_so():
    model, conditions, _ = _tiny("wan", guidance=1.0)
    apply_cache_dit(model.transformer, "dbcache", **CACHING)
    try:
        with pytest.raises(RuntimeError, match="cond and uncond"):
            model(conditions, num_inference_steps=STEPS, seed=0)
    finally:
        remove_cache_dit(model.transformer)


@pytest.mark.parametrize("bad, field", [
    (dict(variant="fbcache"), "variant"),
    (dict(threshold=-0.1), "threshold"),
    (dict(threshold=float("nan")), "threshold"),
    (dict(warmup_steps=-1), "warmup_steps"),
    (dict(num_inference_steps=0), "num_inference_steps"),
    (dict(fn_compute_blocks=0), "fn_compute_blocks"),
    (dict(bn_compute_blocks=2.5), "bn_compute_blocks"),
    (dict(fn_compute_blocks=2, bn_compute_blocks=1), "fn_compute_blocks \\+ bn_compute_blocks"),
    (dict(taylorseer_order=0), "taylorseer_order"),
    (dict(max_continuous_cached_steps=-2), "max_continuous_cached_steps"),
    (dict(warmup_steps=True), "warmup_steps"),
])
def test_bad_arguments_name_the_argument(bad, field):
    model, _, _ = _tiny("dit")
    args = dict(variant="dbcache", **CACHING)
    args.update(bad)
    with pytest.raises(ValueError, match=field):
        apply_cache_dit(model.transformer, args.pop("variant"), **args)
    assert "cache_dit" not in getattr(model.transformer, "_diffusers_hook").hooks


def test_supported_names_the_reason_and_apply_refuses_other_hooks():
    from diffusers import FirstBlockCacheConfig, apply_first_block_cache

    assert all(supported(_tiny(kind)[0].transformer) == (True, "") for kind in KINDS)
    ok, reason = supported(torch.nn.Linear(2, 2))
    assert not ok and "Linear" in reason
    with pytest.raises(ValueError, match="Linear"):
        apply_cache_dit(torch.nn.Linear(2, 2), "dbcache", **CACHING)

    model, _, _ = _tiny("dit")
    apply_first_block_cache(model.transformer, FirstBlockCacheConfig(threshold=0.1))
    try:
        with pytest.raises(ValueError, match="other diffusers hooks"):
            apply_cache_dit(model.transformer, "dbcache", **CACHING)
    finally:
        skip_hooks.remove_all_hooks(model.transformer)
