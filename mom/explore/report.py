"""The offline report: profiles in, one self-contained HTML file and a terminal table out.

The report is what `mom demo` leaves behind, so it must open anywhere: plotly.js is embedded
once (no CDN), figures get fixed div ids (two runs of the same profiles give the same file),
and the tables are plain HTML. Figures come from plots.py, so the report shows exactly what
the explorer and the notebooks show, and tables come from `memory.tables` (the one renderer of
the CLI, the explorer panel, the notebooks and this report).

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

from ..memory import tables
from ..memory.events import Profile, format_bytes
from . import plots

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
.note { color: #555; }
"""


def comparison_frame(profiles: Sequence[Profile], timings: bool = True) -> pd.DataFrame:
    """One display row per run (`memory.tables.run_rows`): configuration, context, memory,
    timings (unless timings=False), outcome. A failed run shows what it measured before failing."""
    return pd.DataFrame(tables.run_rows(profiles, timings))


def terminal_table(profiles: Sequence[Profile]) -> str:
    """The comparison as aligned text, for the terminal."""
    return tables.text_table(tables.run_rows(profiles))


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
    parts += ["<h2>Runs</h2>", tables.html_table(tables.run_rows(profiles))]
    for p in profiles:
        base = baseline_of(profiles, p.context)
        if base is not None and base is not p:
            parts += [f"<h3>{html.escape(plots.profile_label(p))} against the baseline at {p.context} tokens</h3>",
                      tables.html_table(tables.metric_rows(p, base))]
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
    if profile.backend == "predicted":
        card = (profile.device_name or "a GPU").replace(" (predicted)", "")
        return f"{card}, predicted by mom.predict (mom's own code on shape-only tensors; nothing ran on a GPU)"
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
