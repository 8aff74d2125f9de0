"""The figures of a run on several cards: each card's colour, one timeline per card, each card's limit."""

from __future__ import annotations

import pytest

import mom
from mom.explore import per_device, plots


@pytest.fixture(scope="module")
def two_cards():
    return mom.predict("llama-3.2-1b", mom.MomConfig(mini_sequences=4, offload="auto"), context=8192, new_tokens=4,
                       gpus=2)


def test_each_layer_bar_is_outlined_in_its_cards_colour(two_cards):
    fig = plots.layer_figure(two_cards)
    weights = next(t for t in fig.data if t.name == "Weights")
    colours = dict(zip(weights.x, weights.marker.line.color, strict=True))
    first, second = per_device.device_color("cuda:0"), per_device.device_color("cuda:1")
    assert colours["embed"] == colours["L0"] == first and colours["L15"] == colours["head"] == second
    assert [a.text for a in fig.layout.annotations if a.text.startswith("cuda")] == ["cuda:0", "cuda:1"]


def test_one_timeline_per_card_and_each_cards_limit(two_cards):
    fig = plots.timeline_figure(two_cards, two_cards.device_limit_bytes)
    assert [t.name for t in fig.data] == ["cuda:0: allocated", "cuda:0: peak in call", "cuda:1: allocated",
                                          "cuda:1: peak in call"]
    assert fig.data[0].x[-1] == fig.data[2].x[-1]  # both span the run
    assert any("each card limit" in (a.text or "") for a in fig.layout.annotations)
    sweep = plots.sweep_figure([two_cards])
    assert {t.name for t in sweep.data} >= {f"{two_cards.label}: cuda:0", f"{two_cards.label}: cuda:1"}


def test_one_card_draws_as_before():
    one = mom.predict("llama-3.2-1b", mom.MomConfig(mini_sequences=4), context=4096, new_tokens=2)
    layers, timeline = plots.layer_figure(one), plots.timeline_figure(one, one.device_limit_bytes)
    assert all(t.marker.line.color is None for t in layers.data)
    assert not any((a.text or "").startswith("cuda") for a in layers.layout.annotations)
    assert [t.name for t in timeline.data][:4] == ["allocated", "peak in call", "KV on device", "KV on host"]


def test_the_explorer_spreads_a_prediction_over_its_gpus_count():
    from mom.explore import Explorer

    panel = Explorer("llama-3.2-1b", gpus=2)
    try:
        result = panel.run()
        assert result.gpus == 2 and set(result.peak_by_device) == {"cuda:0", "cuda:1"}
        assert "predicted on 2x H100-80GB" in panel.live.layer_widget.layout.title.text
        assert [t.name for t in panel.live.timeline_widget.data][0] == "cuda:0: allocated"
        panel.controls["gpus"].value = 1
        assert panel.run().gpus == 1  # the count is part of the run's key
    finally:
        panel.close()
    with pytest.raises(ValueError, match="gpus must be"):
        Explorer(gpus=0)
