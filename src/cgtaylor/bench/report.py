"""The real-scale benchmark's report: a markdown page and a CSV of every end-to-end run."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from ..io import atomic_write_csv
from .measure import ModelResult


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def _gib(value) -> str:
    return "n/a" if value is None else f"{value / 2**30:.2f}"


def _fmt(value, spec=".3f") -> str:
    return "–" if value is None else format(value, spec)


def _header(results: list[ModelResult], device, dtype, reduced: bool, command: str, elapsed_s: float) -> list[str]:
    import diffusers

    compile_mode = results[0].compile_mode if results else "none"
    lines = [
        "# CG-Taylor at real scale (random weights)" + (" — reduced CPU smoke run" if reduced else "")
        + (f", torch.compile: {compile_mode}" if compile_mode != "none" else ""),
        "",
        f"- Device: {device_description(device)}; dtype {str(dtype).replace('torch.', '')}; "
        f"torch {torch.__version__}, diffusers {diffusers.__version__}.",
        f"- Command: `{command}`; wall time {elapsed_s:.0f} s.",
        "- Transformers built from their published configurations (`conf/real_scale/`) with random weights and "
        "driven with random inputs of the paper's shapes; no text encoder, VAE or scheduler time is included.",
        "- Full step: CG-Taylor at threshold 0 (gate work included). Forecast step: a forced schedule computing "
        "steps 0, 1 and the last (embeddings, first block, gate, Taylor forecast, head). c = forecast / full. "
        "Medians over steps.",
        "- End-to-end: one run each, schedules of S full steps of N forced with `CGTaylorConfig.compute_steps` "
        "(a warm-up, then a regular interval, and the last step); ideal = N / (S + (N - S) c).",
    ]
    if reduced:
        lines.append("- Reduced mode: tiny widths and depths on the CPU. These numbers check the code path only.")
    if compile_mode != "none":
        lines.append(f"- Every run calls the transformer compiled ({compile_mode}; `cgtaylor.bench.compiled`), plain and "
                     "CG-Taylor alike; timings start after a compiling run of each. First runs, compilation included: "
                     + "; ".join(f"{r.name} plain {_fmt(r.first_run_s.get('plain'), '.1f')} s, CG-Taylor "
                                 f"{_fmt(r.first_run_s.get('cg_taylor'), '.1f')} s" for r in results) + ".")
    return lines


def _section(title: str, header: str, rule: str, rows: list[str]) -> list[str]:
    """A markdown section holding one table."""
    return ["", f"## {title}", "", header, rule, *rows]


def _step_cost_table(results: list[ModelResult]) -> list[str]:
    rows = [f"| {r.name} | {r.params / 1e6:.2f} | {_fmt(r.plain_step_s, '.4f')} | {_fmt(r.full_step_s, '.4f')} "
            f"| {_fmt(r.forecast_step_s, '.4f')} | {_fmt(r.c)} |" for r in results]
    return _section("Step cost", "| model | params (M) | plain step (s) | full step (s) | forecast step (s) | c |",
                    "|---|---:|---:|---:|---:|---:|", rows)


def _row_note(row: dict) -> str:
    note = row.get("note", "")
    if row.get("schedule_ok") is False:
        note = (note + "; " if note else "") + "schedule not as forced"
    if row.get("finite") is False:
        note = (note + "; " if note else "") + "non-finite output"
    return note


def _end_to_end_table(results: list[ModelResult]) -> list[str]:
    rows = [f"| {row['model']} | {row['method']} | {row['full_steps']} / {row['steps']} | {row.get('computed', '')} "
            f"| {_fmt(row.get('time_s'))} | {_fmt(row.get('speedup'), '.2f')} | {_fmt(row.get('ideal'), '.2f')} "
            f"| {_fmt(row.get('of_ideal'), '.2f')} | {_row_note(row)} |" for r in results for row in r.rows]
    return _section("End-to-end speedup",
                    "| model | method | S / N | computed (per context) | time (s) | speedup | ideal | of ideal | note |",
                    "|---|---|---:|---|---:|---:|---:|---:|---|", rows)


def _memory_table(results: list[ModelResult]) -> list[str]:
    rows = [f"| {r.name} | {_gib(r.peak_bytes.get('plain'))} | {_gib(r.peak_bytes.get('cg_taylor'))} "
            f"| {_gib(r.peak_bytes.get('taylorseer'))} ({r.taylorseer_modules}) "
            f"| {'–' if r.cache_bytes is None else f'{r.cache_bytes / 2**20:.3g}'} |" for r in results]
    return _section("Peak memory (GiB allocated)",
                    "| model | plain | CG-Taylor | TaylorSeer (modules hooked) | CG-Taylor cache (MiB) |",
                    "|---|---:|---:|---:|---:|", rows)


def render_markdown(results: list[ModelResult], *, device: torch.device, dtype: torch.dtype, reduced: bool,
                    command: str, elapsed_s: float) -> str:
    lines = _header(results, device, dtype, reduced, command, elapsed_s)
    lines += _step_cost_table(results) + _end_to_end_table(results) + _memory_table(results)
    notes = [f"- {r.name}: {n}" for r in results for n in r.notes]
    if notes:
        lines += ["", "## Notes", "", *notes]
    return "\n".join(lines) + "\n"


def write_csv(results: list[ModelResult], path: Path) -> None:
    import pandas as pd

    rows = []
    for r in results:
        for row in r.rows:
            rows.append(dict(row, params=r.params, plain_step_s=r.plain_step_s, full_step_s=r.full_step_s,
                             forecast_step_s=r.forecast_step_s, c=r.c,
                             peak_plain=r.peak_bytes.get("plain"), peak_cg_taylor=r.peak_bytes.get("cg_taylor"),
                             peak_taylorseer=r.peak_bytes.get("taylorseer"), cache_bytes=r.cache_bytes,
                             taylorseer_modules=r.taylorseer_modules, compile=r.compile_mode,
                             first_run_plain_s=r.first_run_s.get("plain"),
                             first_run_cg_taylor_s=r.first_run_s.get("cg_taylor")))
    atomic_write_csv(pd.DataFrame(rows), path)
