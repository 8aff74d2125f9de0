"""Live figures redraw in place, once per layer end at most and no faster than asked."""

from __future__ import annotations

import plotly.graph_objects as go

from mom.explore import plots
from mom.explore.live import LiveFigures, progress_of, update_in_place

from . import synthetic


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_redraws_only_at_layer_ends():
    live = LiveFigures(synthetic.weights(), 3, min_interval_s=0.0)
    live.start("test", new_tokens=3)
    events = synthetic.events(decode_steps=2)
    for event in events:
        live(event)
    layer_ends = sum(e.module == "layer" for e in events)
    assert live.redraws == 1 + layer_ends
    live.finish()
    expected = plots.layer_figure(events, synthetic.weights(), 3)
    assert [t.y for t in live.layer_widget.data] == [t.y for t in expected.data]
    assert len(live.timeline_widget.data[0].x) == len(events)


def test_throttled_by_time():
    clock = Clock()
    live = LiveFigures(synthetic.weights(), 3, min_interval_s=1.0, clock=clock)
    live.start()
    for event in synthetic.events(decode_steps=3):
        live(event)  # the clock stands still: no redraw after start()
    assert live.redraws == 1
    clock.now = 5.0
    live(synthetic.events()[1])
    assert live.redraws == 2


def test_progress_reaches_the_end():
    seen = []
    live = LiveFigures(synthetic.weights(), 3, min_interval_s=10.0, on_progress=lambda d, t: seen.append((d, t)))
    live.start(new_tokens=3)
    for event in synthetic.events(decode_steps=2):
        live(event)
    assert seen[0] == (1, 5) and seen[-1] == (5, 5)
    assert progress_of(synthetic.events()[0], 3, 3) == (0, 5)


def test_update_in_place_keeps_the_widget():
    widget = go.FigureWidget(plots.timeline_figure([]))
    figure = plots.timeline_figure(synthetic.events(), device_limit_bytes=64 << 20)
    update_in_place(widget, figure)
    assert widget.data[0].y == figure.data[0].y
    assert len(widget.layout.shapes) == 2
    assert widget.layout.yaxis.title.text == figure.layout.yaxis.title.text


def test_a_pinned_run_is_drawn_beside_the_live_one():
    live = LiveFigures(synthetic.weights(), 3, min_interval_s=0.0)
    live.start("compare", new_tokens=3, label="M=4", beside={"baseline": synthetic.events()})
    assert [a.text for a in live.layer_widget.layout.annotations][:2] == ["baseline", "M=4"]
    assert live.layer_widget.layout.yaxis2.matches == "y"
    for event in synthetic.events(kv_on_host=True):
        live(event)
    live.finish()
    names = [t.name for t in live.timeline_widget.data]
    assert names == ["M=4", "baseline"]
    assert live.timeline_widget.data[1].line.color == plots.config_color("baseline")
    live.start("alone", new_tokens=3, label="M=4")  # back to one panel: the layout follows
    assert "yaxis2" not in live.layer_widget.layout.to_plotly_json()
