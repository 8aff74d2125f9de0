"""Explorer: the ipywidgets panel where a user moves mom's settings and watches memory.

The panel only gathers settings, calls `memory.profile` / `memory.find_max_context` (or their
predicted twins), and hands the results to the figures of live.py and plots.py; it computes
nothing itself. Its widgets, each mode's defaults and the layout are built in controls.py, and
what it says under the buttons is worded in messages.py: this module holds the state and what
each click does. Every button has a method twin (`run`, `compare`, `find_max_context`, `stop`)
so notebooks and tests drive it the same way a user does, and reading `summary`, `live` and
`sweep` is reading what is shown. Everything drawn comes from Profiles and their events, so a
Profile made any other way (a prediction, a saved run) is drawn by `show_profile` with no
special case.

Decisions:
- Nothing heavy happens at construction: a preset is loaded at the first run, and only one
  model is held at a time (two 8B models would not fit one GPU).
- A button's work runs on a background thread. ipywidgets runs click callbacks in the
  kernel, so a run inside the callback would freeze the panel (figures update only at the
  end) and queue every later click, Stop included. While work runs, Run / Compare / Find max
  and the settings are disabled, Stop is enabled, and a second run is refused; Stop cancels
  at the next hooked module call and the model is restored (memory/cancel.py). The kernel
  itself reads "idle" during a run, since it is free to take the Stop click; the panel says
  "running". The method twins wait for their work by default (`wait=False` returns at once,
  as a click does; `wait()` joins).
- Errors are messages, not tracebacks: a config mom refuses, an offload mode the machine
  cannot run, or any other failure is shown in red and kept in `last_error`. An OOM is a
  result: it is drawn (the failing allocation in red where it happened) and tabled.
- On CPU the runs use the tensor tracker and the "pretend device limit" caps its memory, so
  the OOM wall shows on a laptop. On a GPU the limit is the card's memory.
- Constructor arguments are checked, never silently changed (mom/checks.py): a limit is None
  or positive bytes; a context must be positive and within the slider's range, and one that
  is not a slider stop is added as a stop rather than rounded to a neighbour.
- Runs are remembered by (mode, model, config, context, new tokens, limit or card and host
  RAM), so "Compare with baseline" reuses a baseline already measured or predicted.

Two modes, one panel (a toggle switches):
- simulate: `mom.predict` runs mom's own code on shape-only tensors and answers what a chosen
  card would hold (mom/simulate), so a laptop shows the real-size picture: llama-3.1-8b on an
  H100-80GB, in GiB, in about a second a run. It is where the panel opens without a GPU and
  with no tiny model given. The limit is the card's usable memory (a GPU dropdown, a custom size
  too), host RAM bounds the offloaded cache, Find max searches over predictions
  (`mom.simulate.find_max_context`) and the sweep draws the card's and host's physical limit
  (simulate/limits.py) beside the maximum found. Stop is disabled: a prediction is short and
  is not hooked for cancelling. Everything shown is labelled "predicted on <card>", with the
  calibration it used (simulated.py).
- measure: real runs, of tiny models on CPU (the tensor tracker and its pretend limit) or of
  any model on a GPU. On a GPU a Run also predicts itself for the same card and draws the
  predicted bars beside the measured ones ("predicted beside").
"""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import torch
from torch import nn

from .. import checks
from ..config import MomConfig
from ..engine import families
from ..load import load
from ..memory import tables
from ..memory.cancel import Cancel
from ..memory.events import GiB, MaxContextResult, Profile
from ..memory.profile import find_max_context, profile
from ..simulate import find_max_context as predicted_max_context
from ..simulate import predict
from ..simulate.fake import fake_model, model_config
from . import controls as panel
from . import messages, plots, simulated
from .controls import GIVEN_MODEL, HOST_GIB, MAX_GPUS
from .live import LiveFigures, figure_widget, fit_width, model_weights_by_layer, update_in_place

logger = logging.getLogger(__name__)

# least time between two live redraws: a redraw of a prediction's 1,800 events takes about 0.3 s, and
# a 128k prediction about 1.5 s on 2 cores, so in simulate mode it draws once, at its end (every 2 s
# for the long ones: 720k takes about 15 s)
SIMULATE_REDRAW_S, MEASURE_REDRAW_S = 2.0, 0.25


class Explorer:
    """The memory explorer panel; display it as the last expression of a notebook cell.

    Args:
        model: a loaded causal LM, or a preset name (loaded at the first run); None offers the
            presets (tiny ones when measuring on CPU).
        device: where presets are loaded; default cuda when available, else cpu.
        limit_bytes: pretend device memory for CPU runs (the tracker's limit), a positive number
            of bytes; default 32 MiB on CPU, none on a GPU (the card is the limit).
        context: the starting context length, within the slider's range.
        mode: "simulate" or "measure"; default simulate on a machine without a GPU unless the
            model is a loaded one or a tiny preset, else measure.
        gpu: the simulated card: a name of `mom.simulate.GPUS` (default H100-80GB).
        host_gib: host RAM of the simulated machine, GiB (bounds the offloaded cache).
        gpus: how many simulated cards the model is spread over (1 to 8; mom.predict's even
            split): each layer's bars in its card's colour, one timeline per card.

    Raises:
        TypeError: `model` is neither a torch module nor a preset name.
        ValueError: an unknown preset, mode or GPU, a limit of 0 or below, a context outside
            the slider, or gpus outside 1 to 8.

    Attributes:
        controls: the setting widgets by name (mode, model, context (the slider), context_tokens
            (the same context, typed), mini_sequences, offload, budget_fits, budget, new_tokens,
            limit_on, limit, gpu, gpu_gib (the custom size), gpus, host_gib, beside_predicted).
        buttons: run, compare, max_context, stop.
        live: the LiveFigures (per-layer and timeline FigureWidgets).
        sweep: the peak-memory-against-context FigureWidget.
        profiles: every run so far, in order; `summary` is the table shown.
        physical_limit: the PhysicalLimit drawn on the sweep (after a Find max), or None.
    """

    def __init__(self, model: nn.Module | str | None = None, device: str | torch.device | None = None,
                 limit_bytes: int | None = None, context: int | None = None, mode: str | None = None,
                 gpu: str = simulated.DEFAULT_GPU, host_gib: float = HOST_GIB, gpus: int = 1):
        preset = _check_model(model)
        limit_bytes = checks.check_limit(limit_bytes)
        self.device = checks.check_device(device) or _default_device(model if preset is None else None)
        self.cuda = self.device.type == "cuda"
        mode = panel.check_mode(mode, isinstance(model, nn.Module), preset, self.cuda)
        simulated.card_of(gpu, 1.0)  # an unknown card is refused here, not at the first run
        if isinstance(gpus, bool) or not isinstance(gpus, int) or not 1 <= gpus <= MAX_GPUS:
            raise ValueError(f"gpus must be a whole number from 1 to {MAX_GPUS}, got {gpus!r}")
        self._gpus_arg = gpus
        self._limit_arg = limit_bytes
        self.defaults = panel.defaults_for(mode, self.cuda, limit_bytes)
        self.unit = panel.unit_of(self.defaults)
        self._given = model if preset is None else None
        self._model: nn.Module | None = self._given
        self._model_name = GIVEN_MODEL if self._given is not None else None
        self.profiles: list[Profile] = []
        self._sweep_runs: list[Profile] = []  # the current model's runs: the sweep chart's data
        self._runs: dict[tuple, Profile] = {}
        self.summary = None
        self.last_error: BaseException | None = None
        self.max_context: MaxContextResult | None = None
        self.result: Any = None
        self._cancel = Cancel()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.physical_limit = None
        self._limits = simulated.PhysicalLimits()
        self._marks: dict[str, tuple[str, int, str]] = {}
        self._preset = preset
        self.controls = self._make_controls(preset, panel.check_context(context, self.defaults["contexts"]), mode,
                                            gpu, host_gib)
        self.buttons = self._make_buttons()
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="progress",
                                            layout=widgets.Layout(width="300px"))
        self.message = widgets.HTML(f"<span style='color:#666'>{html.escape(self._hint())}</span>")
        self.summary_html = widgets.HTML()
        self.live = LiveFigures({}, 0, on_progress=self._on_progress)
        self.sweep = figure_widget(plots.sweep_figure([], None, title=self._sweep_title()))
        if self._given is not None:
            self._reset_live()
        self.live.redraw()
        self.widget = panel.layout(self.controls, self.buttons,
                                   [self.progress, self.message, self.live.layer_widget, self.live.timeline_widget,
                                    self.summary_html, self.sweep])
        self.controls["mode"].observe(self._on_mode_change, "value")

    # -- display --
    def _repr_mimebundle_(self, **kwargs) -> Any:
        fit_width([self.live.layer_widget, self.live.timeline_widget, self.sweep])
        return self.widget._repr_mimebundle_(**kwargs)

    def close(self) -> None:
        """Stop any run, close every widget and let the model go.

        ipywidgets keeps each widget in a global registry until it is closed, and the buttons'
        callbacks reach this object, so without close() a dropped Explorer keeps its model (and
        its GPU memory) alive for the rest of the kernel.
        """
        self.stop()
        self.wait()
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
        """The pretend device limit of CPU runs, in bytes (None: no limit, on a GPU, or simulating)."""
        c = self.controls
        if self.cuda or self.simulating or not c["limit_on"].value or c["limit"].value <= 0:
            return None
        return int(c["limit"].value * self.unit)

    @property
    def mode(self) -> str:
        """"simulate" (predictions for a chosen card) or "measure" (real runs on this machine)."""
        return self.controls["mode"].value

    @property
    def simulating(self) -> bool:
        return self.mode == "simulate"

    @property
    def card(self):
        """The simulated card (a mom.simulate.GPU) the GPU dropdown names.

        Raises:
            ValueError: a custom size of 0 GiB or below.
        """
        return simulated.card_of(self.controls["gpu"].value, self.controls["gpu_gib"].value)

    @property
    def gpus(self) -> int:
        """How many simulated cards the model is spread over (mom.predict's even split); 1 when measuring."""
        return self.controls["gpus"].value if self.simulating else 1

    @property
    def host_bytes(self) -> int:
        """Host RAM of the simulated machine, in bytes."""
        return int(self.controls["host_gib"].value * GiB)

    @property
    def busy(self) -> bool:
        """Work is running (a button's, or a method's)."""
        return self._lock.locked()

    # -- actions --
    def run(self, wait: bool = True) -> Profile | None:
        """Run the model under the current settings, drawing memory as it goes.

        Args:
            wait: return the Profile when done; False starts it in the background (as the Run
                button does) and returns None at once.
        """
        return self._launch(lambda: self._one(self.config()), wait)

    def compare(self, wait: bool = True) -> tuple[Profile, Profile] | None:
        """Run the baseline (`MomConfig()`) and the current settings at the same context, and show
        both side by side on one scale (a baseline measured before is reused)."""
        def both():
            config = self.config()
            base = self._one(MomConfig(), reuse=True)
            if base.cancelled:
                return None
            run = self._one(config, reuse=True, beside=base)
            return base, run
        return self._launch(both, wait)

    def find_max_context(self, wait: bool = True) -> MaxContextResult | None:
        """Search the longest context that fits under the current settings, to one resolution step.

        On CPU it searches the whole context slider; on a GPU up to the context chosen; when
        simulating, the whole slider over predictions, with the physical limit of the card and
        host RAM drawn beside the maximum. Each try is added to the sweep chart as it finishes.
        """
        return self._launch(self._search, wait)

    def stop(self) -> None:
        """Cancel the work in progress at its next hooked module call (the model is restored)."""
        if self.busy:
            self._cancel.cancel()
            self._say("stopping ...")

    def wait(self, timeout: float | None = None) -> Any:
        """Wait for background work (a click) to finish; returns its result."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.result

    def show_profile(self, result: Profile) -> None:
        """Draw a finished Profile (measured, loaded or predicted) as if it had just run."""
        label = plots.profile_label(result)
        self.live.show(result.events, self._title(label, result.context), label=label)
        self.profiles.append(result)
        self._sweep_runs.append(result)
        self._show_result(result)

    # -- running --
    def _launch(self, action: Callable[[], Any], wait: bool) -> Any:
        if not self._lock.acquire(blocking=False):
            self._say("a run is in progress: wait for it, or press Stop", error=True)
            return None
        self._cancel = Cancel()
        self._set_busy(True)
        if wait:
            return self._work(action)
        self._thread = threading.Thread(target=self._work, args=(action,), name="mom-explorer", daemon=True)
        self._thread.start()
        return None

    def _work(self, action: Callable[[], Any]) -> Any:
        try:
            self.result = self._guard(action)
            return self.result
        finally:
            self._set_busy(False)
            self._lock.release()

    def _set_busy(self, busy: bool) -> None:
        for name in ("run", "compare", "max_context"):
            self.buttons[name].disabled = busy
        self.buttons["stop"].disabled = not busy or self.simulating  # a prediction is not hooked for cancelling
        for control in self.controls.values():
            control.disabled = busy
        if not busy:
            self._on_budget_change()
            self._on_limit_change()
            self._on_gpu_change()

    def _one(self, config: MomConfig, reuse: bool = False, beside: Profile | None = None) -> Profile:
        """One run of `config` (measured, or predicted when simulating), drawn live; a run made
        before under the same key is shown again when `reuse`."""
        key = self._key(config, self.context)
        label = plots.profile_label(_labelled(config))
        pinned = {plots.profile_label(beside): beside.events} if beside is not None else None
        title = self._title(f"{next(iter(pinned))} and {label}" if pinned else label, self.context)
        if reuse and key in self._runs:
            result = self._runs[key]
            self.live.show(result.events, title, label=label, beside=pinned)
        else:
            self._say(f"{'predicting' if self.simulating else 'running'} {title} ...")
            self.progress.bar_style = "info"
            self.progress.value = 0
            self.live.min_interval_s = SIMULATE_REDRAW_S if self.simulating else MEASURE_REDRAW_S
            if self.simulating:
                self._reset_live()  # the model on the meta device (cached after its first build)
            self.live.start(title, self.new_tokens, self._device_limit(), label=label, beside=pinned)
            result = self._predict(config) if self.simulating else self._measure(config)
            result.model_name = self._display_name()
            self.live.finish()
            if not result.cancelled:
                self._runs[key] = result
                self.profiles.append(result)
                self._sweep_runs.append(result)
        if beside is None and not self.simulating and self.controls["beside_predicted"].value and not result.cancelled:
            self._show_predicted_beside(result, config, title, label)
        self._show_result(result, beside)
        return result

    def _measure(self, config: MomConfig) -> Profile:
        return profile(self._load(), config, self.context, self.new_tokens, limit_bytes=self.limit_bytes,
                       listeners=[self.live], cancel=self._cancel)

    def _predict(self, config: MomConfig, card=None, context: int | None = None, listeners=None) -> Profile:
        card = card or self.card
        return predict(self._source(), config, context or self.context, self.new_tokens, gpu=card,
                       host_bytes=self.host_bytes if self.simulating else None, dtype=self._dtype(),
                       listeners=[self.live] if listeners is None else listeners,
                       gpus=self.gpus if self.gpus > 1 else None)

    def _show_predicted_beside(self, measured: Profile, config: MomConfig, title: str, label: str) -> None:
        """The same run predicted for this card, its bars left of the measured ones on one scale."""
        card = self._measure_card()
        prediction = self._predict(config, card, listeners=[])
        self.live.show(measured.events, f"{title}, measured and {simulated.predicted(card)}",
                       label=f"{label}: measured", beside={f"{label}: {simulated.predicted(card)}": prediction.events})

    def _key(self, config: MomConfig, context: int) -> tuple:
        where = (self.card, self.gpus, self.host_bytes) if self.simulating else self.limit_bytes
        return (self.mode, self._model_name_now(), config, context, self.new_tokens, where)

    def _search(self) -> MaxContextResult:
        config = self.config()
        high = self._search_high()
        resolution = self.defaults["resolution"]
        label = plots.profile_label(_labelled(config))
        self._say(f"searching the longest context for {label}, up to {high} tokens ...")
        self.progress.bar_style = "info"
        self.progress.value, self.progress.max = 0, messages.expected_tries(high, resolution)
        self._draw_physical_limit(config)

        def on_try(run: Profile) -> None:
            run.model_name = self._display_name()
            self.profiles.append(run)
            self._sweep_runs.append(run)
            self._draw_sweep()
            self.progress.max = max(self.progress.max, self.progress.value + 1)
            self.progress.value += 1
            self._say(messages.try_line(label, self.progress.value, run), error=run.oom)

        if self.simulating:
            result = predicted_max_context(self._source(), config, self.card, self.host_bytes, self.new_tokens,
                                           resolution=resolution, high=high, on_try=on_try,
                                           gpus=self.gpus if self.gpus > 1 else None)
        else:
            result = find_max_context(self._load(), config, new_tokens=self.new_tokens, resolution=resolution,
                                      high=high, limit_bytes=self.limit_bytes, progress=False, record=False,
                                      on_try=on_try, cancel=self._cancel)
        self.max_context = result
        self._mark_maximum(result, label)
        self.progress.max = max(1, self.progress.value)
        self.progress.bar_style = "warning" if result.cancelled else "success"
        self._say_lines([(messages.max_context_message(result, label, self._predicted_on()), False), *self._limit_lines()])
        return result

    def _draw_physical_limit(self, config: MomConfig) -> None:
        """Work out the physical limit of this card and host (when there is one to know) and draw it."""
        card, host = self._limit_card_and_host()
        if card is None:
            return
        self.physical_limit = self._limits.get(self._source(), self._model_name_now(), card, host,
                                               config.mini_sequences or 16, self.new_tokens, self._dtype())
        name, tokens = simulated.limit_mark(self.physical_limit)
        self._marks["physical"] = (name, tokens, "#000000")
        self._draw_sweep()

    def _mark_maximum(self, result: MaxContextResult, label: str) -> None:
        if result.maximum is None or not result.limit_reached or result.cancelled:
            return
        kind = simulated.predicted(self.card, self.gpus) if self.simulating else "measured"
        self._marks[label] = (f"{label}: {kind} maximum {result.maximum:,} tokens", result.maximum,
                              plots.config_color(label))
        self._draw_sweep()

    def _limit_card_and_host(self):
        """(card, host bytes) of the physical limit: the simulated ones, or this GPU and this host's
        RAM; (None, 0) on CPU, whose pretend limit has no host side."""
        if self.simulating:  # one card's formula: not drawn for several (it has no per-card form yet)
            return (self.card, self.host_bytes) if self.gpus == 1 else (None, 0)
        if self.cuda:
            import psutil

            return simulated.card_of_device(self.device), psutil.virtual_memory().total
        return None, 0

    def _limit_lines(self) -> list[tuple[str, bool]]:
        if self.physical_limit is None or not self._marks.get("physical"):
            return []
        return [(f"physical limit: {self.physical_limit.formula()}", False)]

    def _show_result(self, result: Profile, beside: Profile | None = None) -> None:
        base = beside if beside is not None else self._runs.get(self._key(MomConfig(), result.context))
        base = base if base is not result else None
        self.summary = plots.summary_table(result, base)
        caption = f"{simulated.predicted(self.card, self.gpus)} (mom.predict)" if self.simulating else ""
        self.summary_html.value = tables.html_table(tables.metric_rows(result, base), caption=caption)
        self._draw_sweep()
        on = self._predicted_on()
        lines = [(messages.outcome_line(run, on), run.oom) for run in (base, result) if run is not None]
        if base is not None and base.passed and result.passed and base.peak_gpu_bytes:
            lines.append((f"peak memory {result.peak_gpu_bytes / base.peak_gpu_bytes:.2f}x the baseline's", False))
        if self.simulating:
            lines += [(line, False) for line in simulated.prediction_lines(result)]
        self.progress.bar_style = "danger" if result.oom else "warning" if result.cancelled else "success"
        if result.passed:
            self.progress.value = self.progress.max
        self._say_lines(lines)

    def _search_high(self) -> int:
        """On CPU and simulating the whole slider (tries take seconds); on a GPU up to the chosen
        context (tries take minutes)."""
        return self.context if self.cuda and not self.simulating else max(v for _, v in self.controls["context"].options)

    def _draw_sweep(self) -> None:
        figure = plots.sweep_figure(self._sweep_runs, self._device_limit(), title=self._sweep_title(),
                                    marks=list(self._marks.values()))
        update_in_place(self.sweep, figure)

    def _reset_sweep(self, _change=None) -> None:
        """Forget the sweep's runs and lines: another model, card or host RAM makes another chart."""
        self._sweep_runs, self._marks, self.physical_limit = [], {}, None
        self._draw_sweep()

    def _device_limit(self) -> int | None:
        if self.simulating:
            return self._card_or_none().usable_bytes if self._card_or_none() else None
        if not self.cuda:
            return self.limit_bytes
        return torch.cuda.get_device_properties(self.device).total_memory

    def _card_or_none(self):
        try:
            return self.card
        except ValueError:
            return None

    def _measure_card(self):
        """The card a measured run is predicted for: this GPU; on CPU one as large as the pretend limit."""
        if self.cuda:
            return simulated.card_of_device(self.device)
        return simulated.card_of_limit(self.limit_bytes) if self.limit_bytes else self.card

    def _predicted_on(self) -> str | None:
        return simulated.predicted(self.card, self.gpus) if self.simulating else None

    def _source(self):
        """What mom.predict is given: the loaded model (its config) or the preset name."""
        return self._given if self._given is not None else self.controls["model"].value

    def _dtype(self) -> torch.dtype:
        """Weights' dtype of a prediction: the given model's, or the loaded one's when measuring; bf16
        for a preset simulated (as on a GPU)."""
        model = self._given
        if model is None and not self.simulating and self._model_name == self._model_name_now():
            model = self._model
        return next(model.parameters()).dtype if model is not None else torch.bfloat16

    def _model_name_now(self) -> str:
        return GIVEN_MODEL if self._given is not None else self.controls["model"].value

    def _display_name(self) -> str:
        if self._given is not None:
            return _model_title(self._given)
        return self.controls["model"].value

    def _title(self, label: str, context: int) -> str:
        where = f", {simulated.predicted(self.card, self.gpus)}" if self.simulating else ""
        return f"{self._display_name()}, {label}, {panel.short(context)} tokens{where}"

    def _sweep_title(self) -> str:
        if self.simulating:
            return f"Peak memory against context, {simulated.predicted(self.card, self.gpus)}: {self._display_name()}"
        return f"Peak memory against context: {self._display_name()}"

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
        self._reset_live()
        return self._model

    def _reset_live(self) -> None:
        """The layer chart's positions and weights for the model chosen (a prediction's model is
        built on the meta device: nothing is allocated)."""
        model = self._given if self._given is not None else self._model
        if self.simulating and self._given is None:
            config, name = model_config(self.controls["model"].value)
            model = fake_model(config, name, self._dtype()).model
        elif model is None or self._model_name != self._model_name_now():
            return  # a preset not loaded yet: its first run sets the chart up
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
        self._say_lines([(text, error)])

    def _say_lines(self, lines: list[tuple[str, bool]]) -> None:
        self.message.value = messages.html_lines(lines)

    def _hint(self) -> str:
        where = "a pretend device limit on CPU" if not self.cuda else str(self.device)
        return messages.hint(self.simulating, self.controls["gpu"].value, where)

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.max = total
        self.progress.value = done

    # -- widgets --
    def _make_controls(self, preset: str | None, context: int | None, mode: str, gpu: str,
                       host_gib: float) -> dict[str, widgets.Widget]:
        """The setting widgets (controls.py), set to `mode` and wired to the panel."""
        self.controls = controls = panel.make_controls(preset or GIVEN_MODEL, mode, gpu, host_gib, self._gpus_arg,
                                                       self.cuda)
        self._apply_mode(mode, context)
        controls["context"].observe(self._on_context_slider, "value")
        controls["context_tokens"].observe(self._on_context_typed, "value")
        controls["offload"].observe(self._on_budget_change, "value")
        controls["budget_fits"].observe(self._on_budget_change, "value")
        controls["limit_on"].observe(self._on_limit_change, "value")
        controls["gpu"].observe(self._on_gpu_change, "value")
        for name in ("model", "gpu", "gpu_gib", "gpus", "host_gib"):
            controls[name].observe(self._on_setup_change, "value")
        self._on_budget_change()
        self._on_limit_change()
        self._on_gpu_change()
        return controls

    def _apply_mode(self, mode: str, context: int | None = None) -> None:
        """Every control to `mode`'s options and defaults (a context given is kept exactly)."""
        self.defaults = panel.defaults_for(mode, self.cuda, self._limit_arg)
        self.unit = panel.unit_of(self.defaults)
        names = panel.model_names(mode, self._given is not None, self._preset, self.cuda)
        panel.apply_mode(self.controls, mode, self.defaults, names, self.cuda, context)

    def _on_mode_change(self, change) -> None:
        """Another mode: its controls, empty figures, and the hint of what it does."""
        self._apply_mode(change["new"])
        self._on_gpu_change()
        self._on_limit_change()
        self.buttons["stop"].disabled = True
        self._reset_sweep()
        self.live.weights_by_layer, self.live.layers = {}, 0
        self._reset_live()
        self.live.start(new_tokens=self.new_tokens, device_limit_bytes=self._device_limit())
        self.summary_html.value = ""
        self._say(self._hint())

    def _on_gpu_change(self, _change=None) -> None:
        self.controls["gpu_gib"].disabled = self.controls["gpu"].value != simulated.CUSTOM
        panel.show(self.controls["gpu_gib"], self.simulating and self.controls["gpu"].value == simulated.CUSTOM)

    def _on_setup_change(self, _change=None) -> None:
        """Another model, card or host RAM: the sweep's runs and lines belong to the old one."""
        if not self.busy:
            self._reset_sweep()

    def _on_context_slider(self, change) -> None:
        self.controls["context_tokens"].value = change["new"]

    def _on_context_typed(self, change) -> None:
        """A typed context is used exactly: it becomes a stop of the slider if it is not one."""
        slider, value = self.controls["context"], change["new"]
        options = panel.with_stop(slider.options, value)
        if len(options) != len(slider.options):  # a new stop; setting the same options again would redraw
            slider.options = options
        slider.value = value

    def _on_budget_change(self, _change=None) -> None:
        auto = self.controls["offload"].value == "auto"
        self.controls["budget_fits"].disabled = not auto
        self.controls["budget"].disabled = not auto or self.controls["budget_fits"].value

    def _on_limit_change(self, _change=None) -> None:
        self.controls["limit_on"].disabled = self.cuda
        self.controls["limit"].disabled = self.cuda or not self.controls["limit_on"].value

    def _make_buttons(self) -> dict[str, widgets.Button]:
        buttons = panel.make_buttons()
        buttons["run"].on_click(lambda _: self.run(wait=False))
        buttons["compare"].on_click(lambda _: self.compare(wait=False))
        buttons["max_context"].on_click(lambda _: self.find_max_context(wait=False))
        buttons["stop"].on_click(lambda _: self.stop())
        return buttons


def _check_model(model) -> str | None:
    """None or a module passes; a preset name is checked and returned; anything else is a TypeError."""
    if model is None or isinstance(model, nn.Module):
        return None
    if isinstance(model, str):
        try:
            checks.model_source(model)  # a typo gets "did you mean ...?" at once, with no network
        except ValueError as error:
            raise TypeError(f"Explorer expects a model (a loaded causal LM) or a preset name; {error}") from None
        return model
    raise TypeError(f"Explorer expects a model (a loaded causal LM, e.g. mom.load('tiny-llama')) or a preset name "
                    f"such as 'tiny-llama', got {type(model).__name__}; {checks.PRESETS_HINT}")


def _default_device(model: nn.Module | None) -> torch.device:
    if model is not None:
        return next(model.parameters()).device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _labelled(config: MomConfig) -> Profile:
    """A Profile stand-in carrying only a config, so labels come from the one function that makes them."""
    from dataclasses import asdict

    return Profile(model_name="", config={**asdict(config), "label": config.describe()}, context=0, new_tokens=0)


def _model_title(model: nn.Module) -> str:
    config = model.config
    return getattr(config, "name_or_path", "") or getattr(config, "model_type", type(model).__name__)
