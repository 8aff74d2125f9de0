"""Live figures: FigureWidgets fed by recorder events, redrawn in place and throttled.

The pure builders of plots.py stay the only drawing code: a redraw builds the figure from
the events seen so far and copies its data into the widget inside one `batch_update`, so the
browser gets one message per redraw and the widget (its zoom, its place on the page) is kept.
Redraws happen only when a decoder layer ends and at most every `min_interval_s`, so a
32-layer, 32-token run sends a few dozen messages, not thousands; `finish()` draws the end.
"""

from __future__ import annotations

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
    """
    from ..engine import families
    from ..memory.profile import weight_bytes

    seen: set[int] = set()

    def size(module: nn.Module) -> int:
        total = 0
        for tensor in (*module.parameters(), *module.buffers()):
            storage = tensor.untyped_storage()
            if tensor.device.type != "meta" and storage._cdata not in seen:
                seen.add(storage._cdata)
                total += storage.nbytes()
        return total

    out = {"embed": size(families.embedding(model))}
    for index, layer in enumerate(families.decoder_layers(model)):
        out[f"L{index}"] = size(layer)
    out["head"] = size(families.final_norm(model)) + size(families.lm_head(model))
    out["embed"] += weight_bytes(model) - sum(out.values())
    return out


_TRACE_KEYS = ("x", "y", "base", "text")
_AXIS_KEYS = ("title", "type", "tickvals", "ticktext", "categoryarray")


def update_in_place(widget: go.FigureWidget, figure: go.Figure) -> None:
    """Make `widget` show `figure` in one message: only the trace arrays and the few layout parts
    that change between redraws are sent (copying the whole layout, template included, costs
    a quarter second a redraw)."""
    with widget.batch_update():
        if [t.name for t in widget.data] != [t.name for t in figure.data]:
            widget.data = []
            widget.add_traces(list(figure.data))
        else:
            for mine, theirs in zip(widget.data, figure.data, strict=True):
                for key in _TRACE_KEYS:
                    if key in theirs and mine[key] != theirs[key]:
                        mine[key] = theirs[key]
        layout = widget.layout
        for part in ("title", "shapes", "annotations"):
            if layout[part] != figure.layout[part]:
                layout[part] = figure.layout[part]
        for axis in ("xaxis", "yaxis"):
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
        self.redraws = 0
        self._last_draw = float("-inf")
        self.layer_widget = go.FigureWidget(self.layer_figure())
        self.timeline_widget = go.FigureWidget(self.timeline_figure())

    def layer_figure(self) -> go.Figure:
        title = f"Memory per layer{': ' + self.title if self.title else ''}"
        return plots.layer_figure(self.events, self.weights_by_layer, self.layers, title=title)

    def timeline_figure(self) -> go.Figure:
        title = f"Allocated memory{': ' + self.title if self.title else ''}"
        return plots.timeline_figure(self.events, self.device_limit_bytes, title=title)

    def start(self, title: str = "", new_tokens: int = 1, device_limit_bytes: int | None = None) -> None:
        """Forget the previous run's events and draw empty figures."""
        self.events = []
        self.title = title
        self.new_tokens = new_tokens
        self.device_limit_bytes = device_limit_bytes
        self.redraw()

    def __call__(self, event: MemoryEvent) -> None:
        self.events.append(event)
        if event.module != "layer":
            return
        if self.on_progress is not None:
            self.on_progress(*progress_of(event, self.layers, self.new_tokens))
        if self.clock() - self._last_draw >= self.min_interval_s:
            self.redraw()

    def show(self, events: Sequence[MemoryEvent], title: str = "") -> None:
        """Draw a finished run's events at once (a run made without live listeners)."""
        self.events = list(events)
        self.title = title
        self.redraw()

    def finish(self) -> None:
        self.redraw()

    def redraw(self) -> None:
        update_in_place(self.layer_widget, self.layer_figure())
        update_in_place(self.timeline_widget, self.timeline_figure())
        self.redraws += 1
        self._last_draw = self.clock()
