"""Training loops for the zoo (used by ``scripts/train_zoo.py`` and the tests).

Deterministic given the seed and the step count: the batch, noise and label dropout of step ``k`` are
drawn from generators seeded with ``(seed, k)``, so a run that resumes from a checkpoint takes the
same steps as one that never stopped. Training stops at ``max_steps`` or after ``max_minutes`` of
training time, whichever comes first; the number of steps reached is recorded with the weights.
"""
from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..io import atomic_torch_save
from . import data
from .models import (NULL_LABEL, ZooModel, flux_caption, flux_ids, pack, wan_caption)


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))


def flow_sigmas(batch: int, gen: torch.Generator, shift: float = 1.0) -> torch.Tensor:
    """Training noise levels of the flow-matching models: logit-normal, then shifted towards noise by
    ``shift`` as SD3 and FLUX do (sigma -> shift * sigma / (1 + (shift - 1) * sigma)).

    Unshifted, about 1% of the samples land above sigma 0.9, while a 50-step sampler spends its first
    five steps there, where the caption alone decides which digit is drawn."""
    sigma = torch.sigmoid(torch.randn(batch, generator=gen))
    return shift * sigma / (1 + (shift - 1) * sigma)


def training_loss(model: ZooModel, x01: torch.Tensor, conds: list, gen: torch.Generator,
                  label_dropout: float = 0.1, guidance: float = 3.5, sigma_shift: float = 1.0) -> torch.Tensor:
    """One diffusion training loss on a batch ``x01`` in [0, 1] with the conditions of ``data.sample_batch``."""
    x0 = x01 * 2 - 1
    b = x0.shape[0]
    t = model.transformer
    noise = torch.randn(x0.shape, generator=gen)
    drop = torch.rand(b, generator=gen) < label_dropout
    if model.kind == "dit":
        from diffusers import DDPMScheduler

        sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
        ts = torch.randint(0, 1000, (b,), generator=gen)
        xt = sched.add_noise(x0, noise, ts)
        labels = torch.tensor(conds)
        labels = torch.where(drop, torch.full_like(labels, NULL_LABEL), labels)
        # our own dropout (seeded) replaces the model's internal one, which would use the global RNG
        pred = t(xt, timestep=ts, class_labels=labels, return_dict=False)[0]
        return F.mse_loss(pred, noise)
    sigma = flow_sigmas(b, gen, sigma_shift)
    s = sigma.view(b, *([1] * (x0.dim() - 1)))
    xt = (1 - s) * x0 + s * noise
    target = noise - x0
    if model.kind == "flux":
        caps = ["" if d else flux_caption(*c) for c, d in zip(conds, drop.tolist())]
        pred = flux_velocity(model, pack(xt), sigma, caps, torch.full((b,), guidance))
        return F.mse_loss(pred, pack(target))
    if model.kind == "wan":
        caps = ["" if d else wan_caption(*c) for c, d in zip(conds, drop.tolist())]
        seq = model.encode(caps)
        pred = t(hidden_states=xt, timestep=sigma * 1000, encoder_hidden_states=seq, return_dict=False)[0]
        return F.mse_loss(pred, target)
    raise ValueError(model.kind)


def flux_velocity(model: ZooModel, packed_xt: torch.Tensor, sigma: torch.Tensor, captions: list[str],
                  guidance: torch.Tensor) -> torch.Tensor:
    """The flux transformer's packed velocity at noise levels ``sigma`` for ``captions`` ("" is the null caption)."""
    seq, pooled = model.encode(captions)
    img_ids, txt_ids = flux_ids(data.CANVAS, data.CANVAS, seq.shape[1])
    return model.transformer(hidden_states=packed_xt, timestep=sigma, guidance=guidance, pooled_projections=pooled,
                             encoder_hidden_states=seq, txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]


def guidance_distillation_loss(student: ZooModel, teacher: ZooModel, x01: torch.Tensor, conds: list,
                               gen: torch.Generator, guidance_range=(1.0, 5.0), teacher_guidance: float = 3.5,
                               sigma_shift: float = 1.0) -> torch.Tensor:
    """Guidance distillation as FLUX.1-dev was made: the student, given a guidance strength ``w`` through its
    guidance embedding, learns the teacher's classifier-free guided velocity ``v(null) + w (v(caption) - v(null))``
    in one call. ``w`` is drawn uniformly from ``guidance_range`` per sample; the teacher (trained with caption
    dropout) sees the constant guidance input it was trained with."""
    if student.kind != "flux":
        raise ValueError(f"guidance distillation needs a guidance-embedded model (flux); got {student.kind!r}")
    x0 = x01 * 2 - 1
    b = x0.shape[0]
    noise = torch.randn(x0.shape, generator=gen)
    sigma = flow_sigmas(b, gen, sigma_shift)
    s = sigma.view(b, 1, 1, 1)
    xt = pack((1 - s) * x0 + s * noise)
    lo, hi = guidance_range
    w = lo + (hi - lo) * torch.rand(b, generator=gen)
    caps = [flux_caption(*c) for c in conds]
    with torch.no_grad():
        v = flux_velocity(teacher, torch.cat([xt, xt]), torch.cat([sigma, sigma]), caps + [""] * b,
                          torch.full((2 * b,), teacher_guidance))
        v_cond, v_null = v.chunk(2)
        target = v_null + w.view(b, 1, 1) * (v_cond - v_null)
    return F.mse_loss(flux_velocity(student, xt, sigma, caps, w), target)


def frozen_copy(model: ZooModel, weights: list[torch.Tensor]) -> ZooModel:
    """A copy of ``model`` holding ``weights`` (in ``parameters`` order), in eval mode, without gradients."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p, w in zip(parameters(twin), weights):
            p.copy_(w)
            p.requires_grad_(False)
    for mod in twin.modules().values():
        mod.eval()
    return twin


def _disable_internal_label_dropout(model: ZooModel) -> None:
    for m in model.transformer.modules():
        if hasattr(m, "dropout_prob") and type(m).__name__ == "LabelEmbedding":
            m.dropout_prob = 0.0


def parameters(model: ZooModel) -> list[torch.nn.Parameter]:
    return [p for mod in model.modules().values() for p in mod.parameters()]


# A recipe: everything that decides which update step ``k`` makes (``scripts/train_zoo.py`` reads it from conf/zoo).
RECIPE_DEFAULTS = dict(seed=0, batch_size=32, lr=1e-3, warmup=200, grad_clip=1.0, ema_decay=0.999,
                       label_dropout=0.1, label_dropout_from_step=0, sigma_shift=1.0, sigma_shift_from_step=0,
                       lr_schedule=(), guidance_distillation_from_step=None, guidance_range=(1.0, 5.0))


def _reject_unknown_fields(values: dict[str, Any], accepted: list[str], where: str) -> None:
    unknown = sorted(set(values) - set(accepted))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}")


def recipe_from(values: dict[str, Any], where: str = "recipe") -> dict[str, Any]:
    """``RECIPE_DEFAULTS`` updated by ``values``; an unknown key raises a ValueError that names it."""
    _reject_unknown_fields(values, list(RECIPE_DEFAULTS), where)
    check_lr_schedule(values.get("lr_schedule", ()), where)
    check_guidance_distillation(values, where)
    return dict(RECIPE_DEFAULTS, **values)


def check_guidance_distillation(values: dict[str, Any], where: str = "recipe") -> None:
    """ValueErrors naming ``guidance_distillation_from_step`` or ``guidance_range`` unless they are a step (or null)
    and a ``[low, high]`` pair with ``0 <= low <= high``."""
    start = values.get("guidance_distillation_from_step")
    if start is not None and (isinstance(start, bool) or not isinstance(start, int) or start < 0):
        raise ValueError(f"{where}: guidance_distillation_from_step must be null or a step >= 0, got {start!r}")
    rng = values.get("guidance_range", RECIPE_DEFAULTS["guidance_range"])
    bad = ValueError(f"{where}: guidance_range must be a [low, high] pair with 0 <= low <= high, got {rng!r}")
    try:
        lo, hi = (float(v) for v in rng)
    except (TypeError, ValueError):
        raise bad from None
    if not 0 <= lo <= hi:
        raise bad


def distils_guidance(step: int, recipe: dict[str, Any]) -> bool:
    start = recipe["guidance_distillation_from_step"]
    return start is not None and step >= start


RUN_FIELDS = ("max_steps", "max_minutes", "checkpoint_every")  # when to stop and save, not what a step does


def split_model_config(config: dict[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A model's training config (conf/zoo/<name>.yaml) as (recipe, run options for ``train``); an unknown
    field raises a ValueError that names it and ``where`` it was found."""
    _reject_unknown_fields(config, [*RECIPE_DEFAULTS, *RUN_FIELDS], where)
    run = {k: v for k, v in config.items() if k in RUN_FIELDS}
    return recipe_from({k: v for k, v in config.items() if k not in RUN_FIELDS}, where), run


def learning_rate(step: int, recipe: dict[str, Any]) -> float:
    """Linear warm-up over ``warmup`` steps to ``lr``, times the fraction that ``lr_schedule`` gives at ``step``.

    ``lr_schedule`` is a list of ``[step, fraction]`` knots with increasing steps: the fraction is 1 before the
    first knot, linear between knots and held after the last (empty: constant ``lr``)."""
    lr = recipe["lr"] * min(1.0, (step + 1) / recipe["warmup"])
    return lr * schedule_fraction(step, recipe["lr_schedule"])


def schedule_fraction(step: int, knots) -> float:
    if not knots or step < knots[0][0]:
        return 1.0
    for (s0, f0), (s1, f1) in zip(knots[:-1], knots[1:]):
        if step < s1:
            return f0 - (f0 - f1) * ((step - s0) / (s1 - s0))
    return knots[-1][1]


def lr_knots(training_info: dict[str, Any]) -> list[list[float]]:
    """The ``lr_schedule`` knots of a recipe or of the training info stored with weights; weights trained before
    ``lr_schedule`` existed record one cool-down as ``lr_decay_from_step``/``lr_decay_steps``/``lr_final_fraction``."""
    if training_info.get("lr_decay_steps", 0) > 0:
        start = training_info["lr_decay_from_step"]
        return [[start, 1.0], [start + training_info["lr_decay_steps"], training_info["lr_final_fraction"]]]
    return [list(k) for k in training_info.get("lr_schedule", ())]


def check_lr_schedule(knots, where: str = "recipe") -> None:
    """A ValueError naming ``lr_schedule`` unless it is a list of [step, fraction] pairs, steps increasing."""
    accepted = "a list of [step, fraction] pairs with increasing integer steps and fractions >= 0"
    try:
        pairs = [(int(s), float(f)) for s, f in knots]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: lr_schedule must be {accepted}, got {knots!r}") from None
    if any(s1 <= s0 for (s0, _), (s1, _) in zip(pairs, pairs[1:])) or any(f < 0 for _, f in pairs):
        raise ValueError(f"{where}: lr_schedule must be {accepted}, got {knots!r}")


def optimisation_step(model: ZooModel, params: list, opt: torch.optim.Optimizer, ema: list, step: int,
                      recipe: dict[str, Any], teacher: ZooModel | None = None) -> float:
    """Step ``step`` of a recipe (see ``RECIPE_DEFAULTS``; missing keys take their defaults): batch and noise
    from ``(seed, step)``, learning rate from ``learning_rate``, clipped AdamW update, EMA update. Returns the loss.

    From ``guidance_distillation_from_step`` on, the loss is ``guidance_distillation_loss`` against ``teacher``."""
    r = recipe_from(recipe)
    gen = step_generator(r["seed"], step)
    x, conds = data.sample_batch(model.kind, r["batch_size"], gen)
    for g in opt.param_groups:
        g["lr"] = learning_rate(step, r)
    shift = r["sigma_shift"] if step >= r["sigma_shift_from_step"] else 1.0
    if distils_guidance(step, r):
        if teacher is None:
            raise ValueError(f"step {step} distils guidance (guidance_distillation_from_step="
                             f"{r['guidance_distillation_from_step']}) but no teacher was given")
        loss = guidance_distillation_loss(model, teacher, x, conds, gen, r["guidance_range"], sigma_shift=shift)
    else:
        dropout = r["label_dropout"] if step >= r["label_dropout_from_step"] else 0.0
        loss = training_loss(model, x, conds, gen, label_dropout=dropout, sigma_shift=shift)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, r["grad_clip"])
    opt.step()
    d = min(r["ema_decay"], (1 + step) / (10 + step))
    with torch.no_grad():
        torch._foreach_mul_(ema, d)
        torch._foreach_add_(ema, [p.detach() for p in params], alpha=1 - d)
    return float(loss.detach())


def new_optimiser(params: list, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999))


def train(model: ZooModel, *, max_steps: int = 100_000, max_minutes: float = 10.0,
          checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int = 100, weight_decay: float = 0.0,
          progress: bool = True, log_every: int = 50, **recipe: Any) -> dict[str, Any]:
    """Train ``model`` in place under ``recipe`` (keyword fields of ``RECIPE_DEFAULTS``); on return its modules
    hold the EMA weights. Returns training info: the full recipe, the steps reached and why training stopped.

    Flow-matching noise levels are shifted by ``sigma_shift`` from step ``sigma_shift_from_step`` on
    (see ``flow_sigmas``); the steps before it use the plain logit-normal. Captions are dropped (``label_dropout``)
    from step ``label_dropout_from_step`` on. From ``guidance_distillation_from_step`` on, the model learns the
    guided velocity of a frozen teacher, the EMA weights at that step, kept in the checkpoint."""
    from tqdm import tqdm

    _disable_internal_label_dropout(model)
    for mod in model.modules().values():
        mod.train()
    params = parameters(model)
    recipe = recipe_from(recipe, "train()")
    opt = new_optimiser(params, recipe["lr"], weight_decay)
    ema = [p.detach().clone() for p in params]
    step, elapsed, losses, teacher = 0, 0.0, [], None
    ckpt = Path(checkpoint_dir) / "checkpoint.pt" if checkpoint_dir else None
    if ckpt is not None and ckpt.exists():
        st = torch.load(ckpt, weights_only=False)
        for p, v in zip(params, st["params"]):
            p.data.copy_(v)
        for e, v in zip(ema, st["ema"]):
            e.copy_(v)
        opt.load_state_dict(st["opt"])
        step, elapsed, losses = st["step"], st["elapsed"], st["losses"]
        if st.get("teacher") is not None:
            teacher = frozen_copy(model, st["teacher"])
        print(f"[{model.name}] resumed at step {step} ({elapsed / 60:.1f} min)", flush=True)
    budget = max_minutes * 60
    bar = tqdm(total=max_steps, initial=step, desc=model.name, disable=not progress, mininterval=5,
               dynamic_ncols=False, ncols=100)
    t0 = time.perf_counter() - elapsed

    def save_ckpt():
        if ckpt is not None:
            atomic_torch_save(dict(params=[p.detach() for p in params], ema=ema, opt=opt.state_dict(), step=step,
                                   elapsed=time.perf_counter() - t0, losses=losses,
                                   teacher=None if teacher is None else parameters(teacher)), ckpt)

    stop_reason = "max_steps"
    while step < max_steps:
        if time.perf_counter() - t0 >= budget:
            stop_reason = "max_minutes"
            break
        if teacher is None and distils_guidance(step, recipe):
            if step > recipe["guidance_distillation_from_step"]:
                raise ValueError(f"resumed at step {step}, past guidance_distillation_from_step="
                                 f"{recipe['guidance_distillation_from_step']}, from a checkpoint without its teacher")
            teacher = frozen_copy(model, ema)  # the EMA weights when distillation starts, frozen
        losses.append(optimisation_step(model, params, opt, ema, step, recipe, teacher))
        step += 1
        bar.update(1)
        if step % log_every == 0:
            bar.set_postfix(loss=f"{sum(losses[-log_every:]) / log_every:.4f}")
        if step % checkpoint_every == 0:
            save_ckpt()
    bar.close()
    elapsed = time.perf_counter() - t0
    save_ckpt()
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
    for mod in model.modules().values():
        mod.eval()
    tail = losses[-100:]
    return dict(steps=step, stop_reason=stop_reason, train_minutes=round(elapsed / 60, 2), **recipe,
                max_steps=max_steps, max_minutes=max_minutes,
                final_loss=round(sum(tail) / max(len(tail), 1), 5) if tail else None,
                images_seen=step * recipe["batch_size"], torch_version=torch.__version__,
                threads=torch.get_num_threads())
