"""Training loops for the zoo (used by ``scripts/train_zoo.py`` and the tests).

Deterministic given the seed and the step count: the batch, noise and label dropout of step ``k`` are
drawn from generators seeded with ``(seed, k)``, so a run that resumes from a checkpoint takes the
same steps as one that never stopped. Training stops at ``max_steps`` or after ``max_minutes`` of
training time, whichever comes first; the number of steps reached is recorded with the weights.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..io import atomic_torch_save
from . import data
from .captions import flux_caption, wan_caption
from .dit_digits import NULL_LABEL
from .recipes import distils_guidance, learning_rate, recipe_from
from .sampling import flux_ids, pack
from .zoo_model import ZooModel


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


def optimisation_step(model: ZooModel, params: list, opt: torch.optim.Optimizer, ema: list, step: int,
                      recipe: dict[str, Any], teacher: ZooModel | None = None) -> float:
    """Step ``step`` of a recipe (see ``recipes.RECIPE_DEFAULTS``; missing keys take their defaults): batch and noise
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
    """Train ``model`` in place under ``recipe`` (keyword fields of ``recipes.RECIPE_DEFAULTS``); on return its modules
    hold the EMA weights. Returns training info: the full recipe, the steps reached and why training stopped.

    Flow-matching noise levels are shifted by ``sigma_shift`` from step ``sigma_shift_from_step`` on
    (see ``flow_sigmas``); the steps before it use the plain logit-normal. Captions are dropped (``label_dropout``)
    from step ``label_dropout_from_step`` on. From ``guidance_distillation_from_step`` on, the model learns the
    guided velocity of a frozen teacher, the EMA weights at that step, kept in the checkpoint."""
    from tqdm import tqdm

    params = _enter_training(model)
    recipe = recipe_from(recipe, "train()")
    opt = new_optimiser(params, recipe["lr"], weight_decay)
    ema = [p.detach().clone() for p in params]
    ckpt = Path(checkpoint_dir) / "checkpoint.pt" if checkpoint_dir else None
    run = _resume(ckpt, model, params, ema, opt)
    bar = tqdm(total=max_steps, initial=run.step, desc=model.name, disable=not progress, mininterval=5,
               dynamic_ncols=False, ncols=100)
    t0 = time.perf_counter() - run.elapsed
    stop_reason = "max_steps"
    while run.step < max_steps:
        if time.perf_counter() - t0 >= max_minutes * 60:
            stop_reason = "max_minutes"
            break
        run.teacher = _teacher_at(run.step, recipe, model, ema, run.teacher)
        run.losses.append(optimisation_step(model, params, opt, ema, run.step, recipe, run.teacher))
        run.step += 1
        _show_progress(bar, run, log_every)
        if run.step % checkpoint_every == 0:
            _save_checkpoint(ckpt, params, ema, opt, run, time.perf_counter() - t0)
    bar.close()
    run.elapsed = time.perf_counter() - t0
    _save_checkpoint(ckpt, params, ema, opt, run, run.elapsed)
    _leave_training(model, params, ema)
    return _training_info(run, stop_reason, recipe, max_steps, max_minutes)


@dataclasses.dataclass
class _Run:
    """Where a training run stands: steps taken, training seconds, losses so far, the frozen distillation teacher."""

    step: int = 0
    elapsed: float = 0.0
    losses: list[float] = dataclasses.field(default_factory=list)
    teacher: ZooModel | None = None


def _enter_training(model: ZooModel) -> list[torch.nn.Parameter]:
    """Train mode with the model's own (unseeded) label dropout off; returns the parameters to optimise."""
    _disable_internal_label_dropout(model)
    for mod in model.modules().values():
        mod.train()
    return parameters(model)


def _resume(ckpt: Path | None, model: ZooModel, params: list, ema: list, opt: torch.optim.Optimizer) -> _Run:
    """Load ``ckpt`` (when it exists) into the parameters, EMA, optimiser and teacher; the run it reached."""
    if ckpt is None or not ckpt.exists():
        return _Run()
    st = torch.load(ckpt, weights_only=False)
    for p, v in zip(params, st["params"]):
        p.data.copy_(v)
    for e, v in zip(ema, st["ema"]):
        e.copy_(v)
    opt.load_state_dict(st["opt"])
    teacher = frozen_copy(model, st["teacher"]) if st.get("teacher") is not None else None
    run = _Run(st["step"], st["elapsed"], st["losses"], teacher)
    print(f"[{model.name}] resumed at step {run.step} ({run.elapsed / 60:.1f} min)", flush=True)
    return run


def _save_checkpoint(ckpt: Path | None, params: list, ema: list, opt: torch.optim.Optimizer, run: _Run,
                     elapsed: float) -> None:
    if ckpt is not None:
        atomic_torch_save(dict(params=[p.detach() for p in params], ema=ema, opt=opt.state_dict(), step=run.step,
                               elapsed=elapsed, losses=run.losses,
                               teacher=None if run.teacher is None else parameters(run.teacher)), ckpt)


def _teacher_at(step: int, recipe: dict[str, Any], model: ZooModel, ema: list, teacher: ZooModel | None):
    """The distillation teacher for ``step``: the one given, or, at ``guidance_distillation_from_step``, the EMA
    weights frozen."""
    if teacher is not None or not distils_guidance(step, recipe):
        return teacher
    if step > recipe["guidance_distillation_from_step"]:
        raise ValueError(f"resumed at step {step}, past guidance_distillation_from_step="
                         f"{recipe['guidance_distillation_from_step']}, from a checkpoint without its teacher")
    return frozen_copy(model, ema)


def _show_progress(bar, run: _Run, log_every: int) -> None:
    bar.update(1)
    if run.step % log_every == 0:
        bar.set_postfix(loss=f"{sum(run.losses[-log_every:]) / log_every:.4f}")


def _leave_training(model: ZooModel, params: list, ema: list) -> None:
    """The EMA weights into the model, eval mode."""
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
    for mod in model.modules().values():
        mod.eval()


def _training_info(run: _Run, stop_reason: str, recipe: dict[str, Any], max_steps: int,
                   max_minutes: float) -> dict[str, Any]:
    tail = run.losses[-100:]
    return dict(steps=run.step, stop_reason=stop_reason, train_minutes=round(run.elapsed / 60, 2), **recipe,
                max_steps=max_steps, max_minutes=max_minutes,
                final_loss=round(sum(tail) / max(len(tail), 1), 5) if tail else None,
                images_seen=run.step * recipe["batch_size"], torch_version=torch.__version__,
                threads=torch.get_num_threads())
