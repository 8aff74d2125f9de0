"""Jupyter: widgets and plots over memory/ and engine/ (needs the `notebooks` extra).

Names are imported on first use, so `import mom.explore` costs nothing and the plotting
helpers (plotly only) work where ipywidgets is not installed.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Explorer": "explorer",
    "LiveFigures": "live",
    "model_weights_by_layer": "live",
    "layer_figure": "plots",
    "layer_breakdown": "plots",
    "timeline_figure": "plots",
    "sweep_figure": "plots",
    "summary_table": "plots",
    "report_html": "report",
    "write_report": "report",
    "terminal_table": "report",
    "run_demo": "demo",
    "DemoResult": "demo",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
