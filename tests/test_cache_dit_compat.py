"""cgtaylor._cache_dit, the one door to cache-dit's internals: each access works on the installed cache-dit (1.5.3),
and a missing internal fails with a message naming it, the installed cache-dit and the tested version. (That no other
module goes around the door is checked in test_diffusers_compat.py.)"""

import re

import pytest
import torch

cache_dit = pytest.importorskip("cache_dit")

from cgtaylor import _cache_dit  # noqa: E402
from cgtaylor.experiments.cache_dit_peer import apply_cache_dit, remove_cache_dit  # noqa: E402
from cgtaylor import zoo  # noqa: E402

STEPS = 3


@pytest.fixture(scope="module")
def wan():
    """A tiny Wan model with cache-dit's DBCache on."""
    model = zoo.tiny("wan-digits")
    apply_cache_dit(model.transformer, "dbcache", threshold=0.9, warmup_steps=1, num_inference_steps=STEPS)
    yield model
    remove_cache_dit(model.transformer)


def test_context_names_are_one_per_block_list(wan):
    names = _cache_dit.context_names(wan.transformer)
    assert [name.rsplit("_", 1)[0] for name in names] == ["blocks"]


def test_context_manager_holds_the_contexts_that_count_the_steps(wan):
    from cgtaylor.zoo.sampling import reset_hooks

    manager = _cache_dit.context_manager(wan.transformer)
    (name,) = _cache_dit.context_names(wan.transformer)
    try:
        with torch.no_grad(), wan.transformer.cache_context("cond", step_index=0, num_inference_steps=STEPS):
            wan.transformer(hidden_states=torch.zeros(1, 1, 8, 32, 32), timestep=torch.tensor([500.0]),
                            encoder_hidden_states=wan.encode(wan.default_conditions(1)), return_dict=False)
        context = manager.get_context(name)
        assert context.executed_steps == 1 and context.get_cached_steps() == []
    finally:
        reset_hooks(wan.transformer)


@pytest.mark.parametrize("access, internal", [
    (_cache_dit.context_manager, "transformer._context_manager"),
    (_cache_dit.context_names, "transformer._context_names"),
])
def test_missing_internal_is_named_with_versions(access, internal):
    with pytest.raises(_cache_dit.CacheDitInternalsError) as error:
        access(torch.nn.Linear(1, 1))  # cache-dit never enabled: its attributes are absent
    message = str(error.value)
    assert f"`{internal}`" in message
    assert f"installed cache-dit {cache_dit.__version__}" in message
    assert f"tested with cache-dit {_cache_dit.TESTED_CACHE_DIT_VERSION}" in message


def test_the_tested_version_is_a_stated_constant():
    assert re.fullmatch(r"\d+\.\d+\.\d+", _cache_dit.TESTED_CACHE_DIT_VERSION)
