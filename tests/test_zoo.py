"""Tests of the demo model zoo: shipped weights, samplers, caption grammar, evaluator, training."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cgtaylor import zoo
from cgtaylor.zoo import data, evaluator, families, recipes, train


# ----------------------------------------------------------------------------------------------------
# Shipped weights
# ----------------------------------------------------------------------------------------------------
EXPECTED = {  # name -> (class, number of blocks, output shape for 2 conditions)
    "dit-digits": ("DiTTransformer2DModel", 28, (2, 1, 16, 16)),
    "flux-digits": ("FluxTransformer2DModel", 57, (2, 3, 32, 32)),
    "wan-digits": ("WanTransformer3DModel", 30, (2, 1, 8, 32, 32)),
}


@pytest.mark.parametrize("name", zoo.MODEL_NAMES)
def test_shipped_weights_load_and_sample(name):
    cls, blocks, shape = EXPECTED[name]
    m = zoo.load(name)
    assert type(m.transformer).__name__ == cls
    assert m.name == name and m.num_blocks == blocks
    assert m.meta["training"]["steps"] > 0
    out = m(m.default_conditions(2, seed=0), num_inference_steps=2, seed=0)
    assert out.shape == shape and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.isnan(out).any()


def test_shipped_evaluator_reads_real_test_digits():
    x, y = data.digits16("test")
    acc = float((evaluator.classify(x) == y).float().mean())
    assert acc >= 0.9


def test_unknown_name_lists_models():
    with pytest.raises(ValueError) as e:
        zoo.load("sdxl-digits")
    for n in zoo.MODEL_NAMES:
        assert n in str(e.value)
    with pytest.raises(ValueError):
        zoo.tiny("nope")


# ----------------------------------------------------------------------------------------------------
# Samplers on tiny random-weight models
# ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_models():
    return {n: zoo.tiny(n) for n in zoo.MODEL_NAMES}


@pytest.mark.parametrize("name", zoo.MODEL_NAMES)
def test_deterministic_with_seed(tiny_models, name):
    m = tiny_models[name]
    c = m.default_conditions(2, seed=1)
    a = m(c, num_inference_steps=3, seed=7)
    b = m(c, num_inference_steps=3, seed=7)
    d = m(c, num_inference_steps=3, seed=8)
    assert torch.equal(a, b)
    assert not torch.allclose(a, d)


@pytest.mark.parametrize("name,steps,calls", [("dit-digits", 4, 4), ("flux-digits", 4, 4), ("wan-digits", 4, 8)])
def test_one_transformer_call_per_step_and_branch(tiny_models, name, steps, calls):
    m = tiny_models[name]
    seen = []
    h = m.transformer.register_forward_hook(lambda mod, args, out: seen.append(1))
    try:
        m(m.default_conditions(2), num_inference_steps=steps, seed=0)
    finally:
        h.remove()
    assert len(seen) == calls


def test_wan_cfg_passes_run_in_named_cache_contexts(tiny_models):
    from diffusers.hooks.hooks import ModelHook, HookRegistry, StateManager

    class _State:
        def __init__(self):
            self.calls = 0

        def reset(self):
            self.calls = 0

    class Recorder(ModelHook):
        _is_stateful = True

        def __init__(self):
            super().__init__()
            self.state_manager = StateManager(_State)
            self.contexts = []

        def pre_forward(self, module, *args, **kwargs):
            ctx = self.state_manager._context
            self.contexts.append((getattr(ctx, "name", ctx), getattr(ctx, "step_index", None)))
            self.state_manager.get_state().calls += 1
            return args, kwargs

        def reset_state(self, module):
            self.state_manager.reset()
            return module

    m = zoo.tiny("wan-digits")
    rec = Recorder()
    HookRegistry.check_if_exists_or_initialize(m.transformer.blocks[0]).register_hook(rec, "recorder")
    HookRegistry.check_if_exists_or_initialize(m.transformer).invalidate_child_registries_cache()
    m(m.default_conditions(1), num_inference_steps=3, seed=0)
    assert rec.contexts == [("cond", 0), ("uncond", 0), ("cond", 1), ("uncond", 1), ("cond", 2), ("uncond", 2)]
    assert rec.state_manager._state_cache == {} or all(s.calls == 0 for s in rec.state_manager._state_cache.values())


@pytest.mark.parametrize("name", ["flux-digits", "wan-digits"])
def test_flow_samplers_tell_the_step_so_cg_taylor_computes_the_last_one(name):
    from cgtaylor import CGTaylorConfig, apply_cg_taylor, cg_taylor_stats, remove_cg_taylor

    m = zoo.tiny(name)
    apply_cg_taylor(m.transformer, CGTaylorConfig(threshold=1e9, warmup_steps=1))  # no step count in the config
    try:
        m(m.default_conditions(1), num_inference_steps=6, seed=0)
        records = cg_taylor_stats(m.transformer).for_context("cond")
    finally:
        remove_cg_taylor(m.transformer)
    assert [r.step for r in records if r.computed] == [0, 5]


def test_bad_conditions_raise(tiny_models):
    with pytest.raises(ValueError, match="colour"):
        tiny_models["flux-digits"](["a purple 3 in the top left"], num_inference_steps=1)
    with pytest.raises(ValueError, match="position"):
        tiny_models["flux-digits"](["a red 3 in the middle"], num_inference_steps=1)
    with pytest.raises(ValueError, match="digit"):
        tiny_models["flux-digits"](["a red x in the center"], num_inference_steps=1)
    with pytest.raises(ValueError, match="grammar"):
        tiny_models["flux-digits"](["red three, centre"], num_inference_steps=1)
    with pytest.raises(ValueError, match="direction"):
        tiny_models["wan-digits"](["a 3 moving sideways"], num_inference_steps=1)
    with pytest.raises(ValueError, match="0-9"):
        tiny_models["dit-digits"]([12], num_inference_steps=1)
    with pytest.raises(TypeError):
        tiny_models["dit-digits"]([1], num_inference_steps=1, guidance=3.0)


def test_sampling_in_batches_seeds_each_batch_by_its_offset(tiny_models):
    m = tiny_models["flux-digits"]
    conds = m.default_conditions(3)
    got = m.sample_in_batches(conds, 2, seed=40, num_inference_steps=2, guidance=2.0)
    want = torch.cat([m(conds[:2], 2, seed=40, guidance=2.0), m(conds[2:], 2, seed=42, guidance=2.0)])
    torch.testing.assert_close(got, want)


def test_caption_grammar_round_trip():
    for d in range(10):
        for c in data.COLOURS:
            for p in data.POSITIONS:
                assert zoo.parse_flux_caption(zoo.flux_caption(d, c, p)) == (d, c, p)
        for r in data.DIRECTIONS:
            assert zoo.parse_wan_caption(zoo.wan_caption(d, r)) == (d, r)
    assert zoo.parse_wan_caption("") is None
    assert zoo.parse_flux_caption("a red 3 in the top left") == (3, "red", "top left")
    from cgtaylor.zoo import captions

    tok = captions.tokenize(["a red 3 in the top left", ""])
    assert tok.shape == (2, captions.MAX_TOKENS) and tok[1, 0] == captions.TOKEN_ID[captions.NULL]


@pytest.mark.parametrize("name", zoo.MODEL_NAMES)
def test_default_conditions_valid_diverse_deterministic(tiny_models, name):
    m = tiny_models[name]
    c = m.default_conditions(20, seed=3)
    assert c == m.default_conditions(20, seed=3)
    attrs = m.condition_attributes(c)
    assert len({a["digit"] for a in attrs}) == 10
    if name == "flux-digits":
        assert len({a["colour"] for a in attrs}) == 7 and len({a["position"] for a in attrs}) == 5
    if name == "wan-digits":
        assert len({a["direction"] for a in attrs}) == 4


def test_save_and_load_from_directory(tmp_path, tiny_models):
    m = tiny_models["flux-digits"]
    zoo.save(m, tmp_path, extra={"training": {"steps": 0}})
    assert not list(tmp_path.glob("*.tmp"))
    m2 = zoo.load(tmp_path)
    assert m2.num_blocks == m.num_blocks
    c = m.default_conditions(1)
    assert torch.equal(m(c, num_inference_steps=2), m2(c, num_inference_steps=2))
    assert json.loads((tmp_path / "flux-digits.json").read_text())["kind"] == "flux"
    assert m.weights_id is None and m2.weights_id == zoo.weights_id(tmp_path / "flux-digits.json")


def test_weights_id_follows_the_weights_and_keys_the_correlation_cache(tmp_path):
    from cgtaylor import CGTaylorConfig
    from cgtaylor.analysis import collect_error_records

    first, second = tmp_path / "first", tmp_path / "second"
    zoo.save(zoo.tiny("dit-digits", seed=0), first)
    zoo.save(zoo.tiny("dit-digits", seed=1), second)
    a, b = zoo.load(first), zoo.load(second)
    assert a.weights_id != b.weights_id and a.weights_id == zoo.load(first).weights_id
    id_before = a.weights_id
    zoo.save(zoo.tiny("dit-digits", seed=2), first)  # retrained in place: the id must follow the new bytes
    assert zoo.weights_id(first) not in (id_before, b.weights_id)
    zoo.save(zoo.tiny("dit-digits", seed=0), first)
    assert zoo.weights_id(first) == id_before
    cache = tmp_path / "cache"
    config = CGTaylorConfig(threshold=0.1, warmup_steps=2)
    records_a = collect_error_records(a, [3], [0], config, num_inference_steps=4, cache_dir=cache)
    records_b = collect_error_records(b, [3], [0], config, num_inference_steps=4, cache_dir=cache)
    assert len(list(cache.glob("*.csv"))) == 2 and all(a.weights_id in p.name or b.weights_id in p.name
                                                       for p in cache.glob("*.csv"))
    assert not np.allclose(records_a["first_block_error"].dropna(), records_b["first_block_error"].dropna())


# ----------------------------------------------------------------------------------------------------
# Data and evaluator helpers on synthetic inputs
# ----------------------------------------------------------------------------------------------------
def test_test_split_is_held_out_and_fixed():
    xtr, ytr = data.digits16("train")
    xte, yte = data.digits16("test")
    assert len(xtr) + len(xte) == 1797 and abs(len(xte) - 360) <= 1
    assert xtr.shape[1:] == (1, 16, 16) and 0 <= float(xtr.min()) and float(xtr.max()) <= 1
    # no test image appears in the training split (load_digits has no exact duplicates across the split)
    train_set = {r.numpy().tobytes() for r in xtr.flatten(1)}
    assert not any(r.numpy().tobytes() in train_set for r in xte.flatten(1))
    assert torch.equal(data.digits16("test")[1], yte)


def test_attribute_checks_on_synthetic_scenes():
    x, y = data.digits16("test")
    d = x[0]
    for colour in data.COLOURS:
        for pos in data.POSITIONS:
            img = data.colour_scene(d, colour, pos)[None]
            assert evaluator.dominant_colour(img) == [colour]
            assert evaluator.position_of(img) == [pos]
    for direction in data.DIRECTIONS:
        v = data.motion_video(d, direction, offset=8)[None]
        assert evaluator.direction_of(v) == [direction]
    # a wrong answer is possible: a red blob is not "blue" and a top-left blob is not "center"
    blob = torch.zeros(1, 3, 32, 32)
    blob[:, 0, 2:8, 2:8] = 1
    assert evaluator.dominant_colour(blob) == ["red"] and evaluator.position_of(blob) == ["top left"]


def test_crop_digit_finds_placed_digit():
    x, _ = data.digits16("test")
    canvas = data.place(x[5], 10, 3)[None]
    crop = evaluator.crop_digit(canvas)
    assert crop.shape == (1, 1, 16, 16)
    assert float(crop.sum()) == pytest.approx(float(x[5].sum()), rel=0.05)


def test_frechet_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 4))
    assert evaluator.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert evaluator.frechet_distance(a, a + 3.0) == pytest.approx(36.0, rel=1e-3)


def test_evaluate_scores_real_scenes_high_and_wrong_conditions_low():
    x, y = data.digits16("test")
    caps, imgs = [], []
    for k in range(20):
        c, p = list(data.COLOURS)[k % 7], data.POSITIONS[k % 5]
        imgs.append(data.colour_scene(x[k], c, p))
        caps.append(zoo.flux_caption(int(y[k]), c, p))
    imgs = torch.stack(imgs)
    good = evaluator.evaluate("flux-digits", imgs, caps)
    assert good["digit_accuracy"] >= 0.85 and good["colour_accuracy"] == 1 and good["position_accuracy"] == 1
    wrong = [zoo.flux_caption((int(y[k]) + 1) % 10, "white" if k % 7 != 6 else "red", "center" if k % 5 != 4 else "top left")
             for k in range(20)]
    bad = evaluator.evaluate("flux-digits", imgs, wrong)
    assert bad["digit_accuracy"] <= 0.2 and bad["colour_accuracy"] == 0 and bad["position_accuracy"] == 0
    vids = torch.stack([data.motion_video(x[k], data.DIRECTIONS[k % 4]) for k in range(8)])
    r = evaluator.evaluate("wan-digits", vids, [zoo.wan_caption(int(y[k]), data.DIRECTIONS[k % 4]) for k in range(8)])
    assert r["direction_accuracy"] == 1 and r["digit_accuracy"] >= 0.8 and "classifier_frechet_distance" in r


# ----------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", zoo.MODEL_NAMES)
def test_tiny_training_step_runs_and_changes_weights(name):
    m = zoo.tiny(name)
    before = [p.detach().clone() for p in train.parameters(m)]
    info = train.train(m, max_steps=2, batch_size=4, warmup=1, progress=False)
    assert info["steps"] == 2 and np.isfinite(info["final_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, train.parameters(m)))


def test_training_with_one_seed_gives_bit_identical_weights():
    def trained(seed: int) -> dict[str, torch.Tensor]:
        m = zoo.tiny("flux-digits")
        train.train(m, max_steps=3, batch_size=2, warmup=1, progress=False, seed=seed,
                    guidance_distillation_from_step=2)
        return {f"{prefix}.{k}": v for prefix, mod in m.modules().items() for k, v in mod.state_dict().items()}

    first, again, other = trained(1), trained(1), trained(2)
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_training_resumes_to_the_same_weights(tmp_path):
    torch.manual_seed(0)
    a = zoo.tiny("dit-digits")
    b = zoo.tiny("dit-digits")
    train.train(a, max_steps=4, batch_size=4, warmup=2, progress=False)
    train.train(b, max_steps=2, batch_size=4, warmup=2, progress=False, checkpoint_dir=tmp_path, checkpoint_every=1)
    c = zoo.tiny("dit-digits", seed=123)  # different init: everything must come from the checkpoint
    info = train.train(c, max_steps=4, batch_size=4, warmup=2, progress=False, checkpoint_dir=tmp_path)
    assert info["steps"] == 4
    for p, q in zip(train.parameters(a), train.parameters(c)):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_flow_sigmas_shift_moves_training_towards_noise():
    plain = train.flow_sigmas(20000, torch.Generator().manual_seed(0))
    shifted = train.flow_sigmas(20000, torch.Generator().manual_seed(0), shift=3.0)
    assert float(plain.min()) > 0 and float(shifted.max()) < 1
    assert float((plain > 0.9).float().mean()) < 0.03 and float((shifted > 0.9).float().mean()) > 0.1
    assert torch.all(shifted >= plain)


@pytest.mark.parametrize("name, field, value, off", [("wan-digits", "sigma_shift", 3.0, 1.0),
                                                     ("flux-digits", "label_dropout", 0.5, 0.0)])
def test_step_dependent_fields_apply_from_their_step_on(monkeypatch, name, field, value, off):
    seen = []
    real = train.training_loss

    def spy(*args, **kwargs):
        seen.append(kwargs[field])
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "training_loss", spy)
    train.train(zoo.tiny(name), max_steps=4, batch_size=2, warmup=1, progress=False,
                **{field: value, f"{field}_from_step": 2})
    assert seen == [off, off, value, value]


def test_guidance_distillation_target_is_the_teachers_guided_velocity():
    model = zoo.tiny("flux-digits")
    teacher = train.frozen_copy(model, [p.detach() for p in train.parameters(model)])
    x, conds = data.sample_batch("flux", 3, torch.Generator().manual_seed(0))

    def loss(lo, hi, teacher_guidance):
        with torch.no_grad():
            return float(train.guidance_distillation_loss(model, teacher, x, conds, torch.Generator().manual_seed(1),
                                                          (lo, hi), teacher_guidance=teacher_guidance))

    # at strength 1 the guided velocity is the conditional one: a student equal to its teacher matches it exactly
    assert loss(1.0, 1.0, 1.0) < 1e-10
    assert loss(3.0, 3.0, 3.0) > 1e-6 and loss(0.0, 0.0, 0.0) > 1e-6
    assert all(not p.requires_grad for p in train.parameters(teacher))
    with pytest.raises(ValueError, match="guidance-embedded"):
        dit = zoo.tiny("dit-digits")
        train.guidance_distillation_loss(dit, dit, *data.sample_batch("dit", 2, torch.Generator()), torch.Generator())


def test_guidance_distillation_resumes_with_its_frozen_teacher(tmp_path):
    recipe = dict(batch_size=2, warmup=1, label_dropout=0.5, guidance_distillation_from_step=2,
                  guidance_range=[1.0, 4.0])
    a = zoo.tiny("flux-digits")
    info = train.train(a, max_steps=4, progress=False, **recipe)
    assert info["guidance_distillation_from_step"] == 2
    b = zoo.tiny("flux-digits")
    train.train(b, max_steps=3, progress=False, checkpoint_dir=tmp_path, checkpoint_every=1, **recipe)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["teacher"] is not None
    c = zoo.tiny("flux-digits", seed=5)
    train.train(c, max_steps=4, progress=False, checkpoint_dir=tmp_path, **recipe)
    for p, q in zip(train.parameters(a), train.parameters(c)):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    st = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    st["teacher"] = None
    torch.save(st, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="without its teacher"):
        train.train(zoo.tiny("flux-digits"), max_steps=5, progress=False, checkpoint_dir=tmp_path, **recipe)


def test_guidance_distillation_fields_are_checked_by_name():
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="guidance_distillation_from_step must be null or a step"):
            recipes.recipe_from({"guidance_distillation_from_step": bad})
    for bad in ([3.0, 1.0], [-1.0, 2.0], [1.0], "wide"):
        with pytest.raises(ValueError, match=r"guidance_range must be a \[low, high\] pair"):
            recipes.recipe_from({"guidance_range": bad})
    assert recipes.recipe_from({"guidance_range": [1, 4]})["guidance_range"] == [1, 4]


def test_learning_rate_warms_up_then_follows_the_schedule_knots():
    r = recipes.recipe_from(dict(lr=1e-3, warmup=10, lr_schedule=[[100, 1.0], [150, 0.2], [170, 0.2], [190, 0.02]]))
    lr = [recipes.learning_rate(k, r) for k in range(250)]
    assert lr[0] == pytest.approx(1e-4) and lr[9] == pytest.approx(1e-3) and lr[99] == pytest.approx(1e-3)
    assert lr[125] == pytest.approx(1e-3 * 0.6) and lr[150] == pytest.approx(2e-4) and lr[169] == pytest.approx(2e-4)
    assert lr[180] == pytest.approx(1.1e-4) and lr[190] == pytest.approx(2e-5) and lr[249] == pytest.approx(2e-5)
    assert all(a >= b for a, b in zip(lr[100:], lr[101:]))
    plain = recipes.recipe_from(dict(lr=1e-3, warmup=10))
    assert recipes.learning_rate(10**6, plain) == pytest.approx(1e-3)


def test_lr_schedule_is_checked_and_old_cool_down_records_still_read():
    for bad in ([[100, 1.0], [100, 0.5]], [[100, -0.1]], [100, 0.5], "soon"):
        with pytest.raises(ValueError, match=r"lr_schedule must be a list of \[step, fraction\] pairs"):
            recipes.recipe_from({"lr_schedule": bad})
    with pytest.raises(ValueError, match="flux.yaml: lr_schedule"):
        recipes.split_model_config({"lr_schedule": [[5, 1.0], [3, 0.1]]}, "flux.yaml")
    legacy = dict(lr_decay_from_step=14192, lr_decay_steps=7000, lr_final_fraction=0.1)
    assert recipes.lr_knots(legacy) == [[14192, 1.0], [21192, 0.1]]
    assert recipes.lr_knots(dict(lr_schedule=((1, 1.0), (2, 0.5)))) == [[1, 1.0], [2, 0.5]]
    assert recipes.lr_knots(recipes.recipe_from({})) == []


def test_recipe_fields_are_checked_by_name():
    with pytest.raises(ValueError, match="lr_schedules.*accepted:.*lr_schedule"):
        recipes.recipe_from({"lr_schedules": [[5, 0.1]]})
    with pytest.raises(TypeError):
        train.train(zoo.tiny("dit-digits"), 2, progress=False)  # recipe fields are keyword-only
    with pytest.raises(ValueError, match="train\\(\\): unknown field\\(s\\) batchsize"):
        train.train(zoo.tiny("dit-digits"), max_steps=1, batchsize=4, progress=False)


def test_shipped_training_configs_split_into_recipe_and_run_options():
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[1] / "conf" / "zoo"
    for name in zoo.MODEL_NAMES:
        recipe, run = recipes.split_model_config(OmegaConf.to_container(OmegaConf.load(conf / f"{name}.yaml")), name)
        assert set(recipe) == set(recipes.RECIPE_DEFAULTS) and set(run) == set(recipes.RUN_FIELDS)
    with pytest.raises(ValueError, match="conf/zoo/x.yaml: unknown field\\(s\\) max_step;"):
        recipes.split_model_config({"max_step": 3}, "conf/zoo/x.yaml")


def test_build_transformer_by_name_and_kind():
    t = zoo.build_transformer("dit-digits", dict(families.ARCH["dit"], num_layers=1))
    assert type(t).__name__ == "DiTTransformer2DModel" and len(t.transformer_blocks) == 1
    assert type(zoo.build_transformer("flux", dict(families.ARCH["flux"], num_layers=1, num_single_layers=1))).__name__ == "FluxTransformer2DModel"
    with pytest.raises(ValueError):
        zoo.build_transformer("sd3")


def test_wilson_interval_of_an_accuracy():
    low, high = evaluator.wilson_interval(0.5, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)
    low, high = evaluator.wilson_interval(1.0, 8)
    assert low == pytest.approx(0.6756, abs=1e-3) and high == 1.0
    with pytest.raises(ValueError, match="n must be a positive sample count"):
        evaluator.wilson_interval(0.5, 0)
