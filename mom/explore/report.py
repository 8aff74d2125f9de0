"""The offline report: profiles in, one self-contained HTML file and a terminal table out.

The report is what `mom demo` leaves behind, so it must open anywhere: plotly.js is embedded
once (no CDN), figures get fixed div ids (two runs of the same profiles give the same file),
and the tables are plain HTML. Figures come from plots.py, so the report shows exactly what
the explorer and the notebooks show.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from ..memory.events import Profile, format_bytes
from . import plots

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.note { color: #555; }
"""


def comparison_frame(profiles: Sequence[Profile], timings: bool = True) -> pd.DataFrame:
    """One display row per run: configuration, context, memory, timings (unless timings=False), outcome.

    A run that ran out of memory shows the peak it reached before failing, and "-" where
    it never got (the prefill peak of a prefill that failed).
    """
    rows = []
    for p in profiles:
        row = {
            "configuration": plots.profile_label(p),
            "context": p.context,
            "peak device": format_bytes(p.peak_gpu_bytes),
            "prefill peak": "-" if p.oom and not p.prefill_peak_bytes else format_bytes(p.prefill_peak_bytes),
            "host": format_bytes(p.peak_host_bytes),
        }
        if timings:
            row["TTFT"] = "-" if p.ttft_s is None else f"{p.ttft_s:.3f} s"
            row["decode"] = "-" if p.decode_tokens_per_s is None else f"{p.decode_tokens_per_s:.1f} tok/s"
        row["outcome"] = "OOM" if p.oom else ("error" if p.error else "ok")
        rows.append(row)
    return pd.DataFrame(rows)


def terminal_table(profiles: Sequence[Profile]) -> str:
    """The comparison as aligned text, for the terminal."""
    return comparison_frame(profiles).to_string(index=False)


def baseline_of(profiles: Sequence[Profile], context: int) -> Profile | None:
    """The baseline run at `context`, if any."""
    return next((p for p in profiles if p.context == context and plots.profile_label(p) == "baseline"), None)


def report_html(profiles: Sequence[Profile], title: str = "mom memory report",
                weights_by_layer: Mapping[str, int] | None = None, device_limit_bytes: int | None = None,
                note: str = "") -> str:
    """The report as one HTML string (plotly.js embedded once).

    Args:
        profiles: the runs, baseline first where there is one.
        title: the page heading.
        weights_by_layer: bytes of parameters per layer-figure position, for the layer figures.
        device_limit_bytes: the device memory limit to draw; from the profiles when None.
        note: a line under the heading (how the numbers were made, the command to redo them).
    """
    profiles = list(profiles)
    limit = device_limit_bytes or next((p.device_limit_bytes for p in profiles if p.device_limit_bytes), None)
    parts = [f"<h1>{html.escape(title)}</h1>", _setup(profiles, limit)]
    if note:
        parts.append(f"<p class='note'>{html.escape(note)}</p>")
    parts += ["<h2>Runs</h2>", comparison_frame(profiles).to_html(index=False, border=0)]
    figures: list[tuple[str, go.Figure]] = []
    for p in profiles:
        base = baseline_of(profiles, p.context)
        if base is not None and base is not p:
            parts += [f"<h3>{html.escape(plots.profile_label(p))} against the baseline at {p.context} tokens</h3>",
                      plots.summary_table(p, base).to_html(border=0)]
    if len({p.context for p in profiles}) > 1 or any(p.oom for p in profiles):
        figures.append(("Peak memory against context", plots.sweep_figure(profiles, limit)))
    for p in (p for p in profiles if p.events):
        label = f"{plots.profile_label(p)}, {p.context} tokens"
        figures.append((f"Per layer: {label}", plots.layer_figure(p, weights_by_layer, title=f"Memory per layer: {label}")))
        figures.append((f"Timeline: {label}", plots.timeline_figure(p, limit, title=f"Allocated memory: {label}")))
    parts.append("<h2>Figures</h2>")
    for index, (_, fig) in enumerate(figures):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=index == 0, div_id=f"mom-figure-{index}",
                                 config={"displaylogo": False}))
    body = "\n".join(parts)
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")


def _setup(profiles: list[Profile], limit: int | None) -> str:
    if not profiles:
        return "<p>No runs.</p>"
    first = profiles[0]
    device = first.device_name or first.backend
    items = [f"model: {first.model_name}", f"device: {device} ({first.backend})",
             f"new tokens: {first.new_tokens}", f"batch: {first.batch}",
             f"weights: {format_bytes(first.weights_bytes)}"]
    if limit:
        items.append(f"device limit: {format_bytes(limit)}")
    return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"


def write_report(profiles: Sequence[Profile], path: str | Path = "mom-report.html", **kwargs) -> Path:
    """Write the self-contained HTML report (opens offline) and return its path.

    Args:
        profiles: the runs, baseline first where there is one.
        path: where to write; parent folders are created.
        **kwargs: passed to `report_html` (title, weights_by_layer, device_limit_bytes, note).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_html(profiles, **kwargs), encoding="utf-8")
    return path
