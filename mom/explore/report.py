"""The offline report: profiles in, one self-contained HTML file and a terminal table out.

The report is what `mom demo` leaves behind, so it must open anywhere: plotly.js is embedded
once (no CDN), figures get fixed div ids (two runs of the same profiles give the same file),
and the tables are plain HTML. Figures come from plots.py, so the report shows exactly what
the explorer and the notebooks show; `table_html` is the one table renderer of the report and
the explorer panel (headers aligned with their numbers, the configuration column left).

Vocabulary: "device" is where the model runs (a GPU, or the CPU under the tensor tracker's
pretend limit) and "host" is the CPU memory offloaded K/V go to; the header names the model
by its preset (or hub) name, not its family.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from ..memory.events import Profile, format_bytes
from . import plots

_TABLE_STYLE = """
table.mom-table { border-collapse: collapse; margin: 0.6em 0; font-size: 13px; font-variant-numeric: tabular-nums; }
table.mom-table th, table.mom-table td { border: 1px solid #ccc; padding: 4px 10px; text-align: right;
  white-space: nowrap; }
table.mom-table th { background: #f3f3f3; font-weight: 600; }
table.mom-table th:first-child, table.mom-table td:first-child { text-align: left; }
table.mom-table td.oom { color: #b00020; font-weight: 600; }
"""
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
.note { color: #555; }
""" + _TABLE_STYLE


def table_html(frame: pd.DataFrame, index: bool = False) -> str:
    """A display table as styled HTML (its own <style>, so it reads the same in a widget and a page).

    Args:
        frame: cells already formatted as strings (plots.summary_table, comparison_frame).
        index: show the index as the first column (its name as that column's header).

    Returns:
        `<style>...</style><table class="mom-table">...</table>`; "OOM" cells are red.
    """
    columns = ([frame.index.name or ""] if index else []) + [str(c) for c in frame.columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = []
    for key, row in frame.iterrows():
        cells = ([key] if index else []) + list(row)
        rows.append("<tr>" + "".join(_cell(v) for v in cells) + "</tr>")
    return (f"<style>{_TABLE_STYLE}</style><table class='mom-table'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _cell(value) -> str:
    text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
    css = " class='oom'" if text == "OOM" else ""
    return f"<td{css}>{html.escape(text)}</td>"


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
    parts += ["<h2>Runs</h2>", table_html(comparison_frame(profiles))]
    for p in profiles:
        base = baseline_of(profiles, p.context)
        if base is not None and base is not p:
            parts += [f"<h3>{html.escape(plots.profile_label(p))} against the baseline at {p.context} tokens</h3>",
                      table_html(plots.summary_table(p, base), index=True)]
    figures = _figures(profiles, weights_by_layer, limit)
    parts.append("<h2>Figures</h2>")
    for index, (_, fig) in enumerate(figures):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=index == 0, div_id=f"mom-figure-{index}",
                                 config={"displaylogo": False}))
    body = "\n".join(parts)
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")


def _figures(profiles: list[Profile], weights_by_layer, limit: int | None) -> list[tuple[str, go.Figure]]:
    """The sweep (several contexts or an OOM), then per context one layer figure with every run
    side by side on one y scale and one timeline with every run's allocated memory."""
    figures: list[tuple[str, go.Figure]] = []
    if len({p.context for p in profiles}) > 1 or any(p.oom for p in profiles):
        figures.append(("Peak memory against context", plots.sweep_figure(profiles, limit)))
    for context in dict.fromkeys(p.context for p in profiles if p.events):
        runs = {plots.profile_label(p): p for p in profiles if p.events and p.context == context}
        what = f"{', '.join(runs)}, {context} tokens"
        if len(runs) == 1:
            (label, run), = runs.items()
            figures.append((f"Per layer: {what}", plots.layer_figure(run, weights_by_layer, title=f"Memory per layer: {what}")))
            figures.append((f"Timeline: {what}", plots.timeline_figure(run, limit, title=f"Allocated memory: {what}",
                                                                        label=label)))
            continue
        figures.append((f"Per layer: {what}", plots.compare_layer_figure(runs, weights_by_layer,
                                                                         title=f"Memory per layer, {context} tokens")))
        (first, run), *rest = runs.items()
        figures.append((f"Timeline: {what}", plots.timeline_figure(run, limit, title=f"Allocated memory, {context} tokens",
                                                                    label=first, others=dict(rest))))
    return figures


def device_line(profile: Profile) -> str:
    """Where a run ran and how it was measured, in the one vocabulary: 'cpu, measured by mom's tensor tracker'."""
    if profile.backend == "tracker":
        device = (profile.device_name or "cpu").replace(" (tensor tracker)", "")
        return f"{device}, measured by mom's tensor tracker"
    return f"{profile.device_name or profile.backend}, measured by the CUDA allocator"


def _setup(profiles: list[Profile], limit: int | None) -> str:
    if not profiles:
        return "<p>No runs.</p>"
    first = profiles[0]
    items = [f"model: {first.model_name}", f"device: {device_line(first)}",
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
