"""Live figures: FigureWidgets fed by recorder events, redrawn in place and throttled.

The pure builders of plots.py stay the only drawing code: a redraw builds the figure from
the events seen so far and copies its data into the widget inside one `batch_update`, so the
browser gets one message per redraw and the widget (its zoom, its place on the page) is kept.
Redraws happen only when a decoder layer ends and at most every `min_interval_s`, so a
32-layer, 32-token run sends a few dozen messages, not thousands; `finish()` draws the end.

During a Compare the finished baseline is "pinned" (`start(..., beside=...)`): the layer figure
shows it and the live run side by side on one y scale, and the timeline draws both. Runs are
made on a background thread (explorer.py); every redraw is one comm message, which ipykernel
sends from any thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import plotly.graph_objects as go
from torch import nn

from ..memory.events import MemoryEvent
from . import plots


def model_weights_by_layer(model: nn.Module) -> dict[str, int]:
    """Bytes of parameters and buffers per layer-figure position: 'embed', 'L0' ... 'head'.

    Each storage counts once (tied embeddings under 'embed'); what belongs to no position
    (rotary tables) goes to 'embed', so the values add up to the profile's weights_bytes.
    A model on the meta device (a prediction's, simulate/fake.py) counts the bytes its weights
    would take.
    """
    from ..engine import families
    from ..memory.sizes import weight_bytes

    meta = next(model.parameters()).device.type == "meta"
    seen: set[int] = set()  # one set across positions: a tied weight counts at its first one
    out = {"embed": weight_bytes(families.embedding(model), seen, meta)}
    for index, layer in enumerate(families.decoder_layers(model)):
        out[f"L{index}"] = weight_bytes(layer, seen, meta)
    out["head"] = weight_bytes(families.final_norm(model), seen, meta) + weight_bytes(families.lm_head(model), seen, meta)
    out["embed"] += weight_bytes(model, meta=meta) - sum(out.values())
    return out


_TRACE_KEYS = ("x", "y", "base", "text", "marker", "line", "showlegend")
_AXIS_KEYS = ("title", "type", "tickvals", "ticktext", "categoryarray", "range", "autorange")


def figure_widget(figure: go.Figure) -> go.FigureWidget:
    """A FigureWidget that follows window resizes (see `fit_width` for its first width)."""
    widget = go.FigureWidget(figure)
    widget._config = {**(widget._config or {}), "responsive": True, "displaylogo": False}
    return widget


def fit_width(widgets: Sequence[go.FigureWidget], after_s: Sequence[float] = (1.0, 3.0)) -> None:
    """Make displayed FigureWidgets as wide as their container, a moment after display.

    The browser draws a new FigureWidget before it is attached to the page, so plotly's
    autosize measures nothing and keeps its 700 px default (a third of a wide notebook left
    empty), and the widget does not tell the kernel when it is attached. Turning autosize off
    and on again from the kernel makes plotly measure the container; it is done on a timer
    (the kernel may already be running the next cell) and changes nothing else.
    """
    def toggle() -> None:
        for widget in widgets:
            if widget.comm is None:  # closed meanwhile
                continue
            widget.layout.autosize = False  # two messages: plotly sees the switch back on
            widget.layout.autosize = True

    for delay in after_s:
        timer = threading.Timer(delay, toggle)
        timer.daemon = True
        timer.start()


def _axes(layout) -> list[str]:
    return sorted(k for k in layout.to_plotly_json() if k.startswith(("xaxis", "yaxis")))


def _shape(figure) -> list:
    return [(t.name, t.type, getattr(t, "xaxis", None)) for t in figure.data]


def update_in_place(widget: go.FigureWidget, figure: go.Figure) -> None:
    """Make `widget` show `figure` in one message: only the trace arrays and the few layout parts
    that change between redraws are sent (copying the whole layout, template included, costs
    a quarter second a redraw). A change of structure (other traces, other panels) sends all."""
    mine_shape, their_shape = _shape(widget), _shape(figure)
    if _axes(widget.layout) != _axes(figure.layout) or their_shape[:len(mine_shape)] != mine_shape:
        with widget.batch_update():  # another structure: the browser briefly draws an empty figure
            widget.data = []
            widget.add_traces(list(figure.data))
            widget.layout = figure.layout
        return
    if len(their_shape) > len(mine_shape):  # new traces at the end (a new configuration): add only them
        widget.add_traces(list(figure.data[len(mine_shape):]))
    with widget.batch_update():
        for mine, theirs in zip(widget.data, figure.data, strict=True):
            for key in _TRACE_KEYS:
                if key in theirs and mine[key] != theirs[key]:
                    mine[key] = theirs[key]
        layout = widget.layout
        for part in ("title", "shapes", "annotations"):
            if layout[part] != figure.layout[part]:
                layout[part] = figure.layout[part]
        for axis in _axes(figure.layout):
            for key in _AXIS_KEYS:
                if layout[axis][key] != figure.layout[axis][key]:
                    layout[axis][key] = figure.layout[axis][key]


def progress_of(event: MemoryEvent, layers: int, new_tokens: int) -> tuple[int, int]:
    """(done, total) units of a run: one per prefill layer, one per decode step."""
    total = layers + max(new_tokens - 1, 1)
    if event.phase == "prefill":
        done = event.layer + 1 if event.layer is not None and event.module == "layer" else 0
    else:
        done = layers + event.step
    return min(done, total), total


class LiveFigures:
    """The per-layer and timeline FigureWidgets of one run, fed event by event.

    Use an instance as a recorder listener (it is callable with a MemoryEvent), call `start()`
    before a run and `finish()` after it.

    Args:
        weights_by_layer: bytes of parameters per position (see `model_weights_by_layer`).
        layers: decoder layer count, so every layer has a bar before it runs.
        device_limit_bytes: drawn on the timeline when given.
        min_interval_s: the least time between two redraws (0: every layer end).
        on_progress: called with (done, total) on every layer end, unthrottled.
        clock: seconds, monotonic; replaceable in tests.
    """

    def __init__(self, weights_by_layer: dict[str, int], layers: int, device_limit_bytes: int | None = None,
                 min_interval_s: float = 0.25, on_progress: Callable[[int, int], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.weights_by_layer = dict(weights_by_layer)
        self.layers = layers
        self.device_limit_bytes = device_limit_bytes
        self.min_interval_s = min_interval_s
        self.on_progress = on_progress
        self.clock = clock
        self.events: list[MemoryEvent] = []
        self.new_tokens = 1
        self.title = ""
        self.label: str | None = None
        self.beside: dict[str, Sequence[MemoryEvent]] = {}
        self.redraws = 0
        self._last_draw = float("-inf")
        self.layer_widget = figure_widget(self.layer_figure())
        self.timeline_widget = figure_widget(self.timeline_figure())

    def layer_figure(self) -> go.Figure:
        title = f"Memory per layer{': ' + self.title if self.title else ''}"
        if self.beside:
            runs = {**self.beside, (self.label or "this run"): self.events}
            return plots.compare_layer_figure(runs, self.weights_by_layer, self.layers, title=title)
        return plots.layer_figure(self.events, self.weights_by_layer, self.layers, title=title)

    def timeline_figure(self) -> go.Figure:
        title = f"Allocated memory{': ' + self.title if self.title else ''}"
        return plots.timeline_figure(self.events, self.device_limit_bytes, title=title, label=self.label,
                                     others=self.beside or None)

    def start(self, title: str = "", new_tokens: int = 1, device_limit_bytes: int | None = None,
              label: str | None = None, beside: dict[str, Sequence[MemoryEvent]] | None = None) -> None:
        """Forget the previous run's events and draw empty figures.

        Args:
            title: the figures' title after "Memory per layer: " / "Allocated memory: ".
            new_tokens: of the run, for progress.
            device_limit_bytes: drawn on the timeline.
            label: the run's configuration label (its colour and panel title).
            beside: finished runs (label -> events) drawn next to this one on the same scale.
        """
        self.events = []
        self.title = title
        self.label = label
        self.beside = dict(beside or {})
        self.new_tokens = new_tokens
        self.device_limit_bytes = device_limit_bytes
        self.redraw()

    def __call__(self, event: MemoryEvent) -> None:
        self.events.append(event)
        if event.kind == "oom":
            self.redraw()  # the last event of a run that hit the wall: draw it at once
            return
        if event.module != "layer":
            return
        if self.on_progress is not None:
            self.on_progress(*progress_of(event, self.layers, self.new_tokens))
        if self.clock() - self._last_draw >= self.min_interval_s:
            self.redraw()

    def show(self, events: Sequence[MemoryEvent], title: str = "", label: str | None = None,
             beside: dict[str, Sequence[MemoryEvent]] | None = None) -> None:
        """Draw a finished run's events at once (a run made without live listeners)."""
        self.events = list(events)
        self.title = title
        self.label = label
        self.beside = dict(beside or {})
        self.redraw()

    def finish(self) -> None:
        self.redraw()

    def redraw(self) -> None:
        update_in_place(self.layer_widget, self.layer_figure())
        update_in_place(self.timeline_widget, self.timeline_figure())
        self.redraws += 1
        self._last_draw = self.clock()
