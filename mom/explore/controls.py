"""The Explorer's widgets: what is on the panel, each mode's options and defaults, and the layout.

explorer.py owns the state and what a click does; this module only builds and arranges the
widgets, so "what does the panel offer in simulate mode?" is answered in one place, apart from
"what happens on Run?".

Decisions:
- One set of widgets serves both modes; a mode change resets their options and defaults and
  hides what does not apply (the pretend limit in simulate mode, the card and host RAM in
  measure mode), so the layout never jumps between two panels.
- Contexts are stops of a log-spaced slider (powers of two and the halfway points), with a typed
  field beside it. A context typed or given that is not a stop becomes a stop of its own, never
  a rounded neighbour: the run is at the length asked for.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets

from .. import checks
from ..config import OFFLOAD_MODES
from ..memory.events import GiB, MiB
from ..presets import PRESETS, TINY_PRESETS
from . import simulated

GIVEN_MODEL = "(the model given)"
CPU_DEFAULTS = dict(context=8192, new_tokens=8, mini_sequences=8, limit=32, unit="MiB", resolution=1024,
                    contexts=(256, 16384))
GPU_DEFAULTS = dict(context=131072, new_tokens=32, mini_sequences=16, limit=0, unit="GiB", resolution=8192,
                    contexts=(4096, 1 << 20))
# predictions cost the same at any length: the slider reaches past what any card in the table holds
SIMULATE_DEFAULTS = dict(GPU_DEFAULTS, contexts=(4096, 4 << 20))
MODES = ("simulate", "measure")
SIMULATED_MODEL = "llama-3.1-8b"
MAX_GPUS = 8  # cards of one host a simulated device map spreads over (an HGX box)
HOST_GIB = 128  # host RAM of the simulated machine, a setting (a two-socket server's smallest usual size)
# M stops about x1.5 apart: one drag step is a small change, and the track stays readable
M_OPTIONS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
_SLIDER = dict(layout=widgets.Layout(width="430px"), style={"description_width": "130px"})
_STYLE = {"description_width": "initial"}


def context_options(low: int, high: int) -> list[tuple[str, int]]:
    """Log-spaced contexts from low to high: powers of two and the halfway points (x1.5)."""
    options, value = [], low
    while value <= high:
        for candidate in (value, value * 3 // 2):
            if candidate <= high:
                options.append((short(candidate), candidate))
        value *= 2
    return options


def short(n: int) -> str:
    """8192 -> '8k', 6144 -> '6k', 1536 -> '1.5k'; a context typed by hand stays exact: 8000 -> '8000'."""
    if n >= 1024 and n % 512 == 0:
        return f"{n // 1024}k" if n % 1024 == 0 else f"{n / 1024:.1f}k"
    return str(n)


def with_stop(options: list[tuple[str, int]], context: int) -> list[tuple[str, int]]:
    """The slider's options with `context` as a stop of its own (unchanged if it is one already)."""
    if context in [v for _, v in options]:
        return list(options)
    return sorted([*options, (short(context), context)], key=lambda o: o[1])


def defaults_for(mode: str, cuda: bool, limit_bytes: int | None) -> dict[str, Any]:
    """A mode's starting values; a pretend limit given to the Explorer replaces the default one."""
    d = dict(SIMULATE_DEFAULTS if mode == "simulate" else GPU_DEFAULTS if cuda else CPU_DEFAULTS)
    if limit_bytes is not None:
        d["limit"] = limit_bytes / (GiB if d["unit"] == "GiB" else MiB)
    return d


def unit_of(defaults: dict[str, Any]) -> int:
    """Bytes per unit the mode shows (GiB or MiB)."""
    return GiB if defaults["unit"] == "GiB" else MiB


def model_names(mode: str, given: bool, preset: str | None, cuda: bool) -> tuple[list[str], str]:
    """(model dropdown options, default): real presets to simulate, tiny ones to measure on CPU,
    every preset on a GPU; a loaded model given is the only option."""
    if given:
        return [GIVEN_MODEL], GIVEN_MODEL
    if mode == "simulate":
        names = [p for p in PRESETS if p not in TINY_PRESETS]
    else:
        names = list(TINY_PRESETS if not cuda else PRESETS)
    if preset is not None and preset not in names:
        names.append(preset)
    return names, preset or (SIMULATED_MODEL if mode == "simulate" or cuda else names[0])


def make_controls(first_model: str, mode: str, gpu: str, host_gib: float, gpus: int,
                  cuda: bool) -> dict[str, widgets.Widget]:
    """Every setting widget, by name, before any mode is applied (`apply_mode` sets their values)."""
    cards = simulated.gpu_options()
    return {
        "mode": widgets.ToggleButtons(options=list(MODES), value=mode, description="mode", style=_STYLE,
                                      tooltips=["predict for a chosen GPU: mom's own code on shape-only tensors",
                                                "run for real on this machine (tiny models on CPU)"]),
        "model": widgets.Dropdown(options=[first_model], description="model", style=_STYLE,
                                  layout=widgets.Layout(width="260px")),
        "context": widgets.SelectionSlider(options=[("1", 1)], description="context (tokens)",
                                           continuous_update=False, **_SLIDER),
        "context_tokens": widgets.BoundedIntText(value=1, min=1, max=1 << 30, description="or type", style=_STYLE,
                                                 layout=widgets.Layout(width="150px")),
        "new_tokens": widgets.IntSlider(value=1, min=1, max=256, description="new tokens",
                                        continuous_update=False, **_SLIDER),
        "mini_sequences": widgets.SelectionSlider(options=[("1 (off)" if m == 1 else str(m), m) for m in M_OPTIONS],
                                                  description="mini-sequences M", continuous_update=False, **_SLIDER),
        "offload": widgets.Dropdown(options=list(OFFLOAD_MODES), value="none", description="offload KV",
                                    style=_STYLE, layout=widgets.Layout(width="200px")),
        "budget_fits": widgets.Checkbox(value=True, description="KV kept on device: what fits", style=_STYLE,
                                        layout=widgets.Layout(width="240px")),
        "budget": widgets.BoundedFloatText(value=0.0, min=0.0, max=1e6, style=_STYLE,
                                           layout=widgets.Layout(width="200px")),
        "limit_on": widgets.Checkbox(value=not cuda, description="pretend device limit", style=_STYLE,
                                     layout=widgets.Layout(width="190px")),
        "limit": widgets.BoundedFloatText(value=1.0, min=0.25, max=1e6, style=_STYLE,
                                          layout=widgets.Layout(width="170px")),
        "gpu": widgets.Dropdown(options=cards, value=gpu if gpu in cards else simulated.CUSTOM,
                                description="simulated GPU", style=_STYLE, layout=widgets.Layout(width="270px")),
        # the custom size starts at the size of the card given
        "gpu_gib": widgets.BoundedFloatText(value=simulated.card_of(gpu, 1.0).total_bytes / GiB, min=1.0, max=1e4,
                                            description="custom (GiB)", style=_STYLE,
                                            layout=widgets.Layout(width="160px")),
        "gpus": widgets.BoundedIntText(value=gpus, min=1, max=MAX_GPUS, description="GPUs", style=_STYLE,
                                       layout=widgets.Layout(width="110px")),
        "host_gib": widgets.BoundedFloatText(value=host_gib, min=0.0, max=1e5, description="host RAM (GiB)",
                                             style=_STYLE, layout=widgets.Layout(width="180px")),
        "beside_predicted": widgets.Checkbox(value=cuda, description="predicted beside", style=_STYLE,
                                             layout=widgets.Layout(width="170px")),
    }


def apply_mode(controls: dict[str, widgets.Widget], mode: str, defaults: dict[str, Any],
               names: tuple[list[str], str], cuda: bool, context: int | None = None) -> None:
    """Set every control to `mode`'s options and `defaults` (a context given is kept exactly)."""
    c, d = controls, defaults
    c["model"].options, c["model"].value = names
    options = context_options(*d["contexts"])
    values = [v for _, v in options]
    if context is not None:
        options = with_stop(options, context)
    start = context if context is not None else min(values, key=lambda v: abs(v - d["context"]))
    c["context_tokens"].min, c["context_tokens"].max = 1, 1 << 30  # wide while the slider moves
    c["context"].options, c["context"].value = options, start
    c["context_tokens"].value = start
    c["context_tokens"].min, c["context_tokens"].max = d["contexts"]
    c["new_tokens"].value, c["mini_sequences"].value = d["new_tokens"], d["mini_sequences"]
    c["budget"].description = f"KV budget ({d['unit']})"
    c["limit"].description = f"limit ({d['unit']})"
    c["limit"].value = max(d["limit"], 0.25)
    simulate = mode == "simulate"
    for name in ("limit_on", "limit"):
        show(c[name], not simulate and not cuda)
    for name in ("gpu", "gpu_gib", "gpus", "host_gib"):
        show(c[name], simulate)
    show(c["beside_predicted"], not simulate)


def make_buttons() -> dict[str, widgets.Button]:
    """Run, Compare, Find max and Stop (the Explorer binds their clicks)."""
    wide = widgets.Layout(width="190px")
    return {
        "run": widgets.Button(description="Run", button_style="primary", icon="play",
                              tooltip="prefill the context, then generate the new tokens, drawing memory per layer"),
        "compare": widgets.Button(description="Compare with baseline", icon="balance-scale", layout=wide,
                                  tooltip="run plain Hugging Face and these settings at this context, side by side"),
        "max_context": widgets.Button(description="Find max context", icon="search", layout=wide,
                                      tooltip="the longest context that fits (CPU: the whole slider; GPU: up to "
                                              "the context chosen)"),
        "stop": widgets.Button(description="Stop", icon="stop", button_style="warning", disabled=True,
                               tooltip="cancel the run at its next layer; the model is restored"),
    }


def layout(controls: dict[str, widgets.Widget], buttons: dict[str, widgets.Button],
           below: list[widgets.Widget]) -> widgets.Widget:
    """The panel: setup, model and context, mom's settings, the buttons, then `below` (the progress
    bar first, on the buttons' row; then the message, the figures and the table, in order)."""
    c, b = controls, buttons
    wrap = widgets.Layout(flex_flow="row wrap", align_items="center")
    progress, *rest = below
    rows = [
        widgets.HBox([c["mode"], c["gpu"], c["gpu_gib"], c["gpus"], c["host_gib"], c["limit_on"], c["limit"],
                      c["beside_predicted"]], layout=wrap),
        widgets.HBox([c["model"], c["context"], c["context_tokens"], c["new_tokens"]], layout=wrap),
        widgets.HBox([c["mini_sequences"], c["offload"], c["budget_fits"], c["budget"]], layout=wrap),
        widgets.HBox([b["run"], b["compare"], b["max_context"], b["stop"], progress], layout=wrap),
        *rest,
    ]
    return widgets.VBox(rows, layout=widgets.Layout(width="100%"))


def show(widget: widgets.Widget, shown: bool) -> None:
    widget.layout.display = None if shown else "none"


def check_mode(mode: str | None, loaded: bool, preset: str | None, cuda: bool) -> str:
    """The mode asked for, else simulate where there is no GPU and nothing small to run for real."""
    if mode is not None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        return mode
    if cuda or loaded or preset in TINY_PRESETS:
        return "measure"
    return "simulate"


def check_context(context, bounds: tuple[int, int]) -> int | None:
    """A context given to the Explorer: None, or a positive whole number within the slider."""
    if context is None:
        return None
    context = checks.check_context(context)
    low, high = bounds
    if not low <= context <= high:
        raise ValueError(f"context {context} is outside the explorer's context slider ({low} to {high} tokens here); "
                         f"pick one in that range, or use mom.profile(model, config, context={context}) for any length")
    return context
