"""Explorer: the ipywidgets panel where a user moves mom's settings and watches memory.

The panel only gathers settings, calls `memory.profile` / `memory.find_max_context`, and hands
the results to the figures of live.py and plots.py; it computes nothing itself. Every button
has a method twin (`run`, `compare`, `find_max_context`) so notebooks and tests drive it the
same way a user does, and reading `summary`, `live` and `sweep` is reading what is shown.

Decisions:
- Nothing heavy happens at construction: a preset is loaded at the first run, and only one
  model is held at a time (two 8B models would not fit one GPU).
- Errors are messages, not tracebacks: a config mom refuses, an offload mode the machine
  cannot run, or any other failure is shown in red and kept in `last_error`. An OOM is a
  result: it is drawn and tabled like any run.
- On CPU the runs use the tensor tracker and the "device limit" control caps its pretend
  device memory, so the OOM wall shows on a laptop. On a GPU the limit is the card's memory.
- Runs are remembered by (model, config, context, new tokens, limit), so "Compare with
  baseline" reuses a baseline already measured.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import plotly.graph_objects as go
import torch
from torch import nn

from ..config import OFFLOAD_MODES, MomConfig
from ..engine import families
from ..load import load
from ..memory.events import GiB, MaxContextResult, MiB, Profile, format_bytes
from ..memory.profile import find_max_context, profile
from ..presets import PRESETS, TINY_PRESETS
from . import plots
from .live import LiveFigures, model_weights_by_layer, update_in_place

logger = logging.getLogger(__name__)

GIVEN_MODEL = "(the model given)"
CPU_DEFAULTS = dict(context=8192, new_tokens=8, mini_sequences=8, limit=32, unit="MiB", resolution=1024)
GPU_DEFAULTS = dict(context=131072, new_tokens=32, mini_sequences=16, limit=0, unit="GiB", resolution=8192)


def context_options(low: int, high: int) -> list[tuple[str, int]]:
    """Log-spaced contexts from low to high: powers of two and the halfway points (x1.5)."""
    options, value = [], low
    while value <= high:
        for candidate in (value, value * 3 // 2):
            if candidate <= high:
                options.append((_short(candidate), candidate))
        value *= 2
    return options


def _short(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else f"{n / 1024:.1f}k"


class Explorer:
    """The memory explorer panel; display it as the last expression of a notebook cell.

    Args:
        model: a loaded causal LM to explore; None offers the presets (tiny ones on CPU).
        device: where presets are loaded; default cuda when available, else cpu.
        limit_bytes: pretend device memory for CPU runs (the tracker's limit); default 32 MiB
            on CPU, none on a GPU (the card is the limit).
        context: the starting context length.

    Attributes:
        controls: the setting widgets by name (model, context, mini_sequences, offload,
            budget_fits, budget, new_tokens, limit).
        buttons: run, compare, max_context.
        live: the LiveFigures (per-layer and timeline FigureWidgets).
        sweep: the peak-memory-against-context FigureWidget.
        profiles: every run so far, in order; `summary` is the table shown.
    """

    def __init__(self, model: nn.Module | None = None, device: str | torch.device | None = None,
                 limit_bytes: int | None = None, context: int | None = None):
        self.device = torch.device(device) if device is not None else _default_device(model)
        self.cuda = self.device.type == "cuda"
        self.defaults = dict(GPU_DEFAULTS if self.cuda else CPU_DEFAULTS)
        if limit_bytes is not None:
            self.defaults["limit"] = limit_bytes / (GiB if self.cuda else MiB)
        self.unit = GiB if self.defaults["unit"] == "GiB" else MiB
        self._given = model
        self._model: nn.Module | None = model
        self._model_name = GIVEN_MODEL if model is not None else None
        self.profiles: list[Profile] = []
        self._sweep_runs: list[Profile] = []  # the current model's runs: the sweep chart's data
        self._runs: dict[tuple, Profile] = {}
        self.summary = None
        self.last_error: BaseException | None = None
        self.max_context: MaxContextResult | None = None
        self.controls = self._make_controls(context)
        self.buttons = self._make_buttons()
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="progress",
                                            layout=widgets.Layout(width="320px"))
        self.message = widgets.HTML()
        self.summary_html = widgets.HTML()
        self.live = LiveFigures({}, 0, on_progress=self._on_progress)
        self.sweep = go.FigureWidget(plots.sweep_figure([], None))
        if model is not None:
            self._reset_live(model)
            self.live.redraw()
        self.widget = self._layout()

    # -- display --
    def _repr_mimebundle_(self, **kwargs) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def close(self) -> None:
        """Close every widget and let the model go.

        ipywidgets keeps each widget in a global registry until it is closed, and the buttons'
        callbacks reach this object, so without close() a dropped Explorer keeps its model (and
        its GPU memory) alive for the rest of the kernel.
        """
        for widget in [*self.controls.values(), *self.buttons.values(), self.progress, self.message,
                       self.summary_html, self.live.layer_widget, self.live.timeline_widget, self.sweep, self.widget]:
            widget.close()
        self._model = self._given = None
        if self.cuda:
            torch.cuda.empty_cache()

    # -- settings --
    def config(self) -> MomConfig:
        """The MomConfig the controls describe (M = 1 means no mini-sequences).

        Raises:
            MomConfigError: the controls describe an impossible config.
        """
        c = self.controls
        m = c["mini_sequences"].value
        budget = None
        if c["offload"].value == "auto" and not c["budget_fits"].value:
            budget = int(c["budget"].value * self.unit)
        return MomConfig(mini_sequences=m if m > 1 else None, offload=c["offload"].value, kv_gpu_budget=budget)

    @property
    def context(self) -> int:
        return int(self.controls["context"].value)

    @property
    def new_tokens(self) -> int:
        return int(self.controls["new_tokens"].value)

    @property
    def limit_bytes(self) -> int | None:
        """The pretend device limit of CPU runs, in bytes (None: no limit, or on a GPU)."""
        value = self.controls["limit"].value
        return int(value * self.unit) if value > 0 and not self.cuda else None

    # -- actions --
    def run(self) -> Profile | None:
        """Run the model under the current settings, drawing memory as it goes."""
        return self._guard(lambda: self._measure(self.config()))

    def compare(self) -> tuple[Profile, Profile] | None:
        """Run the baseline (`MomConfig()`) and the current settings at the same context; table both."""
        def both():
            config = self.config()
            base = self._measure(MomConfig(), reuse=True)
            run = self._measure(config, reuse=True)
            return base, run
        return self._guard(both)

    def find_max_context(self) -> MaxContextResult | None:
        """Search the longest context that fits under the current settings, to one resolution step.

        On CPU it searches the whole context slider; on a GPU up to the context chosen.
        """
        def search():
            model, config = self._load(), self.config()
            high = self._search_high()
            self._say(f"searching the longest context for {config.describe()}, up to {high} tokens ...")
            self.progress.bar_style = "info"
            result = find_max_context(model, config, new_tokens=self.new_tokens, resolution=self.defaults["resolution"],
                                      high=high, limit_bytes=self.limit_bytes, progress=False, record=False)
            self.max_context = result
            self.profiles.extend(result.tries)
            self._sweep_runs.extend(result.tries)
            self._draw_sweep()
            self.progress.bar_style = "success"
            self._say(_max_context_message(result, config))
            return result
        return self._guard(search)

    # -- internals --
    def _measure(self, config: MomConfig, reuse: bool = False) -> Profile:
        model = self._load()
        key = (self._model_name, config, self.context, self.new_tokens, self.limit_bytes)
        title = f"{config.describe()}, {self.context} tokens"
        if reuse and key in self._runs:
            result = self._runs[key]
            self.live.show(result.events, title)
        else:
            self._say(f"running {title} ...")
            self.progress.bar_style = "info"
            self.live.start(title, self.new_tokens, self._device_limit(model))
            result = profile(model, config, self.context, self.new_tokens, limit_bytes=self.limit_bytes,
                             listeners=[self.live])
            self.live.finish()
            self.progress.value = self.progress.max if not result.oom else self.progress.value
            self._runs[key] = result
            self.profiles.append(result)
            self._sweep_runs.append(result)
        self.progress.bar_style = "danger" if result.oom else "success"
        self._show_result(result)
        return result

    def _show_result(self, result: Profile) -> None:
        base = self._runs.get((self._model_name, MomConfig(), result.context, result.new_tokens, self.limit_bytes))
        base = base if base is not result else None
        self.summary = plots.summary_table(result, base)
        self.summary_html.value = self.summary.to_html(border=0)
        self._draw_sweep()
        lines = [_outcome_line(run) for run in (base, result) if run is not None]
        if base is not None and not (base.oom or result.oom) and base.peak_gpu_bytes:
            lines.append(f"peak memory {result.peak_gpu_bytes / base.peak_gpu_bytes:.2f}x the baseline's")
        self._say("; ".join(lines), error=result.oom)

    def _search_high(self) -> int:
        """On CPU the whole slider (tries take seconds); on a GPU up to the chosen context (tries take minutes)."""
        return self.context if self.cuda else max(v for _, v in self.controls["context"].options)

    def _draw_sweep(self) -> None:
        update_in_place(self.sweep, plots.sweep_figure(self._sweep_runs, self._device_limit(self._model)))

    def _device_limit(self, model: nn.Module | None) -> int | None:
        if not self.cuda:
            return self.limit_bytes
        return torch.cuda.get_device_properties(self.device).total_memory

    def _load(self) -> nn.Module:
        name = self.controls["model"].value
        if name == self._model_name and self._model is not None:
            return self._model
        self._model = None  # let the previous model go before the next one is built
        if self.cuda:
            torch.cuda.empty_cache()
        self._say(f"loading {name} on {self.device} ...")
        self._model = load(name, device=self.device)
        self._model_name = name
        self._sweep_runs = []
        self._reset_live(self._model)
        return self._model

    def _reset_live(self, model: nn.Module) -> None:
        self.live.weights_by_layer = model_weights_by_layer(model)
        self.live.layers = len(families.decoder_layers(model))

    def _guard(self, action: Callable[[], Any]) -> Any:
        self.last_error = None
        try:
            return action()
        except Exception as error:  # noqa: BLE001 - shown to the user, kept in last_error
            logger.info("explorer action failed", exc_info=True)
            self.last_error = error
            self.progress.bar_style = "danger"
            self._say(f"{type(error).__name__}: {error}", error=True)
            return None

    def _say(self, text: str, error: bool = False) -> None:
        color = "#b00020" if error else "#333"
        self.message.value = f"<span style='color:{color}'>{html.escape(text)}</span>"

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.max = total
        self.progress.value = done

    # -- widgets --
    def _make_controls(self, context: int | None) -> dict[str, widgets.Widget]:
        d, unit = self.defaults, self.defaults["unit"]
        names = [GIVEN_MODEL] if self._given is not None else list(TINY_PRESETS if not self.cuda else PRESETS)
        default_model = names[0] if not self.cuda or self._given is not None else "llama-3.1-8b"
        options = context_options(256, 16384) if not self.cuda else context_options(4096, 1 << 20)
        values = [v for _, v in options]
        start = min(values, key=lambda v: abs(v - (context or d["context"])))
        style = {"description_width": "initial"}
        controls = {
            "model": widgets.Dropdown(options=names, value=default_model, description="model", style=style),
            "context": widgets.SelectionSlider(options=options, value=start, description="context", style=style,
                                               continuous_update=False),
            "new_tokens": widgets.IntSlider(value=d["new_tokens"], min=1, max=256, description="new tokens",
                                            style=style, continuous_update=False),
            "mini_sequences": widgets.IntSlider(value=d["mini_sequences"], min=1, max=64,
                                                description="mini-sequences M (1: off)", style=style,
                                                continuous_update=False),
            "offload": widgets.Dropdown(options=list(OFFLOAD_MODES), value="none", description="offload", style=style),
            "budget_fits": widgets.Checkbox(value=True, description="GPU KV budget: what fits", style=style),
            "budget": widgets.BoundedFloatText(value=0.0, min=0.0, max=1e6, description=f"GPU KV budget ({unit})",
                                               style=style, disabled=True),
            "limit": widgets.BoundedFloatText(value=d["limit"], min=0.0, max=1e6, style=style, disabled=self.cuda,
                                              description=f"device limit ({unit}, 0: none)"),
        }
        controls["offload"].observe(self._on_budget_change, "value")
        controls["budget_fits"].observe(self._on_budget_change, "value")
        return controls

    def _on_budget_change(self, _change=None) -> None:
        auto = self.controls["offload"].value == "auto"
        self.controls["budget_fits"].disabled = not auto
        self.controls["budget"].disabled = not auto or self.controls["budget_fits"].value

    def _make_buttons(self) -> dict[str, widgets.Button]:
        buttons = {
            "run": widgets.Button(description="Run", button_style="primary", icon="play",
                                  tooltip="prefill the context, then generate the new tokens, drawing memory per layer"),
            "compare": widgets.Button(description="Compare with baseline", icon="balance-scale",
                                      layout=widgets.Layout(width="200px"),
                                      tooltip="run plain Hugging Face and these settings at this context"),
            "max_context": widgets.Button(description="Find max context", icon="search",
                                          layout=widgets.Layout(width="180px"),
                                          tooltip="the longest context that fits (CPU: the whole slider; GPU: up to "
                                                  "the context chosen)"),
        }
        buttons["run"].on_click(lambda _: self.run())
        buttons["compare"].on_click(lambda _: self.compare())
        buttons["max_context"].on_click(lambda _: self.find_max_context())
        return buttons

    def _layout(self) -> widgets.Widget:
        c, b = self.controls, self.buttons
        rows = [
            widgets.HBox([c["model"], c["context"], c["new_tokens"]]),
            widgets.HBox([c["mini_sequences"], c["offload"], c["budget_fits"], c["budget"]]),
            widgets.HBox([c["limit"]]),
            widgets.HBox([b["run"], b["compare"], b["max_context"], self.progress]),
            self.message,
            self.live.layer_widget,
            self.live.timeline_widget,
            self.summary_html,
            self.sweep,
        ]
        return widgets.VBox(rows)


def _default_device(model: nn.Module | None) -> torch.device:
    if model is not None:
        return next(model.parameters()).device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _outcome_line(run: Profile) -> str:
    where = f"{plots.profile_label(run)} at {run.context} tokens"
    if run.oom:
        return f"{where}: out of memory ({run.error})"
    return f"{where}: peak {format_bytes(run.peak_gpu_bytes)}"


def _max_context_message(result: MaxContextResult, config: MomConfig) -> str:
    if result.maximum is None:
        return f"{config.describe()}: even the shortest context tried ran out of memory"
    failing = result.first_failure_above
    above = f"; {failing.context} tokens did not" if failing is not None else " (the largest context tried)"
    return (f"{config.describe()}: the longest context that fits is {result.maximum} tokens "
            f"(to {result.resolution} tokens){above}; {len(result.tries)} tries")
