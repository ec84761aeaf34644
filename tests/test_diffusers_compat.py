"""cgtaylor._diffusers, the one door to diffusers' private internals: each access works on the installed diffusers,
a missing internal fails with a message naming it and the tested version, and no other module goes around the door
(nor around cgtaylor._cache_dit, the door to cache-dit's; its accesses are tested in test_cache_dit_compat.py)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import diffusers
import pytest
import torch
from diffusers.hooks import FirstBlockCacheConfig, HookRegistry, ModelHook, apply_first_block_cache
from diffusers.hooks.hooks import BaseState, CacheContext, StateManager

from cgtaylor import _diffusers
from cgtaylor.blocks import find_blocks
from cgtaylor.zoo.families import ARCH, TINY_OVERRIDES, build_transformer

PACKAGE = Path(_diffusers.__file__).parent
COMPAT = Path(_diffusers.__file__)
CACHE_DIT_DOOR = PACKAGE / "_cache_dit.py"


def tiny(kind: str) -> torch.nn.Module:
    return build_transformer(kind, {**ARCH[kind], **TINY_OVERRIDES[kind]}, seed=0).eval()


def dit_inputs(batch: int = 2):
    generator = torch.Generator().manual_seed(0)
    return dict(hidden_states=torch.randn(batch, 1, 16, 16, generator=generator),
                timestep=torch.full((batch,), 500, dtype=torch.long), class_labels=torch.arange(batch))


class _Counter(BaseState):
    def __init__(self):
        self.calls = 0

    def reset(self, *args, **kwargs):
        self.calls = 0


class _StatefulProbe(_diffusers.StatefulModelHook):
    def __init__(self):
        super().__init__()
        self.state_manager = StateManager(_Counter)
        self.resets = 0

    def pre_forward(self, module, *args, **kwargs):
        self.state_manager.get_state().calls += 1
        return args, kwargs

    def reset_state(self, module):
        self.resets += 1
        return module


class _PlainProbe(ModelHook):
    def __init__(self):
        super().__init__()
        self.state_manager = StateManager(_Counter)


@pytest.fixture(autouse=True)
def fresh_lookups():
    """Each test looks every internal up again (a monkeypatched one must not stay cached, nor a real one hide it)."""
    caches = (_diffusers._internal, _diffusers._registry_attribute, _diffusers._fbc_head_hook_class)
    for cache in caches:
        cache.cache_clear()
    yield
    for cache in caches:
        cache.cache_clear()


# ----------------------------------------------------------------------------------------------------------------------
# One test per access, on the installed diffusers
# ----------------------------------------------------------------------------------------------------------------------
def test_hook_registry_is_the_one_diffusers_keeps_on_the_module():
    module = torch.nn.Linear(2, 2)
    assert _diffusers.hook_registry(module) is None and _diffusers.hook_names(module) == []
    registry = HookRegistry.check_if_exists_or_initialize(module)
    registry.register_hook(_PlainProbe(), "probe")
    assert _diffusers.hook_registry(module) is registry
    assert _diffusers.hook_names(module) == ["probe"]


def test_set_cache_context_reaches_stateful_hooks_only():
    module = torch.nn.Sequential(torch.nn.Linear(2, 2))
    stateful, plain = _StatefulProbe(), _PlainProbe()
    HookRegistry.check_if_exists_or_initialize(module[0]).register_hook(stateful, "stateful")
    HookRegistry.check_if_exists_or_initialize(module[0]).register_hook(plain, "plain")
    _diffusers.set_cache_context(module, CacheContext("uncond", step_index=3))
    assert _diffusers.current_context(stateful.state_manager) == CacheContext("uncond", step_index=3)
    assert _diffusers.current_context(plain.state_manager) is None  # a ModelHook without the stateful mark
    module(torch.ones(1, 2))
    _diffusers.set_cache_context(module, None)
    assert _diffusers.current_context(stateful.state_manager) is None
    HookRegistry.check_if_exists_or_initialize(module).reset_stateful_hooks()
    assert stateful.resets == 1


def test_context_states_holds_one_state_per_context():
    manager = StateManager(_Counter)
    assert _diffusers.context_states(manager) == [] and _diffusers.current_context(manager) is None
    for name in ("cond", "uncond", "cond"):
        manager.set_context(CacheContext(name))
        manager.get_state().calls += 1
    assert sorted(state.calls for state in _diffusers.context_states(manager)) == [1, 2]


def test_block_list_names_and_registered_block_classes_cover_dit_flux_wan():
    assert {"transformer_blocks", "single_transformer_blocks", "blocks"} <= _diffusers.transformer_block_list_names()
    names = {cls.__name__ for cls in _diffusers.registered_block_classes()}
    assert {"BasicTransformerBlock", "FluxTransformerBlock", "FluxSingleTransformerBlock",
            "WanTransformerBlock"} <= names


def test_block_argument_finds_positional_and_keyword_arguments():
    flux = tiny("flux")
    block = flux.transformer_blocks[0]
    metadata = _diffusers.block_metadata(type(block))
    assert (metadata.return_hidden_states_index, metadata.return_encoder_hidden_states_index) == (1, 0)
    hidden, encoder = torch.ones(1, 2), torch.zeros(1, 3)
    assert _diffusers.block_argument(metadata, "hidden_states", (hidden, encoder), {}) is hidden
    assert _diffusers.block_argument(metadata, "encoder_hidden_states", (hidden,), {"encoder_hidden_states": encoder}) \
        is encoder


def test_head_hook_names_of_first_block_cache_mag_cache_and_taylorseer():
    from diffusers.hooks import MagCacheConfig, TaylorSeerCacheConfig, apply_mag_cache, apply_taylorseer_cache

    for apply, config, name in [
        (apply_first_block_cache, FirstBlockCacheConfig(threshold=0.1), _diffusers.first_block_cache_head_hook_name()),
        (apply_mag_cache, MagCacheConfig(mag_ratios=[1.0] * 4, num_inference_steps=4),
         _diffusers.mag_cache_head_hook_name()),
    ]:
        model = tiny("dit")
        apply(model, config)
        assert name in _diffusers.hook_names(find_blocks(model).blocks[0])
    model = tiny("dit")
    apply_taylorseer_cache(model, TaylorSeerCacheConfig(cache_identifiers=[r"transformer_blocks\.\d+\.ff"]))
    hooked = [m for m in model.modules() if _diffusers.taylorseer_hook_name() in _diffusers.hook_names(m)]
    assert len(hooked) == len(find_blocks(model).blocks)


def _fbc_outputs(must_compute) -> list[torch.Tensor]:
    model = tiny("dit")
    apply_first_block_cache(model, FirstBlockCacheConfig(threshold=1e9))  # would skip every step it may
    if must_compute is not None:
        registry = HookRegistry.check_if_exists_or_initialize(find_blocks(model).blocks[0])
        name = _diffusers.first_block_cache_head_hook_name()
        hook = _diffusers.fbc_head_hook_with_override(registry.get_hook(name), must_compute)
        registry.remove_hook(name, recurse=False)
        registry.register_hook(hook, name)
    outputs = []
    with torch.no_grad():
        for step in range(3):
            _diffusers.set_cache_context(model, CacheContext("cond"))
            inputs = dit_inputs()
            inputs["hidden_states"] = inputs["hidden_states"] * (1 + step)
            outputs.append(model(**inputs, return_dict=False)[0])
            _diffusers.set_cache_context(model, None)
    return outputs


def test_fbc_head_hook_override_forces_computation():
    model = tiny("dit")
    with torch.no_grad():
        plain = [model(**{**dit_inputs(), "hidden_states": dit_inputs()["hidden_states"] * (1 + s)},
                       return_dict=False)[0] for s in range(3)]
    skipping = _fbc_outputs(None)
    forced = _fbc_outputs(lambda state: True)
    assert not torch.equal(skipping[2], plain[2])  # diffusers' decision skips at this threshold...
    assert all(torch.equal(a, b) for a, b in zip(forced, plain))  # ...the override computes every step
    deciding = _fbc_outputs(lambda state: False)  # never forcing leaves diffusers' decision alone
    assert all(torch.equal(a, b) for a, b in zip(deciding, skipping))


def test_enabled_cache_config_of_a_cache_mixin():
    flux = tiny("flux")
    assert _diffusers.enabled_cache_config(flux) is None
    config = FirstBlockCacheConfig(threshold=0.1)
    flux.enable_cache(config)
    assert _diffusers.enabled_cache_config(flux) is config


def test_repeated_block_classes():
    flux_blocks = {"FluxTransformerBlock", "FluxSingleTransformerBlock"}
    assert set(_diffusers.repeated_block_classes(tiny("flux"))) == flux_blocks
    assert _diffusers.repeated_block_classes(tiny("dit")) == []


def test_context_parallel_mesh_read_from_the_parallel_config():
    from diffusers import ContextParallelConfig, ParallelConfig

    wan = tiny("wan")
    assert _diffusers.context_parallel_mesh(wan) is None
    cp = ContextParallelConfig(ulysses_degree=2)
    wan._parallel_config = ParallelConfig(context_parallel_config=cp)
    assert _diffusers.context_parallel_mesh(wan) is None  # not set up on a mesh yet
    mesh = object()
    cp._flattened_mesh = mesh
    assert _diffusers.context_parallel_mesh(wan) is mesh


# ----------------------------------------------------------------------------------------------------------------------
# A missing internal
# ----------------------------------------------------------------------------------------------------------------------
def _assert_names(error: pytest.ExceptionInfo, internal: str) -> None:
    message = str(error.value)
    assert internal in message
    assert f"tested with diffusers {_diffusers.TESTED_DIFFUSERS_VERSION}" in message
    assert f"installed diffusers {diffusers.__version__}" in message


def test_missing_private_function_is_named_with_versions(monkeypatch):
    import diffusers.hooks.hooks as hooks_module

    monkeypatch.delattr(hooks_module, "_set_cache_context")
    with pytest.raises(_diffusers.DiffusersInternalsError) as error:
        _diffusers.set_cache_context(torch.nn.Linear(1, 1), None)
    _assert_names(error, "diffusers.hooks.hooks:_set_cache_context")


def test_missing_private_attribute_is_named_with_versions(monkeypatch):
    from diffusers.hooks._helpers import TransformerBlockRegistry

    monkeypatch.delattr(TransformerBlockRegistry, "_registry")
    with pytest.raises(_diffusers.DiffusersInternalsError) as error:
        _diffusers.registered_block_classes()
    _assert_names(error, "TransformerBlockRegistry._registry")


def test_renamed_registry_attribute_is_caught(monkeypatch):
    monkeypatch.setattr(_diffusers, "_REGISTRY_ATTRIBUTE", "_renamed_by_a_release")
    with pytest.raises(_diffusers.DiffusersInternalsError) as error:
        _diffusers.hook_registry(torch.nn.Linear(1, 1))
    _assert_names(error, "module._renamed_by_a_release")


def test_the_tested_version_is_a_stated_constant():
    assert re.fullmatch(r"\d+\.\d+\.\d+", _diffusers.TESTED_DIFFUSERS_VERSION)
    assert "__version__" not in ast.unparse(next(
        node for node in ast.parse(COMPAT.read_text()).body
        if isinstance(node, ast.Assign) and node.targets[0].id == "TESTED_DIFFUSERS_VERSION"))


# ----------------------------------------------------------------------------------------------------------------------
# Nobody else touches diffusers' private names
# ----------------------------------------------------------------------------------------------------------------------
def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def compat_private_names(door: Path = COMPAT) -> set[str]:
    """The library-private names a door module (default: the diffusers compat module) uses: ``_`` identifiers it reads as attributes, strings that are an
    identifier (``"_context"``) or a lookup path (``"diffusers.hooks._common:_ALL_TRANSFORMER_BLOCK_IDENTIFIERS"``),
    and names it sets or overrides in class bodies, less the module's own top-level helpers."""
    tree = ast.parse(door.read_text())
    assigned = [t for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target])]
    own = {target.id for target in assigned if isinstance(target, ast.Name)}
    own |= {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r"[\w.]+(:[\w.]+)?",
                                                                                              node.value):
            names.update(re.split(r"[.:]", node.value))
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    names.add(item.name)
                for target in getattr(item, "targets", []):
                    names.update({target.id} if isinstance(target, ast.Name) else set())
    return {name for name in names if _private(name)} - own


def _bound_names(tree: ast.Module, library: str) -> set[str]:
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.split(".")[0] == library}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == library:
            bound |= {a.asname or a.name for a in node.names}
    return bound


def _attribute_root(node: ast.Attribute) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def private_diffusers_uses(source: str, private_names: set[str], library: str = "diffusers") -> list[str]:
    """Where ``source`` reaches past the public names of ``library`` (default diffusers): an import of a ``_`` name or
    from a ``_`` module of it; a ``_`` attribute of a name imported from it; a library-private name of
    ``private_names`` used as an attribute, a string (``getattr(m, "_diffusers_hook")``) or a class-body name
    (``_is_stateful``)."""
    tree = ast.parse(source)
    bound = _bound_names(tree, library)
    found = []
    for node in ast.walk(tree):
        where = f"line {getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == library:
            found += [f"{where}: from {node.module} import {a.name}" for a in node.names
                      if any(map(_private, node.module.split(".") + [a.name]))]
        elif isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] == library and any(map(_private, a.name.split(".")))]
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            if node.attr in private_names or _attribute_root(node) in bound:
                found.append(f"{where}: .{node.attr}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in private_names:
            found.append(f"{where}: {node.value!r}")
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                names = [item.name] if isinstance(item, ast.FunctionDef) else [
                    t.id for t in getattr(item, "targets", []) if isinstance(t, ast.Name)]
                found += [f"line {item.lineno}: class {node.name}: {name}" for name in names if name in private_names]
    return found


def test_compat_private_names_are_gathered():
    names = compat_private_names()
    assert {"_diffusers_hook", "_set_cache_context", "_context", "_state_cache", "_is_stateful", "_registry",
            "_get_parameter_from_args_kwargs", "_should_compute_remaining_blocks", "_flattened_mesh"} <= names
    assert not names & {"_internal", "_attribute", "_MISSING", "_REGISTRY_ATTRIBUTE", "_diffusers"}  # its own


def test_the_scan_flags_each_kind_of_private_use_and_spares_the_project_own():
    names = compat_private_names()
    flagged = [
        "from diffusers.hooks.hooks import _set_cache_context",
        "from diffusers.hooks._helpers import TransformerBlockRegistry",
        "import diffusers.hooks._common",
        "from diffusers.hooks._helpers import TransformerBlockRegistry as R\nR._anything_private",
        "import diffusers\ndiffusers.hooks.hooks._set_cache_context",
        "registry = getattr(module, '_diffusers_hook', None)",
        "context = self.state_manager._context",
        "class Hook(ModelHook):\n    _is_stateful = True",
        "class Hook(Base):\n    def _should_compute_remaining_blocks(self, r):\n        return True",
    ]
    for source in flagged:
        assert private_diffusers_uses(source, names), source
    spared = ["self._handles = []", "def _register(spec):\n    pass\n_register(1)", "from diffusers import ModelMixin",
              "from diffusers.hooks.hooks import CacheContext",
              "class Mine:\n    _cache = None\n    def _state(self):\n        return self._metadata"]
    for source in spared:
        assert not private_diffusers_uses(source, names), source


def test_no_module_but_the_compat_module_touches_diffusers_private_names():
    """The rule: outside ``cgtaylor/_diffusers.py`` no module of the package may (1) import a ``_``-prefixed name from
    a diffusers module, or anything from a ``_``-prefixed diffusers module (``diffusers.hooks._helpers``); (2) read a
    ``_``-prefixed attribute through a name it imported from diffusers (``TransformerBlockRegistry._registry``); (3) use
    any of the diffusers-private names the compat module itself uses (gathered from its source), as an attribute
    (``state_manager._context``), as a string (``getattr(module, "_diffusers_hook")``) or as a name set or overridden
    in a class body (``_is_stateful = True``). The package's own private names (``self._handles``, a module-level
    ``_register``) do not match any of these and are left alone."""
    names = compat_private_names()
    offences = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == COMPAT:
            continue
        uses = private_diffusers_uses(path.read_text(), names)
        if uses:
            offences[str(path.relative_to(PACKAGE))] = uses
    assert not offences, f"diffusers internals used outside cgtaylor/_diffusers.py: {offences}"


def test_the_cache_dit_door_private_names_are_gathered():
    names = compat_private_names(CACHE_DIT_DOOR)
    assert {"_context_manager", "_context_names"} <= names
    assert not names & {"_MISSING", "_transformer_attribute"}  # its own


def test_the_scan_flags_private_cache_dit_uses():
    names = compat_private_names(CACHE_DIT_DOOR)
    flagged = ["manager = transformer._context_manager", "names = getattr(module, '_context_names')",
               "import cache_dit\ncache_dit.caching._anything_private",
               "from cache_dit.caching.cache_blocks import _private_helper", "import cache_dit._utils"]
    for source in flagged:
        assert private_diffusers_uses(source, names, "cache_dit"), source
    spared = ["import cache_dit\ncache_dit.enable_cache(adapter)", "self._attrs = {}", "set(m._modules)",
              "from cache_dit import DBCacheConfig"]
    for source in spared:
        assert not private_diffusers_uses(source, names, "cache_dit"), source


def test_no_module_but_the_cache_dit_door_touches_cache_dit_private_names():
    """The rule of the diffusers door, for cache-dit: outside ``cgtaylor/_cache_dit.py`` no module imports a ``_`` name
    or module of cache_dit, reads a ``_`` attribute through a name imported from cache_dit, or uses a cache-dit-private
    name the door uses (``transformer._context_manager``)."""
    names = compat_private_names(CACHE_DIT_DOOR)
    offences = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == CACHE_DIT_DOOR:
            continue
        uses = private_diffusers_uses(path.read_text(), names, "cache_dit")
        if uses:
            offences[str(path.relative_to(PACKAGE))] = uses
    assert not offences, f"cache-dit internals used outside cgtaylor/_cache_dit.py: {offences}"
