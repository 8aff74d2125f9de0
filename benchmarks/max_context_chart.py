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


def predicted_maxima(reports: list[dict]) -> dict[str, int]:
    """variant -> mom.predict's maximum on the search's card, where the search started from it."""
    found = {}
    for report in reports:
        for variant, search in report.get("searches", {}).items():
            if search.get("predicted") is not None:
                found[variant] = search["predicted"]
    return found


def figure(anchors: dict, reports: list[dict], passing: dict[str, tuple[int, str]] | None = None) -> go.Figure:
    """Horizontal bars: per variant, the paper's maximum for its method and the measured one.
    `passing`: variant -> (tokens, card) of a passing run where no search has bracketed the
    maximum yet (issue 14's run for `mom`): drawn apart, as a lower bound."""
    measured, paper, predicted = measured_maxima(reports), anchors["max_context_tokens"], predicted_maxima(reports)
    passing = {v: run for v, run in (passing or {}).items() if v not in measured}
    labels = [f"{v} ({_source(v, measured, passing)})" for v in VARIANTS]
    fig = go.Figure(layout=go.Layout(title="Maximum context (prefill + 32 greedy tokens)", xaxis_title="tokens",
                                     template="plotly_white", height=420, margin=dict(l=300), barmode="group"))
    fig.add_bar(y=labels, x=[paper.get(tables.PAPER_MAX.get(v, ""), 0) for v in VARIANTS], orientation="h",
                name=f"paper ({anchors['hardware']})", marker_color="#9e9e9e")
    fig.add_bar(y=labels, x=[measured.get(v, (0, ""))[0] for v in VARIANTS], orientation="h",
                name="measured here", marker_color="#1f77b4",
                text=[_measured_text(v, measured, predicted) if v in measured else "" if v in passing
                      else "not measured yet" for v in VARIANTS], textposition="outside")
    if passing:
        fig.add_bar(y=labels, x=[passing.get(v, (0, ""))[0] for v in VARIANTS], orientation="h",
                    name="passed here (the maximum is at least this)", marker_color="#1f77b4",
                    marker_pattern_shape="/", opacity=0.6,
                    text=[f">= {passing[v][0]:,}" if v in passing else "" for v in VARIANTS], textposition="outside")
    longest = max([*paper.values(), *(m for m, _ in measured.values()), *(t for t, _ in passing.values()), 1])
    fig.update_layout(yaxis=dict(autorange="reversed"), xaxis=dict(range=[0, longest * 1.25]))  # room for the labels
    return fig


def _measured_text(variant: str, measured: dict, predicted: dict) -> str:
    """'221,184', with mom.predict's maximum on the same card beside it where the search started there."""
    text = f"{measured[variant][0]:,}"
    return f"{text} (mom.predict: {predicted[variant]:,})" if variant in predicted else text


def _source(variant: str, measured: dict, passing: dict) -> str:
    """What a variant's bar comes from: the card of its search, of a passing run, or nothing yet."""
    if variant in measured:
        return measured[variant][1]
    if variant in passing:
        return f"{passing[variant][1]}, a passing run"
    return "not measured yet"


def passing_runs(million_reports: list[dict]) -> dict[str, tuple[int, str]]:
    """{"mom": (tokens, card)} from the longest finished run of benchmarks/million.py, if one passed."""
    runs = [(r["run"]["context"], r["provenance"].get("device", "?")) for r in million_reports
            if (r.get("run") or {}).get("ttft_s") and not r["run"].get("oom") and not r["run"].get("error")]
    return {"mom": max(runs)} if runs else {}
