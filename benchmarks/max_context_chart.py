"""The maximum-context chart of notebook 04: the paper's bars (A100 80GB) next to each variant's
measured maximum from max_context results files, and a plain "not measured yet" for a variant
without one, so a missing result reads as missing rather than as zero."""

from __future__ import annotations

import plotly.graph_objects as go
import tables

VARIANTS = ["standard", "hf", "hf-offload", "hf-chunked", "mom-paper", "mom"]


def measured_maxima(reports: list[dict]) -> dict[str, tuple[int, str]]:
    """variant -> (maximum, card) from the searches of max_context reports (the latest file wins)."""
    found = {}
    for report in reports:
        card = report.get("provenance", {}).get("device", "?")
        for variant, search in report.get("searches", {}).items():
            if search.get("maximum") is not None:
                found[variant] = (search["maximum"], card)
    return found


def figure(anchors: dict, reports: list[dict]) -> go.Figure:
    """Horizontal bars: per variant, the paper's maximum for its method and the measured one."""
    measured, paper = measured_maxima(reports), anchors["max_context_tokens"]
    labels = [f"{v} ({'not measured yet' if v not in measured else measured[v][1]})" for v in VARIANTS]
    fig = go.Figure(layout=go.Layout(title="Maximum context (prefill + 32 greedy tokens)", xaxis_title="tokens",
                                     template="plotly_white", height=420, margin=dict(l=300), barmode="group"))
    fig.add_bar(y=labels, x=[paper.get(tables.PAPER_MAX.get(v, ""), 0) for v in VARIANTS], orientation="h",
                name=f"paper ({anchors['hardware']})", marker_color="#9e9e9e")
    fig.add_bar(y=labels, x=[measured.get(v, (0, ""))[0] for v in VARIANTS], orientation="h",
                name="measured here", marker_color="#1f77b4",
                text=[f"{measured[v][0]:,}" if v in measured else "not measured yet" for v in VARIANTS],
                textposition="outside")
    fig.update_layout(yaxis=dict(autorange="reversed"))
    return fig
