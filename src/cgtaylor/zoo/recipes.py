"""Training recipes of the zoo: the fields that decide which update step ``k`` makes, their checks, and the
learning-rate schedule (``scripts/train_zoo.py`` reads a recipe per model from conf/zoo)."""
from __future__ import annotations

from typing import Any


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
