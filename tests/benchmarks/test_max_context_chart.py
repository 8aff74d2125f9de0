"""Notebook 04's maximum-context chart: the paper's bars, each measured maximum with mom.predict's
beside it where the search started there, a passing run as a lower bound, and 'not measured yet'."""

from __future__ import annotations

import max_context_chart
import tables


def test_the_chart_says_what_each_bar_is():
    hf = dict(provenance=dict(device="NVIDIA H100 80GB HBM3"),
              searches={"hf": dict(maximum=221184, failing_above=229376, predicted=229376)})
    paper = dict(provenance=dict(device="NVIDIA H100 80GB HBM3"), searches={"mom-paper": dict(maximum=475136)})
    fig = max_context_chart.figure(tables.load_anchors(), [hf, paper], {"mom": (1081344, "NVIDIA H100 80GB HBM3")})
    paper_bars, measured, passing = fig.data
    rows = dict(zip(measured.y, measured.text))
    assert rows["hf (NVIDIA H100 80GB HBM3)"] == "221,184 (mom.predict: 229,376)"
    assert rows["mom-paper (NVIDIA H100 80GB HBM3)"] == "475,136"  # no prediction recorded: none shown
    assert rows["standard (not measured yet)"] == "not measured yet"
    assert dict(zip(passing.y, passing.text))["mom (NVIDIA H100 80GB HBM3, a passing run)"] == ">= 1,081,344"
    assert max(paper_bars.x) > 0 and list(measured.x)[list(measured.y).index("standard (not measured yet)")] == 0
