"""Wall-clock and memory of CG-Taylor on the paper's transformers at their real sizes (random weights).

Each model is built from its published configuration (``conf/real_scale/*.yaml``; nothing is downloaded) and
driven directly with random inputs of the paper's resolution, one transformer call per step (two for Wan's
cond/uncond passes, one doubled batch for DiT's guidance). What is measured:

- the time of a full step and of a forecast step (embeddings + first block + gate + Taylor forecast + head):
  threshold 0 computes every step, a forced schedule (``CGTaylorConfig.compute_steps``) of steps 0, 1 and the
  last forecasts every other step; ``c = forecast-step time / full-step time``;
- end-to-end time of N-step runs with forced schedules of S full steps (a warm-up, then a regular interval, and
  the last step), against the plain model, and the ideal speedup ``N / (S + (N - S) c)``;
- peak accelerator memory of the plain model, with CG-Taylor and with diffusers' ``TaylorSeerCacheConfig``.

After each forced run the recorded statistics are checked against S.

``--reduced`` builds tiny fp32 versions of the same classes on the CPU (for the tests); its numbers say
nothing about real speed.

The rooms: ``specs`` (spec files, building a transformer), ``families`` (per-family inputs and calls, as data),
``driver`` (one trajectory), ``schedules`` (forced schedules), ``measure`` (one model's measurements), ``report``
(markdown and CSV); this module is the command line.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import torch

from ..checks import compute_dtype
from ..io import atomic_write_text
from .arguments import checked
from .compiled import COMPILE_MODES
from .measure import ModelResult, bench_model, is_out_of_memory
from .report import device_description, render_markdown, write_csv
from .schedules import scaled_full_steps
from .specs import MODEL_ORDER, load_spec

PAPER_FULL_STEPS = (23, 15, 13, 11)  # FLUX rows of the paper, full steps out of 50
# Full steps of 50 that the zoo's CG-Taylor runs calibrated for 2x and 3x compute (results/tables/table_*.md:
# DiT 27/16, FLUX 25/16 before flux-digits was guidance-distilled and 25/15 since, Wan 26/15), so the real-scale
# speedup of those schedules can be read off too.
ZOO_FULL_STEPS = (25, 16, 27)
DEFAULT_BUDGET_S = 420.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None,
                        help="markdown output (default results/real_scale.md on CUDA; required otherwise)")
    parser.add_argument("--models", default=",".join(MODEL_ORDER), help="comma-separated spec names or paths")
    parser.add_argument("--full-steps", default=",".join(map(str, PAPER_FULL_STEPS + ZOO_FULL_STEPS)),
                        help="full-step counts S of N to force, in order (default: the paper's FLUX rows "
                             "23,15,13,11, then the zoo's 25,16,27)")
    parser.add_argument("--steps", type=int, default=None, help="N (default: the spec's, 50; reduced: 8)")
    parser.add_argument("--probe-steps", type=int, default=None, help="steps of the step-cost probes (default 10; reduced 6)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help=f"stop starting new runs after this many seconds (default {DEFAULT_BUDGET_S:.0f}; reduced 60)")
    parser.add_argument("--compile", default="none", choices=COMPILE_MODES,
                        help="torch.compile the transformer: none, full (torch.compile(transformer)) or regional "
                             "(transformer.compile_repeated_blocks()); plain and CG-Taylor runs alike")
    parser.add_argument("--reduced", action="store_true", help="tiny fp32 models on the CPU (tests, smoke runs)")
    parser.add_argument("--device", default=None, help="default: cuda if available (cpu when --reduced)")
    parser.add_argument("--dtype", default=None, help="default bfloat16 (float32 when --reduced)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's; 1 when --reduced, tiny ops lose to threading)")
    return parser.parse_args(argv)


def main(argv=None) -> list[ModelResult]:
    args = checked(parse_args(argv))  # every flag checked before any model is built
    args.argv = list(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    device = torch.device(args.device or ("cpu" if args.reduced or not torch.cuda.is_available() else "cuda"))
    dtype = compute_dtype("--dtype", args.dtype or ("float32" if args.reduced else "bfloat16"))
    if args.out is None:
        if device.type != "cuda":
            raise SystemExit("--out is required off the GPU (results/real_scale.md is for GPU measurements)")
        args.out = Path("results/real_scale.md")
    threads = torch.get_num_threads()
    if args.threads or (args.reduced and device.type == "cpu"):
        torch.set_num_threads(args.threads or 1)
    try:
        return _run(args, device, dtype, started)
    finally:
        torch.set_num_threads(threads)


def _run(args, device: torch.device, dtype: torch.dtype, started: float) -> list[ModelResult]:
    budget = args.budget_s if args.budget_s is not None else (60.0 if args.reduced else DEFAULT_BUDGET_S)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if not names:
        raise SystemExit(f"--models names no model; give comma-separated spec names ({', '.join(MODEL_ORDER)}) "
                         "or paths to spec files")
    specs = [load_spec(n, reduced=args.reduced) for n in names]
    full_steps = [int(s) for s in args.full_steps.split(",") if s.strip()]
    probe_steps = args.probe_steps or (6 if args.reduced else 10)
    print(f"bench_real_scale: {len(specs)} model(s) on {device_description(device)}, {dtype}; new runs start only "
          f"within a {budget:.0f} s budget (plus model construction and the last run; the default models took "
          f"333 s on one H200 with a 340 s budget).", flush=True)

    results = []
    for index, spec in enumerate(specs):
        num_steps = args.steps or (8 if args.reduced else spec.num_inference_steps)
        counts = scaled_full_steps(full_steps, num_steps, spec.num_inference_steps)
        remaining = budget - (time.perf_counter() - started)
        deadline = time.perf_counter() + remaining / (len(specs) - index)  # an equal share of what is left
        try:
            results.append(bench_model(spec, device, dtype, counts, num_steps=num_steps, probe_steps=probe_steps,
                                       deadline=deadline, compile_mode=args.compile))
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            print(f"[{spec.name}] out of memory: {error}", file=sys.stderr)
            failed = ModelResult(spec.name, 0, num_steps)
            failed.notes.append("out of memory")
            results.append(failed)
            gc.collect()
            torch.cuda.empty_cache()
        elapsed = _write(results, args, device, dtype, started)  # after each model: a stopped run keeps them

    print(f"wrote {args.out} and {args.out.with_suffix('.csv')} in {elapsed:.0f} s", flush=True)
    return results


def _write(results: list[ModelResult], args, device: torch.device, dtype: torch.dtype, started: float) -> float:
    elapsed = time.perf_counter() - started
    command = "python scripts/bench_real_scale.py " + " ".join(args.argv)
    text = render_markdown(results, device=device, dtype=dtype, reduced=args.reduced, command=command.strip(),
                           elapsed_s=elapsed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(text, args.out)
    write_csv(results, args.out.with_suffix(".csv"))
    return elapsed


__all__ = ["PAPER_FULL_STEPS", "ZOO_FULL_STEPS", "parse_args", "main"]
