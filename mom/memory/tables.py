"""Profiles as tables: one renderer for the terminal, the explorer, the report and notebooks.

A table is plain data first: a list of rows, each a dict from column name to a display string
(bytes through `format_bytes`, binary units). Two renderers draw any such rows: `text_table`
(aligned, for the terminal and the CLI) and `html_table` (inline-styled, so it looks the same
in JupyterLab, in an ipywidgets.HTML and in the offline report, with headers aligned like
their column: numbers right, the first column left). Two row builders cover the two shapes
mom shows:
- `run_rows`: one row per run (configuration, context, memory, timings, outcome);
- `metric_rows`: one row per metric, one column per run, and the ratio to a baseline.
A run that failed shows what it measured before failing and "-" where it never got, and its
outcome says which wall it hit ("OOM" on the device, "host OOM" for host RAM) or "cancelled".
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from .events import Profile, format_bytes

Row = dict[str, str]


def run_label(profile: Profile) -> str:
    """A run's configuration label: 'baseline', 'M=8, trim', '..., offload=auto, KV budget 1.00 MiB'.

    The device KV budget of offload="auto" is part of it, so runs with different budgets get
    their own row, line and colour.
    """
    label = profile.label or "mom"
    budget = profile.config.get("kv_gpu_budget") if isinstance(profile.config, dict) else None
    return f"{label}, KV budget {format_bytes(budget)}" if budget is not None and "budget" not in label else label


def outcome(profile: Profile) -> str:
    """'ok', 'OOM' (the device limit), 'host OOM' (host RAM), 'cancelled' or 'error'."""
    if profile.cancelled:
        return "cancelled"
    if profile.oom:
        return "host OOM" if profile.oom_kind == "host" else "OOM"
    return "error" if profile.error else "ok"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} tok/s"


# (column / metric name, Profile attribute, formatter); timings last
_MEMORY = (("peak device", "peak_gpu_bytes", format_bytes), ("prefill peak", "prefill_peak_bytes", format_bytes),
           ("host", "peak_host_bytes", format_bytes))
_TIMINGS = (("TTFT", "ttft_s", _seconds), ("decode", "decode_tokens_per_s", _rate))


def _metrics(timings: bool) -> tuple:
    return _MEMORY + (_TIMINGS if timings else ())


def _shown(profile: Profile, attr: str, fmt) -> str:
    value = getattr(profile, attr)
    return "-" if not profile.passed and not value else fmt(value)


def run_rows(profiles: Sequence[Profile], timings: bool = True) -> list[Row]:
    """One row per run: configuration, context, new tokens, memory, timings (unless
    timings=False: for output that must not vary between runs), outcome."""
    rows = []
    for p in profiles:
        row = {"configuration": run_label(p), "context": str(p.context), "new tokens": str(p.new_tokens)}
        row.update({name: _shown(p, attr, fmt) for name, attr, fmt in _metrics(timings)})
        row["outcome"] = outcome(p)
        rows.append(row)
    return rows


def _column_names(runs: list[Profile]) -> list[str]:
    names = [run_label(r) for r in runs]
    if len(set(names)) < len(names):
        names = [f"{name} ({i})" for i, name in enumerate(names, 1)]
    return names


def _ratio(value, reference) -> str:
    return "-" if value is None or not reference else f"{value / reference:.2f}x"


def metric_rows(profile: Profile, baseline: Profile | None = None, timings: bool = True) -> list[Row]:
    """One row per metric ('metric' column first), one column per run (the baseline's first),
    then 'vs baseline' (the run's value over the baseline's) when a baseline is given."""
    runs = [baseline, profile] if baseline is not None else [profile]
    names = _column_names(runs)
    compare = baseline is not None and profile.passed and baseline.passed
    rows = []
    for name, attr, fmt in _metrics(timings):
        row = {"metric": name, **{n: _shown(r, attr, fmt) for n, r in zip(names, runs, strict=True)}}
        if baseline is not None:  # host bytes of a baseline are ~0: a ratio to that says nothing
            ok = compare and attr != "peak_host_bytes"
            row["vs baseline"] = _ratio(getattr(profile, attr), getattr(baseline, attr)) if ok else "-"
        rows.append(row)
    if any(r.decode_path for r in runs):
        path = {"metric": "decode path", **{n: r.decode_path or "-" for n, r in zip(names, runs, strict=True)}}
        rows.append({**path, "vs baseline": ""} if baseline is not None else path)
    last = {"metric": "outcome", **{n: outcome(r) for n, r in zip(names, runs, strict=True)}}
    rows.append({**last, "vs baseline": ""} if baseline is not None else last)
    return rows


def profile_table(profiles: Sequence[Profile]) -> str:
    """The runs as an aligned plain-text table (the CLI's output)."""
    return text_table(run_rows(profiles))


def _columns(rows: Sequence[Row], columns: Sequence[str] | None) -> list[str]:
    if columns is not None:
        return list(columns)
    return list(dict.fromkeys(key for row in rows for key in row))


def text_table(rows: Sequence[Row], columns: Sequence[str] | None = None) -> str:
    """Rows as aligned text: first column left, the others right, a rule under the header."""
    columns = _columns(rows, columns)
    cells = [columns] + [[row.get(c, "") for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
             for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


_CELL = "padding:4px 12px;border-bottom:1px solid #ddd;text-align:{align};white-space:nowrap"
_FAILED = {"OOM", "host OOM", "error"}
LIMIT_RED = "#d62728"  # failures are red, like the limit line in the figures


def _cell(tag: str, text: str, first: bool) -> str:
    style = _CELL.format(align="left" if first else "right")
    if text in _FAILED:
        style += f";color:{LIMIT_RED};font-weight:600"
    return f"<{tag} style='{style}'>{html.escape(text)}</{tag}>"


def html_table(rows: Sequence[Row], columns: Sequence[str] | None = None, caption: str = "") -> str:
    """Rows as one self-styled HTML table (no stylesheet needed); failed outcomes in red."""
    columns = _columns(rows, columns)
    head = "".join(_cell("th", c, i == 0) for i, c in enumerate(columns))
    body = "".join("<tr>" + "".join(_cell("td", row.get(c, ""), i == 0) for i, c in enumerate(columns)) + "</tr>"
                   for row in rows)
    title = f"<caption style='text-align:left;font-weight:600;padding:4px 0'>{html.escape(caption)}</caption>" if caption else ""
    return (f"<table class='mom-table' style='border-collapse:collapse;font-variant-numeric:tabular-nums'>"
            f"{title}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
