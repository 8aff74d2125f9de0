"""Plotly figure builders: recorder events and profiles in, figures and tables out.

Pure functions (data in, figure out) so the same code draws the live explorer, the notebooks
and the offline HTML report, and tests can assert on figure data without a browser. Nothing
here touches torch or widgets; `live.py` feeds these builders and copies their data into a
`FigureWidget` in place.

Reading the events (memory/events.py):
- a position is a decoder layer ("L0", "L1", ...) or "embed" / "head" (final norm + LM head);
- per position, "KV on GPU" / "KV on host" is what the latest event of that layer reports
  after the call; "activation peak" is the most the position's calls held above what was
  live before them, less its own K/V growth, so stored state is not counted twice; for the
  head it includes the logits it returns, which is exactly the term MOM's trim removes.
- The y axis uses one binary unit (KiB, MiB or GiB) picked from the largest value, so a tiny
  CPU model and an 8B model both read well.
- A run on several cards (events with a `device`) adds each card's colour (per_device.py);
  on one device the figures are unchanged.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..memory import events as memory_events
from ..memory import tables
from ..memory.events import GiB, KiB, MemoryEvent, MiB, Profile, format_bytes
from . import per_device

COLORS = {
    "weights": "#9e9e9e",
    "kv_gpu": "#1f77b4",
    "kv_host": "#17becf",
    "activation": "#ff7f0e",
    "limit": "#d62728",  # red is kept for limits and failures: no configuration is drawn in it
    "baseline": "#444444",
}
# one colour per configuration, picked by a checksum of its label: the same in every kernel
CONFIG_PALETTE = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#ff7f0e",
                  "#7f7f7f", "#393b79", "#637939", "#843c39")
LAYER_TRACES = (("weights", "Weights"), ("kv_gpu", "KV on device"), ("activation", "Activation peak"),
                ("kv_host", "KV on host"))
FAILED = "Failed allocation"
EMPTY_NOTE = "no run yet: press Run"
_HEAD_MODULES = ("norm", "lm_head")
_CHILDREN = {"layer": ("attention", "mlp", "mlp_piece"), "mlp": ("mlp_piece",)}


def config_color(label: str) -> str:
    """A configuration's colour: grey-black for the baseline, else a palette colour fixed by its label."""
    if label == "baseline":
        return COLORS["baseline"]
    return CONFIG_PALETTE[zlib.crc32(label.encode()) % len(CONFIG_PALETTE)]


def pick_unit(max_bytes: float) -> tuple[str, int]:
    """The binary unit that shows `max_bytes` best: ('GiB', 2**30), ('MiB', 2**20) or ('KiB', 1024)."""
    for name, size in (("GiB", GiB), ("MiB", MiB)):
        if max_bytes >= size:
            return name, size
    return "KiB", KiB


def events_frame(events: Profile | Sequence[MemoryEvent] | pd.DataFrame) -> pd.DataFrame:
    """Events as a DataFrame in call order, with an `order` column (0, 1, ...)."""
    if isinstance(events, pd.DataFrame):
        frame = events.copy()
    else:
        frame = _frame_of(list(events.events if isinstance(events, Profile) else events))
    frame = frame.reset_index(drop=True)
    if "kind" not in frame:
        frame["kind"] = "call"
    frame["order"] = range(len(frame))
    return frame


def _frame_of(events: list[MemoryEvent]) -> pd.DataFrame:
    """memory.events.events_frame's frame, built column by column: a live redraw of a 1,800-event
    prediction builds it once a quarter second, and one asdict() per event took 0.1 s of it."""
    columns = memory_events.EVENT_COLUMNS
    frame = pd.DataFrame({c: [getattr(e, c) for e in events] for c in columns}, columns=list(columns))
    return frame.astype({"layer": "Int64", "piece": "Int64", "kv_layer_gpu_bytes": "Int64",
                         "kv_layer_host_bytes": "Int64", "requested_bytes": "Int64"})


def failed_allocation(events) -> MemoryEvent | None:
    """The allocation that hit the device limit (the recorder's "oom" event), or None."""
    if isinstance(events, pd.DataFrame):
        return None
    found = [e for e in (events.events if isinstance(events, Profile) else events) if getattr(e, "kind", "call") == "oom"]
    return found[-1] if found else None


def positions(layers: int) -> list[str]:
    """Category labels of the layer figure: 'embed', 'L0' ... 'L{n-1}', 'head'."""
    return ["embed", *(f"L{i}" for i in range(layers)), "head"]


def weights_from_profile(profile: Profile) -> dict[str, int]:
    """Weights per position from a Profile: its per-layer bytes; the rest split between embed and head.

    The split is even, which is right for untied models (the embedding and the LM head have
    the same shape); pass `live.model_weights_by_layer(model)` to plots for exact numbers.
    """
    layers = {f"L{i}": b for i, b in enumerate(profile.layer_weight_bytes)}
    rest = max(0, profile.weights_bytes - sum(layers.values()))
    return {"embed": rest - rest // 2, **layers, "head": rest // 2}


def _position_of(layer, module: str) -> str:
    if layer is not None and not pd.isna(layer):
        return f"L{int(layer)}"
    return "head" if module in _HEAD_MODULES else "embed"


def layer_breakdown(events, weights_by_layer: Mapping[str, int] | None = None, layers: int | None = None) -> pd.DataFrame:
    """Bytes per position: weights, KV on GPU, KV on host, activation peak.

    KV is where each layer's K/V sit at the end of the run, on the device or the host, after
    decode's reloads and streaming (the recorder's per-layer fields; the two shared GPU stream
    slots of offload="stream" belong to no layer). Events recorded without per-layer fields
    fall back to what each layer wrote during prefill (growth of the cache totals across its
    call). The activation
    peak is the largest over the whole run: the most a call held above what was live when it
    began, less the device K/V it added.

    Args:
        events: a Profile, a list of MemoryEvent, or a recorder frame.
        weights_by_layer: bytes of parameters per position label (see `positions`); from the
            Profile when None and `events` is one.
        layers: decoder layer count; inferred from the events and weights when None.

    Returns:
        A DataFrame indexed by position label with int columns weights, kv_gpu, kv_host, activation.
    """
    if weights_by_layer is None and isinstance(events, Profile):
        weights_by_layer = weights_from_profile(events)
    frame = events_frame(events)
    frame = frame[frame["kind"] == "call"].reset_index(drop=True)
    weights = dict(weights_by_layer or {})
    if layers is None:
        seen = [int(x) for x in frame["layer"].dropna()] + [int(k[1:]) for k in weights if k.startswith("L")]
        layers = max(seen) + 1 if seen else 0
    out = pd.DataFrame(0, index=positions(layers), columns=["weights", "kv_gpu", "kv_host", "activation"])
    for label, value in weights.items():
        if label in out.index:
            out.loc[label, "weights"] = int(value)
    if frame.empty:
        return out
    frame["position"] = [_position_of(layer, module) for layer, module in zip(frame["layer"], frame["module"], strict=True)]
    gpu_start, host_start = _kv_at_start(frame)
    frame["kv_gpu_added"] = frame["kv_gpu_bytes"] - gpu_start
    frame["kv_host_added"] = frame["kv_host_bytes"] - host_start
    frame["transient"] = frame["peak_bytes"] - frame["bytes_before"] - frame["kv_gpu_added"].clip(lower=0)
    layer_calls = frame[frame["module"] == "layer"]
    if "kv_layer_gpu_bytes" in frame and layer_calls["kv_layer_gpu_bytes"].notna().any():
        for label, group in layer_calls.dropna(subset=["kv_layer_gpu_bytes"]).groupby("position"):
            if label in out.index:  # the layer's last call: where its K/V ended up
                out.loc[label, "kv_gpu"] = int(group["kv_layer_gpu_bytes"].iloc[-1])
                out.loc[label, "kv_host"] = int(group["kv_layer_host_bytes"].iloc[-1])
    else:
        for label, group in layer_calls[layer_calls["phase"] == "prefill"].groupby("position"):
            if label in out.index:
                out.loc[label, "kv_gpu"] = max(0, int(group["kv_gpu_added"].sum()))
                out.loc[label, "kv_host"] = max(0, int(group["kv_host_added"].sum()))
    for label, group in frame.groupby("position"):
        if label in out.index:
            out.loc[label, "activation"] = max(0, int(group["transient"].max()))
    return out


def _kv_at_start(frame: pd.DataFrame) -> tuple[list[int], list[int]]:
    """Cache totals when each call began: those of the last call that ended before it started.

    Calls end in order and a call's children (a layer's attention and MLP, an MLP's pieces)
    end just before it, so walk back over them to the call before.
    """
    gpu, host = list(frame["kv_gpu_bytes"]), list(frame["kv_host_bytes"])
    modules = list(frame["module"])
    layers = [None if pd.isna(x) else int(x) for x in frame["layer"]]
    gpu_start, host_start = [], []
    for j, module in enumerate(modules):
        k = j - 1
        children = _CHILDREN.get(module, ())
        while k >= 0 and modules[k] in children and layers[k] == layers[j]:
            k -= 1
        gpu_start.append(gpu[k] if k >= 0 else 0)
        host_start.append(host[k] if k >= 0 else 0)
    return gpu_start, host_start


def layer_traces(breakdown: pd.DataFrame, unit: tuple[str, int]) -> list[dict]:
    """x / y / base of each layer-figure trace: device terms stacked in one bar, host KV beside it."""
    name, size = unit
    x = list(breakdown.index)
    base = [0.0] * len(x)
    traces = []
    for key, label in LAYER_TRACES:
        y = [v / size for v in breakdown[key]]
        if key == "kv_host":
            traces.append(dict(key=key, name=label, x=x, y=y, base=[0.0] * len(x), offsetgroup="host"))
            continue
        traces.append(dict(key=key, name=label, x=x, y=y, base=list(base), offsetgroup="device"))
        base = [b + v for b, v in zip(base, y, strict=True)]
    return traces


def layer_figure(events, weights_by_layer: Mapping[str, int] | None = None, layers: int | None = None,
                 unit: tuple[str, int] | None = None, title: str = "Memory per layer") -> go.Figure:
    """Per-layer bars: weights, KV on device and activation peak stacked (device); KV on host beside.

    A run that ran out of device memory also shows, in red at the position where it happened,
    the allocation that failed, on top of what that call already held.

    Args:
        events: a Profile, a list of MemoryEvent, or a recorder frame (may be empty).
        weights_by_layer: bytes of parameters per position label ('embed', 'L0', ..., 'head').
        layers: decoder layer count, to draw every layer before any event arrives.
        unit: (name, bytes) for the y axis; picked from the data when None.
        title: the figure title.
    """
    breakdown = layer_breakdown(events, weights_by_layer, layers)
    failed = failed_allocation(events)
    unit = unit or pick_unit(max(_layer_max(breakdown), _failed_top(breakdown, failed)))
    # no x title: the ticks (embed, L0..., head) name the positions, and on a deep model they stand
    # upright and would push a title into the legend below
    fig = go.Figure(layout=_layout(title, "", f"memory ({unit[0]})"))
    where = _devices_where(events)
    _add_layer_bars(fig, breakdown, failed, unit, legend=True, where=where)
    fig.update_layout(barmode="group", xaxis=dict(type="category", categoryorder="array",
                                                  categoryarray=list(breakdown.index)))
    if where:
        per_device.add_device_bands(fig, list(breakdown.index), where)
    _note_empty(fig, shown=not any(e for e in _event_list(events)))
    return fig


def compare_layer_figure(runs: Mapping[str, object], weights_by_layer: Mapping[str, int] | None = None,
                         layers: int | None = None, title: str = "Memory per layer") -> go.Figure:
    """Per-layer bars of several runs side by side, one panel each, on one shared y scale.

    Args:
        runs: panel title -> a Profile or events (e.g. {"baseline": base, "M=16, trim": run}).
        weights_by_layer, layers: as for `layer_figure` (the same model in every panel).
        title: the figure title.
    """
    breakdowns = {label: layer_breakdown(events, weights_by_layer, layers) for label, events in runs.items()}
    failed = {label: failed_allocation(events) for label, events in runs.items()}
    top = max([0.0] + [max(_layer_max(b), _failed_top(b, failed[k])) for k, b in breakdowns.items()])
    unit = pick_unit(top)
    fig = make_subplots(rows=1, cols=max(1, len(runs)), shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=[html_escape(label) for label in runs])
    fig.update_layout(_layout(title, "", ""))
    for column, (label, breakdown) in enumerate(breakdowns.items(), start=1):
        _add_layer_bars(fig, breakdown, failed[label], unit, legend=column == 1, col=column,
                        where=_devices_where(runs[label]))
        fig.update_xaxes(type="category", categoryorder="array", categoryarray=list(breakdown.index),
                         row=1, col=column)
    fig.update_yaxes(title_text=f"memory ({unit[0]})", range=[0, 1.05 * top / unit[1]] if top else None, row=1, col=1)
    fig.update_layout(barmode="group")
    return fig


def html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _add_layer_bars(fig: go.Figure, breakdown: pd.DataFrame, failed: MemoryEvent | None, unit: tuple[str, int],
                    legend: bool, col: int | None = None, where: dict[str, str] | None = None) -> None:
    cell = dict(row=1, col=col) if col is not None else {}
    for trace in layer_traces(breakdown, unit):
        marker = dict(color=COLORS[trace["key"]], **per_device.outline(trace["x"], where or {}))
        fig.add_bar(name=trace["name"], x=trace["x"], y=trace["y"], base=trace["base"], legendgroup=trace["key"],
                    offsetgroup=trace["offsetgroup"], marker=marker, showlegend=legend,
                    hovertemplate=f"%{{x}}{_on_card(where)}: %{{y:.3f}} {unit[0]}<extra>{trace['name']}</extra>",
                    customdata=[(where or {}).get(x, "") for x in trace["x"]] if where else None, **cell)
    if failed is not None:
        position = _position_of(failed.layer, failed.module)
        base = _device_top(breakdown, position)
        held = max(0, failed.bytes_after - failed.bytes_before)
        fig.add_bar(name=FAILED, x=[position], y=[(held + (failed.requested_bytes or 0)) / unit[1]],
                    base=[base / unit[1]], offsetgroup="device", legendgroup="failed", showlegend=legend,
                    marker=dict(color="rgba(214,39,40,0.35)", line=dict(color=COLORS["limit"], width=2)),
                    hovertemplate=f"%{{x}}: {_failed_text(failed)}<extra>{FAILED}</extra>", **cell)


def _devices_where(events) -> dict[str, str]:
    """{position: card} of a run on several cards; {} at once when no event names a device."""
    if isinstance(events, pd.DataFrame):
        return per_device.position_devices(events, _position_of)
    listed = _event_list(events)
    if not any(getattr(e, "device", None) for e in listed):
        return {}
    frame = events_frame(listed)
    return per_device.position_devices(frame[frame["kind"] == "call"], _position_of)


def _on_card(where: dict[str, str] | None) -> str:
    return " on %{customdata}" if where else ""


def _device_top(breakdown: pd.DataFrame, position: str) -> int:
    if position not in breakdown.index:
        return 0
    return int(breakdown.loc[position, ["weights", "kv_gpu", "activation"]].sum())


def _failed_top(breakdown: pd.DataFrame, failed: MemoryEvent | None) -> float:
    if failed is None:
        return 0.0
    position = _position_of(failed.layer, failed.module)
    held = max(0, failed.bytes_after - failed.bytes_before)
    return float(_device_top(breakdown, position) + held + (failed.requested_bytes or 0))


def _failed_text(failed: MemoryEvent) -> str:
    request = format_bytes(failed.requested_bytes) if failed.requested_bytes is not None else "an unknown size"
    where = _position_of(failed.layer, failed.module)
    return (f"out of memory in {where} {failed.module}: {format_bytes(failed.bytes_after)} in use "
            f"+ {request} requested")


def _event_list(events) -> list:
    if isinstance(events, Profile):
        return list(events.events)
    if isinstance(events, pd.DataFrame):
        return [True] * len(events)
    return list(events)


def _note_empty(fig: go.Figure, shown: bool = True) -> None:
    """The "no run yet" note, hidden rather than left out once there is data: a live widget told
    to drop its last annotation (relayout to an empty list) kept drawing it in the browser."""
    fig.add_annotation(text=EMPTY_NOTE, xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False,
                       font=dict(size=14, color="#888888"), visible=shown)


def _layer_max(breakdown: pd.DataFrame) -> float:
    device = breakdown[["weights", "kv_gpu", "activation"]].sum(axis=1).max() if len(breakdown) else 0
    host = breakdown["kv_host"].max() if len(breakdown) else 0
    return float(max(device, host, 0))


def timeline_traces(events, unit: tuple[str, int]) -> list[dict]:
    """x / y of the timeline's lines: allocated after each call, peak inside it, KV on device and on host."""
    frame = events_frame(events)
    frame = frame[frame["kind"] == "call"]
    size = unit[1]
    text = [f"{p} step {s} {'' if pd.isna(la) else f'L{int(la)} '}{m}"
            for p, s, la, m in zip(frame["phase"], frame["step"], frame["layer"], frame["module"], strict=True)]
    x = list(frame["order"])
    return [
        dict(key="allocated", name="allocated", x=x, y=list(frame["bytes_after"] / size), text=text),
        dict(key="peak", name="peak in call", x=x, y=list(frame["peak_bytes"] / size), text=text),
        dict(key="kv_gpu", name="KV on device", x=x, y=list(frame["kv_gpu_bytes"] / size), text=text),
        dict(key="kv_host", name="KV on host", x=x, y=list(frame["kv_host_bytes"] / size), text=text),
    ]


def timeline_figure(events, device_limit_bytes: int | None = None, unit: tuple[str, int] | None = None,
                    title: str = "Allocated memory through prefill and decode", label: str | None = None,
                    others: Mapping[str, object] | None = None) -> go.Figure:
    """Device memory after each hooked call (x: call order), prefill shaded, device limit dashed.

    The x axis is call order, not seconds, so the figure is the same on every run of the same
    model and config; each point's hover names the phase, step, layer and module. A run that
    ran out of memory ends in a red segment from the bytes in use to what the failing
    allocation asked for, across the limit.

    Args:
        events: the run drawn in detail (allocated, peak, KV lines); a Profile, events or a frame.
        device_limit_bytes: drawn dashed in red when given.
        unit: (name, bytes) of the y axis; picked from the data when None.
        title: the figure title.
        label: the run's configuration label: colours its allocated line (and names it) when given.
        others: more runs, label -> events, drawn as allocated lines in their own colours (compare).
    """
    runs = {label or "allocated": events, **(others or {})}
    frames = {name: events_frame(run) for name, run in runs.items()}  # once: a frame of 1,800 events costs
    top = max([_timeline_top(frames[name], run) for name, run in runs.items()] + [device_limit_bytes or 0])
    unit = unit or pick_unit(top)
    fig = go.Figure(layout=_layout(title, "hooked call (in order)", f"memory ({unit[0]})"))
    if others:
        for name, run in runs.items():
            _add_allocated(fig, run, frames[name], unit, name, config_color(name))
    elif per_device.devices_of(frames[label or "allocated"]):
        calls = frames[label or "allocated"]
        per_device.add_device_timelines(fig, calls[calls["kind"] == "call"], unit)
        _add_failed(fig, events, int((calls["kind"] == "call").sum()), unit, label)
    else:
        _add_detail(fig, events, frames[label or "allocated"], unit, label)
    frame = frames[label or "allocated"]
    prefill = frame.loc[frame["phase"] == "prefill", "order"]
    if len(prefill):
        fig.add_vrect(x0=-0.5, x1=float(prefill.max()) + 0.5, fillcolor="#eeeeee", opacity=0.5, line_width=0,
                      annotation_text="prefill", annotation_position="top left")
    if device_limit_bytes:
        _add_limit(fig, device_limit_bytes, unit, each=bool(per_device.devices_of(frame)))
    _note_empty(fig, shown=frame.empty)
    if frame.empty:
        fig.update_yaxes(range=[0, 1.1 * (device_limit_bytes or unit[1]) / unit[1]])
        fig.update_xaxes(range=[0, 10])
    return fig


def _timeline_top(frame: pd.DataFrame, events) -> float:
    failed = failed_allocation(events)
    peak = float(frame["peak_bytes"].max()) if len(frame) else 0.0
    return max(peak, failed.attempted_bytes if failed is not None else 0)


def _add_detail(fig: go.Figure, events, frame: pd.DataFrame, unit: tuple[str, int], label: str | None) -> None:
    allocated = config_color(label) if label else "#333333"
    styles = {"allocated": dict(color=allocated), "peak": dict(color=COLORS["activation"], width=1),
              "kv_gpu": dict(color=COLORS["kv_gpu"], dash="dot"), "kv_host": dict(color=COLORS["kv_host"], dash="dot")}
    for trace in timeline_traces(frame, unit):
        name = f"{label}: allocated" if label and trace["key"] == "allocated" else trace["name"]
        fig.add_scatter(name=name, x=trace["x"], y=trace["y"], text=trace["text"], mode="lines",
                        line=styles[trace["key"]],
                        hovertemplate=f"%{{text}}: %{{y:.3f}} {unit[0]}<extra>{trace['name']}</extra>")
    _add_failed(fig, events, len(frame), unit, label)


def _add_allocated(fig: go.Figure, events, frame: pd.DataFrame, unit: tuple[str, int], label: str,
                   color: str) -> None:
    trace = timeline_traces(frame, unit)[0]
    fig.add_scatter(name=label, legendgroup=label, x=trace["x"], y=trace["y"], text=trace["text"], mode="lines",
                    line=dict(color=color), hovertemplate=f"%{{text}}: %{{y:.3f}} {unit[0]}<extra>{label}</extra>")
    _add_failed(fig, events, len(frame), unit, label)


def _add_failed(fig: go.Figure, events, length: int, unit: tuple[str, int], label: str | None) -> None:
    failed = failed_allocation(events)
    if failed is None:
        return
    x = length - 1
    name = f"{label}: {FAILED.lower()}" if label else FAILED
    fig.add_scatter(name=name, legendgroup=label, x=[x, x], y=[failed.bytes_after / unit[1], failed.attempted_bytes / unit[1]],
                    mode="lines+markers", line=dict(color=COLORS["limit"], width=4),
                    marker=dict(symbol=["circle", "x"], size=[6, 12], color=COLORS["limit"]),
                    hovertemplate=f"{_failed_text(failed)}<extra>{name}</extra>")


def sweep_figure(profiles: Iterable[Profile], device_limit_bytes: int | None = None,
                 unit: tuple[str, int] | None = None, title: str = "Peak memory against context",
                 marks: Sequence[tuple[str, int, str]] = ()) -> go.Figure:
    """Peak device memory against context, one line per configuration in its colour; OOMs red crosses.

    An OOM is drawn at the device limit when it is known (the run stopped there), else at the
    peak measured up to the failure. Cancelled runs are left out (they measured nothing whole).
    When every run has the same context, configurations are bars side by side instead (points
    on one x would hide each other).

    Args:
        marks: contexts drawn as vertical lines, (legend name, tokens, colour) each: a search's
            maximum, the physical limit of the card and host (simulate/limits.py). They are
            traces, first in the figure, so a live sweep appends its tries after them.
    """
    profiles = [p for p in profiles if not getattr(p, "cancelled", False)]
    limit = device_limit_bytes or next((p.device_limit_bytes for p in profiles if p.device_limit_bytes), None)
    peak = max([p.peak_gpu_bytes for p in profiles] + [limit or 0, 0])
    unit = unit or pick_unit(peak)
    contexts = sorted({p.context for p in profiles})
    groups = _by_label(profiles)
    if len(contexts) == 1 and len(groups) > 1:
        fig = _sweep_bars(groups, limit, unit, title, contexts[0])
    else:
        fig = go.Figure(layout=_layout(title, "context (tokens)", f"peak memory ({unit[0]})"))
        for name, tokens, color in marks:
            _add_mark(fig, name, tokens, color, 1.05 * peak / unit[1])
        for label, group in groups.items():
            _add_sweep_line(fig, label, group, limit, unit)
        ticks = _spread(contexts)
        fig.update_xaxes(type="log", tickvals=ticks, ticktext=[_tokens(c) for c in ticks])
        fig.update_layout(showlegend=True)  # explicit: a live widget may come from the bars' layout
    if limit:
        _add_limit(fig, limit, unit, each=per_device.several(profiles))
    _note_empty(fig, shown=not profiles)
    return fig


def _add_mark(fig: go.Figure, name: str, tokens: int, color: str, top: float) -> None:
    fig.add_scatter(name=name, x=[tokens, tokens], y=[0, top or 1], mode="lines", line=dict(color=color, dash="dot"),
                    hovertemplate=f"{html_escape(name)}<extra></extra>")


def _add_sweep_line(fig: go.Figure, label: str, group: list[Profile], limit: int | None, unit: tuple[str, int]) -> None:
    ok = [p for p in group if not p.oom]
    oom = [p for p in group if p.oom]
    color = config_color(label)
    if per_device.several(group):  # one line per card, each against the card's limit
        per_device.add_device_sweep_lines(fig, label, color, group, unit)
    else:
        fig.add_scatter(name=label, legendgroup=label, x=[p.context for p in ok],
                        y=[p.peak_gpu_bytes / unit[1] for p in ok], mode="lines+markers",
                        line=dict(color=color), marker=dict(color=color),
                        hovertemplate=f"%{{x}} tokens: %{{y:.3f}} {unit[0]}<extra>{label}</extra>")
    # always present (empty until a run fails): a live sweep then only ever appends traces
    y = [(limit or p.peak_gpu_bytes) / unit[1] for p in oom]
    fig.add_scatter(name=f"{label}: OOM", legendgroup=label, x=[p.context for p in oom], y=y,
                    mode="markers", showlegend=bool(oom), marker=dict(symbol="x", size=12, color=COLORS["limit"],
                                                                      line=dict(color=color, width=1)),
                    hovertemplate=f"OOM at %{{x}} tokens<extra>{label}</extra>")


def _sweep_bars(groups: dict[str, list[Profile]], limit: int | None, unit: tuple[str, int], title: str,
                context: int) -> go.Figure:
    fig = go.Figure(layout=_layout(f"{title} ({_tokens(context)} tokens)", "configuration",
                                   f"peak memory ({unit[0]})"))
    for label, (run,) in ((k, g[-1:]) for k, g in groups.items()):
        color = COLORS["limit"] if run.oom else config_color(label)
        height = (limit or run.peak_gpu_bytes) if run.oom else run.peak_gpu_bytes
        fig.add_bar(name=f"{label}: OOM" if run.oom else label, x=[label], y=[height / unit[1]],
                    marker=dict(color=color, pattern_shape="x" if run.oom else ""),
                    text=["OOM" if run.oom else format_bytes(run.peak_gpu_bytes)], textposition="outside",
                    hovertemplate=f"%{{x}}: %{{y:.3f}} {unit[0]}<extra></extra>")
    fig.update_layout(showlegend=False)
    return fig


def _by_label(profiles: list[Profile]) -> dict[str, list[Profile]]:
    """Runs per configuration label (labels in order of first appearance), each by context; of two
    runs at one context the later wins."""
    latest: dict[tuple[str, int], Profile] = {}
    for p in profiles:
        latest[(profile_label(p), p.context)] = p
    groups: dict[str, list[Profile]] = {}
    for (label, _), p in latest.items():
        groups.setdefault(label, []).append(p)
    return {label: sorted(group, key=lambda p: p.context) for label, group in groups.items()}


def profile_label(profile: Profile) -> str:
    """A profile's configuration label, budget included ('M=8, trim, offload=auto, KV budget 1.00 MiB')."""
    return tables.run_label(profile)


def summary_table(profile: Profile, baseline: Profile | None = None, timings: bool = True) -> pd.DataFrame:
    """Peak, prefill peak, host memory, TTFT and decode speed of a run, next to the baseline's.

    The rows of `memory.tables.metric_rows` (the one table of mom) as a DataFrame, for
    notebooks; `tables.html_table(tables.metric_rows(...))` draws the same as HTML.

    Args:
        profile: the run to show.
        baseline: the same model and context under `MomConfig()`; adds a column and a ratio.
        timings: include TTFT and decode speed (leave out for output that must not vary).

    Returns:
        A DataFrame of display strings indexed by metric (peak device, prefill peak, host,
        TTFT, decode, outcome), one column per run, then 'vs baseline' when a baseline is given.
    """
    table = pd.DataFrame(tables.metric_rows(profile, baseline, timings)).set_index("metric")
    table.index.name = f"context {profile.context}"
    return table


def _spread(contexts: list[int], ratio: float = 1.15) -> list[int]:
    """Tick values at least `ratio` apart, so labels of close contexts (8000 and 8192) do not overlap."""
    kept: list[int] = []
    for context in contexts:
        if not kept or context >= kept[-1] * ratio:
            kept.append(context)
    return kept


def _tokens(n: int) -> str:
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)


def _add_limit(fig: go.Figure, limit: int, unit: tuple[str, int], each: bool = False) -> None:
    text = f"{'each card' if each else 'device'} limit {format_bytes(limit)}"  # a prediction's cards are alike
    fig.add_hline(y=limit / unit[1], line=dict(color=COLORS["limit"], dash="dash"),
                  annotation_text=text, annotation_position="top right")


def _layout(title: str, x_title: str, y_title: str) -> go.Layout:
    # no width: the figure takes its container's (the explorer, a notebook, the report)
    return go.Layout(title=dict(text=title), xaxis_title=x_title, template="plotly_white",
                     yaxis=dict(title=dict(text=y_title), rangemode="tozero"),
                     height=380, autosize=True, margin=dict(l=60, r=20, t=60, b=50),
                     legend=dict(orientation="h", y=-0.2))
