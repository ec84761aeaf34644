"""Checks of ``scripts/bench_real_scale.py``'s flags, run before any model is built: each bad flag ends the
command the way argparse does (``<prog>: error: argument --flag: what it accepts``, exit status 2)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

from ..checks import compute_dtype

MIN_STEPS = 3  # the first and the last step are always computed: a shorter run forecasts nothing
MIN_PROBE_STEPS = 4  # the forecasting probe computes steps 0, 1 and the last one, and forecasts one or more


class FlagError(ValueError):
    def __init__(self, flag: str, message: str):
        super().__init__(f"argument {flag}: {message}")


def spec_paths(models: str, conf_dir: Path, known: tuple[str, ...]) -> list[Path]:
    """The spec file of each comma-separated name in ``--models``: a name in ``known`` or a path to a .yaml file."""
    names = [n.strip() for n in models.split(",") if n.strip()]
    if not names:
        raise FlagError("--models", f"names no model; give comma-separated spec names ({', '.join(known)}) or paths "
                                    "to spec .yaml files")
    paths = []
    for name in names:
        path = Path(name) if Path(name).is_file() else conf_dir / f"{name}.yaml"
        if not path.is_file():
            raise FlagError("--models", f"unknown model spec {name!r}; accepted: {', '.join(known)} or a path to a "
                                        "spec .yaml file")
        paths.append(path)
    return paths


def full_step_counts(text: str, num_steps: int) -> list[int]:
    """``--full-steps`` as integers S with 2 <= S <= ``num_steps`` (the specs' step count N)."""
    accepted = f"comma-separated full-step counts S of N = {num_steps}, each 2 <= S <= {num_steps}"
    counts = []
    for item in (s.strip() for s in text.split(",") if s.strip()):
        try:
            count = int(item)
        except ValueError:
            raise FlagError("--full-steps", f"{item!r} is not an integer; give {accepted}") from None
        if not 2 <= count <= num_steps:
            raise FlagError("--full-steps", f"{count} is out of range; give {accepted}")
        counts.append(count)
    if not counts:
        raise FlagError("--full-steps", f"names no count; give {accepted}")
    return counts


def _at_least(flag: str, value, minimum: int, why: str) -> None:
    if value is not None and value < minimum:
        raise FlagError(flag, f"must be an integer >= {minimum} ({why}), got {value}")


def _check_device(text: str | None) -> None:
    if text is None:
        return
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError):
        raise FlagError("--device", f"{text!r} is not a torch device; give e.g. cpu, cuda or cuda:1") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FlagError("--device", f"{text!r} asks for CUDA, which this machine does not have; give cpu (with "
                                    "--reduced for a smoke run)")


def check_flags(args) -> None:
    """Raise :class:`FlagError` for the first flag of ``args`` (parsed by ``bench.real_scale.parse_args``) that the
    benchmark cannot run with. Reads the spec files (for their step count N); builds no model."""
    from .specs import CONF_DIR, MODEL_ORDER, load_spec

    specs = [load_spec(path) for path in spec_paths(args.models, CONF_DIR, MODEL_ORDER)]
    full_step_counts(args.full_steps, min(spec.num_inference_steps for spec in specs))
    _at_least("--steps", args.steps, MIN_STEPS, "the first and the last step are always computed")
    _at_least("--probe-steps", args.probe_steps, MIN_PROBE_STEPS, "2 warm-up steps, a forecast step and the last")
    _at_least("--threads", args.threads, 1, "CPU threads for torch")
    if args.budget_s is not None and not (math.isfinite(args.budget_s) and args.budget_s > 0):
        raise FlagError("--budget-s", f"must be a number of seconds > 0, got {args.budget_s}")
    if args.dtype is not None:
        try:
            compute_dtype("--dtype", args.dtype)
        except ValueError as error:
            raise FlagError("--dtype", str(error).removeprefix("--dtype ")) from None
    _check_device(args.device)
    if args.out is not None and Path(args.out).is_dir():
        raise FlagError("--out", f"{args.out} is a directory; give the markdown file to write (e.g. real_scale.md)")


def checked(args, prog: str | None = None):
    """``args`` when :func:`check_flags` passes; otherwise the error on stderr and exit status 2, as argparse."""
    try:
        check_flags(args)
    except FlagError as error:
        prog = prog or Path(sys.argv[0]).name or "bench_real_scale.py"
        print(f"usage: {prog} [-h] [options]  (see --help)\n{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    return args
