#!/usr/bin/env python
"""CG-Taylor under torch.compile on the reduced DiT, FLUX and Wan transformers: eager agreement, graphs run per step,
graph breaks, recompiles, host syncs per step. Writes a markdown table (and a CSV next to it).

    python scripts/probe_compile.py --out results/compile_probe.md                      # inductor, both modes
    python scripts/probe_compile.py --modes full --backend eager --out /tmp/probe.md    # dynamo only, faster
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from cgtaylor.bench.compile_probe import probe_compile
from cgtaylor.bench.specs import MODEL_ORDER, load_spec
from cgtaylor.io import atomic_write_csv, atomic_write_text


def _row(probe) -> dict:
    def joined(values):
        return "/".join(map(str, values)) or "–"

    return {
        "model": probe.model, "mode": probe.mode, "backend": probe.backend, "steps": probe.num_steps,
        "first compiled generation (s)": round(probe.first_compiled_s, 1),
        "eager generation (s)": round(probe.eager_s, 3), "compiled generation (s)": round(probe.compiled_s, 3),
        "graphs run per computed step": joined(probe.graphs_per_step["computed"]),
        "graphs run per forecast step": joined(probe.graphs_per_step["forecast"]),
        "graph breaks while tracing": probe.counts_first["graph_breaks"],
        "graphs compiled": probe.counts_first["unique_graphs"],
        "recompiles after first generation": probe.recompiles,
        "host syncs per computed step": joined(probe.syncs_per_step["computed"]),
        "host syncs per forecast step": joined(probe.syncs_per_step["forecast"]),
        "max abs(compiled - eager)": f"{probe.max_abs_diff:.1e}", "same decisions": probe.same_decisions,
    }


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="markdown output; the CSV goes next to it")
    parser.add_argument("--models", default=",".join(MODEL_ORDER), help="comma-separated real_scale spec names")
    parser.add_argument("--modes", default="regional,full", help="comma-separated: full, regional")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (inductor, aot_eager, eager)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (tiny models: 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    jobs = [(m.strip(), mode.strip()) for mode in args.modes.split(",") for m in args.models.split(",") if m.strip()]
    rows = [_row(probe_compile(load_spec(name, reduced=True), mode, backend=args.backend))
            for name, mode in tqdm(jobs, desc="compile probes")]
    frame = pd.DataFrame(rows)
    header = (f"# CG-Taylor under torch.compile (reduced models, CPU)\n\n"
              f"- Machine: {platform.machine()} CPU, {args.threads} thread(s); torch {torch.__version__}.\n"
              f"- Command: `python scripts/probe_compile.py {' '.join(argv or [])}`.\n"
              "- Per model: eager CG-Taylor (threshold between the first-block errors of an all-computed run), then "
              "compiled; then a second generation, twice the threshold and another step count with "
              "`error_on_recompile`. Steps with two transformer calls (Wan: cond, uncond) count both.\n\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(header + frame.to_markdown(index=False) + "\n", args.out)
    atomic_write_csv(frame, args.out.with_suffix(".csv"))
    print(frame.to_string(index=False))
    return frame


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
