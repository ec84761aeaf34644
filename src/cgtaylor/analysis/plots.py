"""Figures for the notebooks: every axis labelled, with units."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg") if matplotlib.get_backend().lower() == "agg" else None
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from .correlation import INDICATORS, TARGET, correlation_with_ci, drop_warmup


def save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    return path


def moving_threshold(measured: pd.DataFrame, threshold: float):
    """The threshold each measured step was compared with, where a forecast budget or a threshold schedule moved it
    off ``threshold`` (None where it never moved); zero and infinite values (a budget spent or forcing) are left out of
    the log-scale axis as NaN."""
    if "threshold" not in measured or measured["threshold"].isna().all():
        return None
    values = measured["threshold"].astype(float)
    if np.allclose(values.fillna(threshold), threshold):
        return None
    return values.where(np.isfinite(values) & (values > 0))


def gate_timeline(steps: pd.DataFrame, threshold: float, ax=None, title: str | None = None, extra_thresholds=None):
    """The first-block forecast error per step against the threshold, each step marked full or forecast."""
    ax = ax or plt.subplots(figsize=(9, 3.4))[1]
    leader = steps[steps.context == steps.context.iloc[0]]
    measured = leader.dropna(subset=["first_block_error"])
    ax.plot(measured.step, measured.first_block_error, color="0.6", lw=1, zorder=1)
    for computed, colour, label in ((True, "tab:red", "computed in full"), (False, "tab:green", "forecast (blocks 2..L skipped)")):
        rows = measured[measured.computed == computed]
        ax.scatter(rows.step, rows.first_block_error, c=colour, s=20, label=label, zorder=2)
    unmeasured = leader[leader.first_block_error.isna()]
    for step in unmeasured.step:
        ax.axvspan(step - 0.5, step + 0.5, color="tab:red", alpha=0.12, lw=0)
    ax.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
    moved = moving_threshold(measured, threshold)
    if moved is not None:
        ax.step(measured.step, moved, where="mid", color="k", lw=1, alpha=0.6,
                label="threshold at each step\n(budget pace or schedule)")
    for value, label in (extra_thresholds or {}).items():
        ax.axhline(value, color="tab:purple", ls=":", lw=1.2, label=label)
    ax.set_xlabel("sampling step (index); shaded: warm-up / first step, computed without a gate test")
    ax.set_ylabel("first-block forecast error\n(relative L1, unitless)")
    ax.set_yscale("log")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        ax.set_title(title)
    return ax


def _as_grid(images: torch.Tensor) -> np.ndarray:
    """(B,C,H,W) in [0,1] -> samples side by side; (B,C,F,H,W) -> one row per sample, frames left to right."""
    x = images.detach().float().cpu()
    if x.ndim == 5:
        rows = [torch.cat(list(video.permute(1, 0, 2, 3)), dim=-1) for video in x]  # (C, H, F*W) each
        x = torch.cat(rows, dim=-2)
    else:
        x = torch.cat(list(x), dim=-1)
    x = x.permute(1, 2, 0).numpy()
    return x[..., 0] if x.shape[-1] == 1 else x


def side_by_side(full: torch.Tensor, accelerated: torch.Tensor, title: str = ""):
    """Full output, accelerated output and their absolute difference: one above the other when the samples make
    a wide strip (several images, a video's frames), else side by side (one or two images)."""
    difference = (accelerated.float() - full.float()).abs()
    grids = [_as_grid(full), _as_grid(accelerated), _as_grid(difference)]
    height, width = grids[0].shape[:2]
    fig_width = 10
    if width >= 3 * height:
        fig, axes = plt.subplots(3, 1, figsize=(fig_width, 3 * fig_width * height / width + 1.2))
    else:
        fig, axes = plt.subplots(1, 3, figsize=(fig_width, fig_width / 3 * height / width + 1.2))
    for ax, grid, label in zip(axes, grids, ["full compute", "CG-Taylor", "|difference| (0-1 intensity scale)"]):
        is_difference = label.startswith("|")
        shown = ax.imshow(grid if grid.ndim == 2 or not is_difference else grid.mean(-1),
                          cmap="gray" if grid.ndim == 2 else ("magma" if is_difference else None),
                          vmin=0, vmax=None if is_difference else 1)
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if is_difference:
            fig.colorbar(shown, ax=ax, fraction=0.025, pad=0.01, label="intensity difference")
    fig.suptitle(title)
    return fig


def error_scatter(records: pd.DataFrame, warmup_steps: int, indicator: str = "first_block_error"):
    """Per model: indicator against the last block's forecast error, with regression line and r / rho."""
    data = drop_warmup(records, warmup_steps).dropna(subset=[indicator, TARGET])
    models = list(dict.fromkeys(data.model))
    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 4.2), squeeze=False)
    for ax, model_name in zip(axes[0], models):
        frame = data[data.model == model_name]
        sns.regplot(x=frame[indicator], y=frame[TARGET], ax=ax, scatter_kws=dict(s=8, alpha=0.35), line_kws=dict(color="k"))
        c = correlation_with_ci(frame[indicator], frame[TARGET])
        ax.set_title(
            f"{model_name}\nPearson r={c['pearson_r']:.2f} [{c['pearson_low']:.2f}, {c['pearson_high']:.2f}], "
            f"Spearman ρ={c['spearman_rho']:.2f} [{c['spearman_low']:.2f}, {c['spearman_high']:.2f}]",
            fontsize=8,
        )
        ax.set_xlabel(f"{INDICATORS[indicator]}\n(relative L1, unitless)", fontsize=8)
        ax.set_ylabel("last-block forecast error (relative L1, unitless)", fontsize=8)
    fig.tight_layout()
    return fig


def pareto(table: pd.DataFrame, title: str, x: str = "flops_speedup", y: str = "psnr"):
    """PSNR against FLOPs speedup for every method over its sweep."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    data = table[table.get("valid", True) == True].sort_values(x)  # noqa: E712
    sns.lineplot(data=data, x=x, y=y, hue="method", style="method", markers=True, dashes=False, ax=ax, sort=True)
    ax.set_xlabel("FLOPs speedup over full compute (x)")
    ax.set_ylabel("PSNR vs full-compute output (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig


def ablation_panels(table: pd.DataFrame, x: str = "flops_speedup", y: str = "psnr"):
    """One panel per ablation group: fidelity against FLOPs speedup, a marker per setting."""
    data = table[(table.method != "full") & table["valid"].astype(bool)]
    groups = list(dict.fromkeys(data.group))
    columns = min(3, max(1, len(groups)))
    rows = math.ceil(len(groups) / columns) if groups else 1
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.9 * rows), squeeze=False)
    for ax, group in zip(axes.flat, groups):
        frame = data[data.group == group]
        sns.scatterplot(data=frame, x=x, y=y, hue="setting", style="setting", s=60, ax=ax)
        ax.set_title(group)
        ax.set_xlabel("FLOPs speedup over full compute (x)")
        ax.set_ylabel("PSNR vs full-compute output (dB)")
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig
