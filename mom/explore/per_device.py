"""Drawing a model spread over several GPUs: each card in its own colour, in every figure.

A device map puts each decoder layer on one card, and every event of a run on several cards
carries its `device` ("cuda:1", memory/recorder.py and mom.predict's imitated devices). The
layer figure keeps its colours for the memory terms (weights, K/V, activations: the legend
reads the same on one card or four) and shows the card as the outline of each bar plus a
labelled band behind each card's layers. The timeline draws one allocated line (and one thin
peak line) per card, as steps: a card's counters are read only when a module on it runs, and
hold until the next. The sweep draws one line per configuration and card, the card told apart by
the dash, against the one limit every card has (the cards of a prediction are alike).
On one device every event's `device` is None and nothing here draws: single-device figures
are exactly what they were.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

DEVICE_PALETTE = ("#6a3d9a", "#33a02c", "#b15928", "#1f78b4", "#e31a1c", "#ff7f00", "#cab2d6", "#a6cee3")
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")


def device_color(device: str) -> str:
    """A card's colour: by its index ("cuda:1" -> the second colour)."""
    return DEVICE_PALETTE[_index(device) % len(DEVICE_PALETTE)]


def devices_of(frame: pd.DataFrame) -> list[str]:
    """The cards a run's events name, in index order; [] on one device."""
    if "device" not in frame or frame["device"].isna().all():
        return []
    return sorted({str(d) for d in frame["device"].dropna()}, key=_index)


def position_devices(frame: pd.DataFrame, position_of) -> dict[str, str]:
    """{position label: its card} from the events of a run on several cards ({} on one)."""
    if not devices_of(frame):
        return {}
    calls = frame.dropna(subset=["device"])
    return {position_of(layer, module): str(device)
            for layer, module, device in zip(calls["layer"], calls["module"], calls["device"], strict=True)}


def outline(x: list[str], where: dict[str, str]) -> dict:
    """Bar outlines in each position's card colour (a marker `line`), or {} on one device."""
    if not where:
        return {}
    return dict(line=dict(color=[device_color(where[p]) if p in where else "rgba(0,0,0,0)" for p in x], width=2))


def add_device_bands(fig: go.Figure, order: list[str], where: dict[str, str]) -> None:
    """A light band behind each card's contiguous positions, labelled with the card."""
    start = 0
    for i in range(1, len(order) + 1):
        if i < len(order) and where.get(order[i]) == where.get(order[start]):
            continue
        device = where.get(order[start])
        if device is not None:
            fig.add_vrect(x0=start - 0.5, x1=i - 0.5, fillcolor=device_color(device), opacity=0.08, line_width=0,
                          layer="below", annotation_text=device, annotation_position="top left",
                          annotation_font_color=device_color(device))
        start = i


def add_device_timelines(fig: go.Figure, frame: pd.DataFrame, unit: tuple[str, int]) -> None:
    """Allocated after each call and peak inside it, one pair of step lines per card."""
    name, size = unit
    for device in devices_of(frame):
        mine = frame[frame["device"] == device]
        color = device_color(device)
        text = [f"{p} step {s} {'' if pd.isna(la) else f'L{int(la)} '}{m}"
                for p, s, la, m in zip(mine["phase"], mine["step"], mine["layer"], mine["module"], strict=True)]
        end = int(frame["order"].max())  # a card holds its last value while the others run
        for key, column, width in (("allocated", "bytes_after", 2), ("peak in call", "peak_bytes", 1)):
            y = list(mine[column] / size)
            fig.add_scatter(name=f"{device}: {key}", legendgroup=device, x=[*mine["order"], end],
                            y=[*y, float(mine["bytes_after"].iloc[-1]) / size], text=[*text, "held"], mode="lines",
                            line_shape="hv",
                            line=dict(color=color, width=width, dash="solid" if width == 2 else "dot"),
                            hovertemplate=f"%{{text}}: %{{y:.3f}} {name}<extra>{device} {key}</extra>")


def add_device_sweep_lines(fig: go.Figure, label: str, color: str, group: list, unit: tuple[str, int]) -> None:
    """Each card's peak against context for one configuration (runs that fit), dashed per card."""
    devices = sorted({d for p in group for d in p.peak_by_device}, key=_index)
    ok = [p for p in group if not p.oom and p.peak_by_device]
    for device in devices:
        runs = [p for p in ok if device in p.peak_by_device]
        fig.add_scatter(name=f"{label}: {device}", legendgroup=label, x=[p.context for p in runs],
                        y=[p.peak_by_device[device] / unit[1] for p in runs], mode="lines+markers",
                        line=dict(color=color, dash=DASHES[_index(device) % len(DASHES)]),
                        marker=dict(color=device_color(device), size=7),
                        hovertemplate=f"%{{x}} tokens: %{{y:.3f}} {unit[0]}<extra>{label}, {device}</extra>")


def several(profiles) -> bool:
    """Whether any run of a sweep was on several cards."""
    return any(getattr(p, "peak_by_device", None) for p in profiles)


def _index(device: str) -> int:
    tail = str(device).rpartition(":")[2]
    return int(tail) if tail.isdigit() else 0
