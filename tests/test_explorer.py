"""The live gate explorer: FLOPs from decisions equal counted FLOPs, the reference is computed once, widgets redraw."""

from __future__ import annotations

import pytest
import torch

from cgtaylor import zoo
from cgtaylor.analysis import run_gate
from cgtaylor.analysis.explorer import ExplorerSettings, GateExplorer

STEPS = 6


@pytest.fixture(scope="module")
def explorer():
    return GateExplorer(num_samples=2, num_inference_steps=STEPS, load=zoo.tiny)


@pytest.mark.parametrize("name", zoo.MODEL_NAMES)
def test_flops_from_the_decisions_equal_counted_flops(explorer, name):
    settings = ExplorerSettings(model_name=name, threshold=0.2, warmup_steps=1)
    live = explorer.run(settings).gate
    counted = run_gate(explorer.model(name), explorer.conditions(settings), settings.config(STEPS),
                       num_inference_steps=STEPS)
    assert live.full_flops == counted.full_flops
    assert live.accelerated_flops == counted.accelerated_flops < counted.full_flops
    assert torch.equal(live.accelerated, counted.accelerated)


def test_a_change_of_settings_reuses_the_reference(explorer, monkeypatch):
    first = explorer.run(ExplorerSettings(threshold=0.01, warmup_steps=1))
    model = explorer.model("dit-digits")
    calls = []
    monkeypatch.setattr(type(model), "__call__", lambda self, *a, **k: calls.append(a) or first.gate.full)
    explorer.run(ExplorerSettings(threshold=0.5, warmup_steps=1))
    assert len(calls) == 1, "a change of the threshold ran more than the accelerated generation"


def test_the_condition_and_the_read_out(explorer):
    run = explorer.run(ExplorerSettings(model_name="dit-digits", condition=7, threshold=1e6, warmup_steps=1))
    assert explorer.conditions(run.settings) == [7, 7]
    assert f"/{STEPS} steps computed" in run.readout() and "x fewer FLOPs" in run.readout()


def test_widgets_redraw_on_every_change(explorer):
    pytest.importorskip("ipywidgets")
    from cgtaylor.analysis.explorer_ui import explorer_ui

    box = explorer_ui(explorer, ExplorerSettings(threshold=0.01, warmup_steps=1))
    widgets = {cls: w for w in _walk(box) for cls in getattr(w, "_dom_classes", ()) if cls.startswith("cgtaylor-")}
    timeline, readout = bytes(widgets["cgtaylor-timeline"].value), widgets["cgtaylor-readout"].value
    assert timeline.startswith(b"\x89PNG") and "steps computed" in readout
    widgets["cgtaylor-threshold"].value = 1.0
    assert bytes(widgets["cgtaylor-timeline"].value) != timeline and widgets["cgtaylor-readout"].value != readout
    widgets["cgtaylor-forecast-budget"].value = 0.5  # half of the 6 steps forecast, whatever the threshold
    assert "3/6 steps computed" in widgets["cgtaylor-readout"].value, widgets["cgtaylor-readout"].value
    widgets["cgtaylor-model-name"].value = "flux-digits"
    assert all(isinstance(c, str) for c in widgets["cgtaylor-condition"].options)
    readout = widgets["cgtaylor-readout"].value
    assert "error" not in readout and "steps computed" in readout, readout


def _walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _walk(child)


def test_the_timeline_draws_the_threshold_a_budget_moved(explorer):
    import matplotlib.pyplot as plt

    from cgtaylor.analysis import plots

    plain = explorer.run(ExplorerSettings(threshold=0.05, warmup_steps=1)).gate.steps
    budgeted = explorer.run(ExplorerSettings(threshold=0.05, warmup_steps=1, forecast_budget=0.5)).gate.steps
    measured = budgeted.dropna(subset=["first_block_error"])
    assert plots.moving_threshold(plain.dropna(subset=["first_block_error"]), 0.05) is None
    moved = plots.moving_threshold(measured[measured.context == measured.context.iloc[0]], 0.05)
    assert moved is not None and moved.notna().any()
    ax = plots.gate_timeline(budgeted, 0.05)
    assert any("threshold at each step" in line.get_label() for line in ax.get_lines())
    plt.close(ax.figure)
