"""The results section's pages for the GPU bench, the compile probe and the explorer's browser check, rendered from
tiny files of the shape their scripts write."""

from __future__ import annotations

import pandas as pd
import pytest

from cgtaylor.experiments.report_compile import compile_section
from cgtaylor.experiments.report_explorer import explorer_section
from cgtaylor.experiments.report_real_scale import full_steps_for, real_scale_sections

GIB = 2**30
BENCH_HEADER = ("# CG-Taylor at real scale (random weights)\n\n"
                "- Device: Test GPU (80 GiB), CUDA 12.8; dtype bfloat16; torch 9.9.9, diffusers 0.0.1.\n"
                "- Command: `python scripts/bench_real_scale.py --out x.md`; wall time 12 s.\n"
                "- Transformers built from their published configurations.\n")


def _run(model, plain_step, c, speedups, peaks=(1.5, 1.6, 2.5), cache_mib=96):
    common = dict(model=model, steps=50, params=11_901_408_320, plain_step_s=plain_step, full_step_s=plain_step * 1.02,
                  forecast_step_s=plain_step * c, c=c, peak_plain=peaks[0] * GIB, peak_cg_taylor=peaks[1] * GIB,
                  peak_taylorseer=peaks[2] * GIB, cache_bytes=cache_mib * 2**20, taylorseer_modules=171)
    rows = [dict(common, method="plain", full_steps=50, speedup=1.0, ideal=1.0, of_ideal=1.0)]
    for full_steps, speedup in speedups.items():
        ideal = 50 / (full_steps + (50 - full_steps) * c)
        rows.append(dict(common, method="cg_taylor", full_steps=full_steps, speedup=speedup, ideal=ideal,
                         of_ideal=speedup / ideal))
    return rows


def _bench(folder, stem, rows):
    pd.DataFrame(rows).to_csv(folder / f"{stem}.csv", index=False)
    (folder / f"{stem}.md").write_text(BENCH_HEADER)


def test_real_scale_page_formats_step_cost_speedups_ideal_and_memory(tmp_path):
    _bench(tmp_path, "real_scale", _run("flux1-dev", 0.1731, 0.044, {23: 2.03, 15: 2.98}, peaks=(22.66, 22.76, 26.69)))
    page = real_scale_sections(tmp_path)[0]
    assert "- Device: Test GPU (80 GiB), CUDA 12.8; dtype bfloat16; torch 9.9.9, diffusers 0.0.1." in page
    assert "- Command: `python scripts/bench_real_scale.py --out x.md`; wall time 12 s." in page
    s_2x, s_3x = full_steps_for(2.0, 50, 0.044), full_steps_for(3.0, 50, 0.044)
    assert f"| flux1-dev | 11901 | 173.1 | 176.6 | 7.62 | 0.044 | {s_2x:.1f} | {s_3x:.1f} |" in page
    ideal_23, ideal_15 = 50 / (23 + 27 * 0.044), 50 / (15 + 35 * 0.044)
    assert f"| flux1-dev | 2.03 ({2.03 / ideal_23:.2f}) | 2.98 ({2.98 / ideal_15:.2f}) |" in page
    low, high = sorted([f"{2.03 / ideal_23:.2f}", f"{2.98 / ideal_15:.2f}"])
    assert f"- flux1-dev: measured / ideal {low}-{high} over 2 forced schedules" in page
    assert "| flux1-dev | 22.66 | 22.76 | 26.69 | 0.10 | 4.03 | 96 | 171 |" in page


def test_ideal_full_steps_invert_the_ideal_speedup():
    full_steps = full_steps_for(3.0, 50, 0.05)
    assert 50 / (full_steps + (50 - full_steps) * 0.05) == pytest.approx(3.0)


def test_repeated_runs_are_labelled_and_their_spread_listed(tmp_path):
    _bench(tmp_path, "real_scale", _run("dit-xl-2-256", 0.0565, 0.10, {23: 2.75}))
    _bench(tmp_path, "real_scale_dit_repeat", _run("dit-xl-2-256", 0.0411, 0.09, {23: 1.89})
           + _run("dit-xl-2-256", 0.0362, 0.08, {23: 2.22}))
    text = "\n".join(real_scale_sections(tmp_path))
    assert "| dit-xl-2-256, run 1 | 750" not in text  # params come from the fixture, not a constant
    assert "| dit-xl-2-256, run 1 | 11901 | 41.1 |" in text and "| dit-xl-2-256, run 2 | 11901 | 36.2 |" in text
    assert "- plain step over 3 runs: 56.5, 41.1, 36.2 ms" in text
    assert "- speedup at S = 23: 2.75, 1.89, 2.22 (ideal " in text


def test_absent_files_leave_a_line_naming_them(tmp_path):
    sections = real_scale_sections(tmp_path)
    assert "Not in this folder: `results/real_scale.csv`, `results/real_scale.md` are missing" in sections[0]
    assert "`results/compile_probe.csv`, `results/compile_probe.md` are missing" in compile_section(tmp_path)
    assert "`results/explorer_browser.md` is missing" in explorer_section(tmp_path)


def test_a_bench_file_without_an_expected_column_is_refused_by_name(tmp_path):
    rows = _run("flux1-dev", 0.17, 0.04, {23: 2.0})
    _bench(tmp_path, "real_scale", [{k: v for k, v in row.items() if k != "of_ideal"} for row in rows])
    with pytest.raises(ValueError, match="of_ideal"):
        real_scale_sections(tmp_path)


def _probe_row(model, mode, graphs, same, diff, recompiles=0):
    return {"model": model, "mode": mode, "backend": "inductor", "steps": 8, "first compiled generation (s)": 33.6,
            "eager generation (s)": 0.283, "compiled generation (s)": 0.114, "graphs run per computed step": graphs[0],
            "graphs run per forecast step": graphs[1], "graph breaks while tracing": 5, "graphs compiled": 5,
            "recompiles after first generation": recompiles, "host syncs per computed step": "0/1",
            "host syncs per forecast step": 1, "max abs(compiled - eager)": diff, "same decisions": same}


def test_compile_page_formats_the_probe_and_counts_from_it(tmp_path):
    rows = [_probe_row("dit-xl-2-256", "regional", (4, 1), True, 2.0e-6),
            _probe_row("flux1-dev", "full", (8, 8), False, 1.7e-5, recompiles=2)]
    pd.DataFrame(rows).to_csv(tmp_path / "compile_probe.csv", index=False)
    (tmp_path / "compile_probe.md").write_text("# probe\n\n- Machine: x86_64 CPU, 1 thread(s); torch 9.9.9.\n"
                                               "- Command: `python scripts/probe_compile.py --out y.md`.\n")
    page = compile_section(tmp_path)
    assert "- Machine: x86_64 CPU, 1 thread(s); torch 9.9.9." in page
    assert "- Command: `python scripts/probe_compile.py --out y.md`." in page
    assert "| dit-xl-2-256 | regional | inductor | 8 | 2.0e-06 | yes | 0 | 4 / 1 | 5 | 0/1 / 1 | 34 | 0.283 / 0.114 |" in page
    assert "| flux1-dev | full | inductor | 8 | 1.7e-05 | no | 2 | 8 / 8 |" in page
    assert "Same gate decisions as eager in 1 of 2 cases; largest max abs(compiled - eager) of the final latents 1.7e-05" \
        in page
    assert "all cases together: 2." in page and "fewer compiled graphs than a computed step in 1 of 2 cases" in page


def test_explorer_page_quotes_the_bullets_under_the_titled_command(tmp_path):
    lines = ["- Date: 2026-01-01 00:00 UTC; x86_64, 2 CPU cores.", "- Threshold slider dragged 1 times: redrawn 8.7 s later.",
             "  - 4.36x fewer FLOPs, PSNR 33.2 dB against full compute"]
    path = tmp_path / "explorer_browser.md"
    path.write_text("# The live gate explorer (`scripts/check_explorer_browser.py`)\n\n" + "\n".join(lines) + "\n")
    page = explorer_section(tmp_path)
    assert "Written by `python scripts/check_explorer_browser.py`" in page and "\n".join(lines) in page
    path.write_text("# untitled\n\n" + "\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="names no `scripts/"):
        explorer_section(tmp_path)


def test_speed_drift_counts_the_cells_that_left_the_tolerance_on_test():
    from cgtaylor.experiments.drift import speed_drift

    rows = [  # group, target, selection speedup, test speedup, on target at selection
        ("gate", 2.0, 1.93, 1.72, True), ("gate", 3.0, 3.07, 3.00, True), ("gate", 3.0, 2.5, 2.0, False),
        ("budget", 2.0, 2.00, 2.00, True), ("fora", 2.0, 1.92, 1.92, True)]
    df = pd.DataFrame([dict(group=g, role="peer" if g == "fora" else "variant", target=t, selection_speedup=s,
                            test_speedup=ts, on_target=o, tolerance=0.04) for g, t, s, ts, o in rows])
    table = speed_drift(df).set_index("group")
    assert list(table.index) == ["gate", "budget", "fora"]  # the largest drift first, then by name
    assert table.loc["gate", "cells"] == 2 and table.loc["gate", "left_tolerance"] == 1  # 1.72x is 14% off 2x
    assert table.loc["gate", "largest_drift_pct"] == pytest.approx(10.9)
    assert table.loc["budget", "left_tolerance"] == 0 and table.loc["budget", "largest_drift_pct"] == 0
    assert table.loc["fora", "role"] == "peer"
