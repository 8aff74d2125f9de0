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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go

from ..memory import events as memory_events
from ..memory.events import GiB, KiB, MemoryEvent, MiB, Profile, format_bytes

COLORS = {
    "weights": "#9e9e9e",
    "kv_gpu": "#1f77b4",
    "kv_host": "#17becf",
    "activation": "#ff7f0e",
    "limit": "#d62728",
}
LAYER_TRACES = (("weights", "Weights"), ("kv_gpu", "KV on GPU"), ("activation", "Activation peak"),
                ("kv_host", "KV on host"))
_HEAD_MODULES = ("norm", "lm_head")
_CHILDREN = {"layer": ("attention", "mlp", "mlp_piece"), "mlp": ("mlp_piece",)}


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
        frame = memory_events.events_frame(list(events.events if isinstance(events, Profile) else events))
    frame = frame.reset_index(drop=True)
    frame["order"] = range(len(frame))
    return frame


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
    """Per-layer bars: weights, KV on GPU and activation peak stacked (device); KV on host beside.

    Args:
        events: a Profile, a list of MemoryEvent, or a recorder frame (may be empty).
        weights_by_layer: bytes of parameters per position label ('embed', 'L0', ..., 'head').
        layers: decoder layer count, to draw every layer before any event arrives.
        unit: (name, bytes) for the y axis; picked from the data when None.
        title: the figure title.
    """
    breakdown = layer_breakdown(events, weights_by_layer, layers)
    unit = unit or pick_unit(_layer_max(breakdown))
    fig = go.Figure(layout=_layout(title, "position", f"memory ({unit[0]})"))
    for trace in layer_traces(breakdown, unit):
        fig.add_bar(name=trace["name"], x=trace["x"], y=trace["y"], base=trace["base"],
                    offsetgroup=trace["offsetgroup"], marker_color=COLORS[trace["key"]],
                    hovertemplate=f"%{{x}}: %{{y:.3f}} {unit[0]}<extra>{trace['name']}</extra>")
    fig.update_layout(barmode="group", xaxis=dict(type="category", categoryorder="array",
                                                  categoryarray=list(breakdown.index)))
    return fig


def _layer_max(breakdown: pd.DataFrame) -> float:
    device = breakdown[["weights", "kv_gpu", "activation"]].sum(axis=1).max() if len(breakdown) else 0
    host = breakdown["kv_host"].max() if len(breakdown) else 0
    return float(max(device, host, 0))


def timeline_traces(events, unit: tuple[str, int]) -> list[dict]:
    """x / y of the timeline's lines: allocated after each call, peak inside it, KV on GPU and on host."""
    frame = events_frame(events)
    size = unit[1]
    text = [f"{p} step {s} {'' if pd.isna(la) else f'L{int(la)} '}{m}"
            for p, s, la, m in zip(frame["phase"], frame["step"], frame["layer"], frame["module"], strict=True)]
    x = list(frame["order"])
    return [
        dict(key="allocated", name="allocated", x=x, y=list(frame["bytes_after"] / size), text=text),
        dict(key="peak", name="peak in call", x=x, y=list(frame["peak_bytes"] / size), text=text),
        dict(key="kv_gpu", name="KV on GPU", x=x, y=list(frame["kv_gpu_bytes"] / size), text=text),
        dict(key="kv_host", name="KV on host", x=x, y=list(frame["kv_host_bytes"] / size), text=text),
    ]


def timeline_figure(events, device_limit_bytes: int | None = None, unit: tuple[str, int] | None = None,
                    title: str = "Allocated memory through prefill and decode") -> go.Figure:
    """Device memory after each hooked call (x: call order), prefill shaded, device limit dashed.

    The x axis is call order, not seconds, so the figure is the same on every run of the same
    model and config; each point's hover names the phase, step, layer and module.
    """
    frame = events_frame(events)
    peak = float(frame["peak_bytes"].max()) if len(frame) else 0.0
    unit = unit or pick_unit(max(peak, device_limit_bytes or 0))
    fig = go.Figure(layout=_layout(title, "hooked call (in order)", f"memory ({unit[0]})"))
    styles = {"allocated": dict(color="#333333"), "peak": dict(color=COLORS["activation"], width=1),
              "kv_gpu": dict(color=COLORS["kv_gpu"], dash="dot"), "kv_host": dict(color=COLORS["kv_host"], dash="dot")}
    for trace in timeline_traces(frame, unit):
        fig.add_scatter(name=trace["name"], x=trace["x"], y=trace["y"], text=trace["text"], mode="lines",
                        line=styles[trace["key"]],
                        hovertemplate=f"%{{text}}: %{{y:.3f}} {unit[0]}<extra>{trace['name']}</extra>")
    prefill = frame.loc[frame["phase"] == "prefill", "order"]
    if len(prefill):
        fig.add_vrect(x0=-0.5, x1=float(prefill.max()) + 0.5, fillcolor="#eeeeee", opacity=0.5, line_width=0,
                      annotation_text="prefill", annotation_position="top left")
    if device_limit_bytes:
        _add_limit(fig, device_limit_bytes, unit)
    return fig


def sweep_figure(profiles: Iterable[Profile], device_limit_bytes: int | None = None,
                 unit: tuple[str, int] | None = None, title: str = "Peak memory against context") -> go.Figure:
    """Peak device memory against context, one line per configuration; OOMs marked with a cross.

    An OOM is drawn at the device limit when it is known (the run stopped there), else at the
    peak measured up to the failure.
    """
    profiles = list(profiles)
    limit = device_limit_bytes or next((p.device_limit_bytes for p in profiles if p.device_limit_bytes), None)
    peak = max([p.peak_gpu_bytes for p in profiles] + [limit or 0, 0])
    unit = unit or pick_unit(peak)
    fig = go.Figure(layout=_layout(title, "context (tokens)", f"peak memory ({unit[0]})"))
    for label, group in _by_label(profiles).items():
        ok = [p for p in group if not p.oom]
        oom = [p for p in group if p.oom]
        fig.add_scatter(name=label, legendgroup=label, x=[p.context for p in ok],
                        y=[p.peak_gpu_bytes / unit[1] for p in ok], mode="lines+markers",
                        hovertemplate=f"%{{x}} tokens: %{{y:.3f}} {unit[0]}<extra>{label}</extra>")
        if oom:
            y = [(limit or p.peak_gpu_bytes) / unit[1] for p in oom]
            fig.add_scatter(name=f"{label}: OOM", legendgroup=label, x=[p.context for p in oom], y=y,
                            mode="markers", marker=dict(symbol="x", size=12, color=COLORS["limit"]),
                            hovertemplate=f"OOM at %{{x}} tokens<extra>{label}</extra>")
    contexts = sorted({p.context for p in profiles})
    fig.update_xaxes(type="log", tickvals=contexts, ticktext=[_tokens(c) for c in contexts])
    if limit:
        _add_limit(fig, limit, unit)
    return fig


def _by_label(profiles: list[Profile]) -> dict[str, list[Profile]]:
    """Runs per configuration label, by context; of two runs at one context the later wins."""
    latest: dict[tuple[str, int], Profile] = {}
    for p in profiles:
        latest[(profile_label(p), p.context)] = p
    groups: dict[str, list[Profile]] = {}
    for (label, _), p in sorted(latest.items(), key=lambda item: item[0][1]):
        groups.setdefault(label, []).append(p)
    return groups


def profile_label(profile: Profile) -> str:
    """A profile's configuration label ('baseline', 'M=8, trim', ...)."""
    return profile.label or "mom"


def summary_table(profile: Profile, baseline: Profile | None = None, timings: bool = True) -> pd.DataFrame:
    """Peak, prefill peak, host memory, TTFT and decode speed of a run, next to the baseline's.

    Args:
        profile: the run to show.
        baseline: the same model and context under `MomConfig()`; adds a column and a ratio.
        timings: include TTFT and decode speed (leave out for output that must not vary).

    Returns:
        A DataFrame of display strings: one row per metric, one column per run, then
        'vs baseline' (the run's value divided by the baseline's) when a baseline is given.
    """
    metrics = [("peak device memory", "peak_gpu_bytes", format_bytes),
               ("prefill peak", "prefill_peak_bytes", format_bytes),
               ("host memory", "peak_host_bytes", format_bytes)]
    if timings:
        metrics += [("TTFT", "ttft_s", _seconds), ("decode", "decode_tokens_per_s", _rate)]
    runs = [baseline, profile] if baseline is not None else [profile]
    columns = _column_names(runs)
    table = pd.DataFrame(index=[m[0] for m in metrics] + ["outcome"], columns=columns, dtype=object)
    for column, run in zip(columns, runs, strict=True):
        for row, attr, fmt in metrics:
            value = getattr(run, attr)
            table.loc[row, column] = "-" if run.oom and not value else fmt(value)
        table.loc["outcome", column] = _outcome(run)
    if baseline is not None:
        # host bytes of a baseline are ~0 (nothing offloaded): a ratio to that says nothing
        ratios = [_ratio(getattr(profile, attr), getattr(baseline, attr)) if attr != "peak_host_bytes" else "-"
                  for _, attr, _ in metrics]
        table["vs baseline"] = (["-"] * len(metrics) if profile.oom or baseline.oom else ratios) + [""]
    table.index.name = f"context {profile.context}"
    return table


def _column_names(runs: list[Profile]) -> list[str]:
    names = [profile_label(r) for r in runs]
    if len(names) == 2 and names[0] == names[1]:
        names = [f"{names[0]} (1)", f"{names[1]} (2)"]
    return names


def _outcome(p: Profile) -> str:
    return "OOM" if p.oom else ("error" if p.error else "ok")


def _ratio(value, reference) -> str:
    if value is None or not reference:
        return "-"
    return f"{value / reference:.2f}x"


def _seconds(s: float | None) -> str:
    return "-" if s is None else f"{s:.3f} s"


def _rate(r: float | None) -> str:
    return "-" if r is None else f"{r:.1f} tokens/s"


def _tokens(n: int) -> str:
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)


def _add_limit(fig: go.Figure, limit: int, unit: tuple[str, int]) -> None:
    fig.add_hline(y=limit / unit[1], line=dict(color=COLORS["limit"], dash="dash"),
                  annotation_text=f"device limit {format_bytes(limit)}", annotation_position="top right")


def _layout(title: str, x_title: str, y_title: str) -> go.Layout:
    return go.Layout(title=dict(text=title), xaxis_title=x_title, yaxis_title=y_title, template="plotly_white",
                     height=380, margin=dict(l=60, r=20, t=50, b=50), legend=dict(orientation="h", y=-0.2))
