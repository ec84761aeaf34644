"""The live gate explorer in JupyterLab: ipywidgets for the model, the condition and the gate's settings; every
change re-runs :class:`.explorer.GateExplorer` and redraws the timeline, the images and the read-out."""

from __future__ import annotations

import html
import io
import time

from .. import zoo
from ..config import FORECAST_MODES, MAX_ORDER
from . import plots
from .explorer import ExplorerRun, ExplorerSettings, GateExplorer


def widgets_available() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def figure_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def render(run: ExplorerRun) -> tuple[bytes, bytes]:
    """PNG bytes of the run's timeline and of its full / accelerated / difference images."""
    name, threshold = run.settings.model_name, run.settings.threshold
    timeline = plots.gate_timeline(run.gate.steps, threshold,
                                   title=f"{name}: first-block forecast error and the gate's decisions")
    images = plots.side_by_side(run.gate.full, run.gate.accelerated, title=f"{name}: {run.readout()}")
    return figure_png(timeline.figure), figure_png(images)


def _controls(settings: ExplorerSettings, conditions: list) -> dict:
    import ipywidgets as w

    slider = dict(continuous_update=False, style={"description_width": "9em"}, layout=w.Layout(width="28em"))
    condition = settings.condition if settings.condition is not None else conditions[0]
    conditions = conditions if condition in conditions else [condition, *conditions]
    return {
        "model_name": w.Dropdown(options=list(zoo.MODEL_NAMES), value=settings.model_name, description="model",
                                 style=slider["style"]),
        "condition": w.Dropdown(options=conditions, value=condition,
                                description="condition", style=slider["style"], layout=w.Layout(width="28em")),
        "threshold": w.FloatLogSlider(value=settings.threshold, base=10, min=-3, max=0, step=0.05,
                                      readout_format=".3g", description="threshold", **slider),
        "warmup_steps": w.IntSlider(value=settings.warmup_steps, min=0, max=12, description="warm-up steps",
                                    **slider),
        "first_block_order": w.IntSlider(value=settings.first_block_order, min=0, max=MAX_ORDER,
                                         description="first-block order", **slider),
        "last_block_order": w.IntSlider(value=settings.last_block_order, min=0, max=MAX_ORDER,
                                        description="last-block order", **slider),
        "forecast": w.ToggleButtons(options=list(FORECAST_MODES), value=settings.forecast, description="forecast",
                                    style=slider["style"]),
        "forecast_budget": w.FloatSlider(value=settings.forecast_budget, min=0.0, max=0.9, step=0.02,
                                         readout_format=".2f", description="budget (0: off)", **slider),
    }


def explorer_ui(explorer: GateExplorer, settings: ExplorerSettings):
    """The explorer as an ipywidgets box, drawn for ``settings`` and redrawn on every change of a control."""
    import ipywidgets as w

    controls = _controls(settings, explorer.condition_choices(settings.model_name))
    readout = w.HTML()
    timeline, images = w.Image(format="png"), w.Image(format="png")
    busy = []  # set while the condition list follows a model change, so that change does not run twice

    def update(change=None) -> None:
        if busy:
            return
        readout.value = "<i>generating...</i>"
        start = time.perf_counter()
        try:
            run = explorer.run(ExplorerSettings(**{name: c.value for name, c in controls.items()}))
            timeline.value, images.value = render(run)
            readout.value = (f"<b>{html.escape(run.readout())}</b>; generated in {run.seconds:.1f} s, drawn "
                             f"{time.perf_counter() - start:.1f} s after the change")
        except Exception as error:  # shown in the read-out: the explorer stays usable
            readout.value = f"<b>error:</b> {html.escape(f'{type(error).__name__}: {error}')}"

    def model_changed(change) -> None:
        busy.append(True)
        try:
            choices = explorer.condition_choices(change["new"])
            controls["condition"].options = choices
            controls["condition"].value = choices[0]
        finally:
            busy.clear()
        update()

    for name, control in controls.items():
        control.observe(model_changed if name == "model_name" else update, names="value")
        control.add_class(f"cgtaylor-{name.replace('_', '-')}")
    timeline.add_class("cgtaylor-timeline")
    images.add_class("cgtaylor-images")
    readout.add_class("cgtaylor-readout")
    update()
    box = w.VBox([w.HBox([w.VBox(list(controls.values())[:4]), w.VBox(list(controls.values())[4:])]), readout,
                  timeline, images])
    box.add_class("cgtaylor-explorer")
    return box
