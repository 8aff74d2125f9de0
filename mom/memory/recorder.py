"""MemoryRecorder: per-layer, per-module memory events of a model's forward passes.

Hooks go on the embedding, every decoder layer and its attention and MLP, the final norm and
the LM head; mini-sequence pieces come from the mom Handle's `piece_hooks`. Each hooked call
becomes one `MemoryEvent` (events.py), sent to listeners as it happens (live plots), kept for
`to_frame()`, and appended to a JSONL file when `save(path)` asked for one, line by line, so a
long sweep survives a crashed kernel (jsonl.py: each run starts with a header line that
records its provenance; a torn last line from a crash is left alone on its line).

Decisions:
- The hot path reads probe counters only: two reads per hooked call. On CUDA those are
  allocator bookkeeping on the host (one nested-stats read, ~13 us), so recording never
  synchronizes the device unless `timing=True` asks for exact durations (without it, durations
  are host-side launch times). Prefill cost: 0.4% at 64k on llama-3.1-8b (H100); decode, which
  is launch-bound, slows by about a third on llama-3.2-1b.
- Peaks nest through `Probe.watch()` (probes.py): each hooked call opens a watch, which resets
  the device peak after folding it into the enclosing watches, so a layer's peak includes its
  attention's and the run's peak (`peak_bytes`) is the true high-water mark of the whole run.
- Phase comes from the causal LM's own forward: a forward of more than one token, or the first
  of the run, is prefill (step 0); each later one-token forward is decode step n (1-based).
- KV bytes come from `engine.cache.kv_bytes_by_layer` on the cache a decoder layer receives,
  refreshed after each attention (only that layer, for a plain cache) and, for a cache that
  places layers itself (MomCache), after each layer too; other events repeat the last value.
  Only a weak reference to the cache is kept, so recording never keeps a cache alive.
- Forward hooks are registered with `always_call`, so a module that raises (an OOM) closes its
  watch; hooks and piece hooks are removed on exit, also on error.
- The piece hook is attached at every forward to whatever mom Handle the model has then, so
  `mom.enable` before or inside the recording both give "mlp_piece" events.
- Each `with recorder:` is one run: events and peaks start afresh.
- Per device: on a model spread over several devices (a device map), each hooked call is
  measured with the probe of the device it runs on (its layer's device; the embedding's and
  the LM head's own), events carry that `device`, and `peaks_by_device` holds each device's
  high-water mark of the run; `peak_bytes` is the largest of them.
- An allocation that fails is drawn, not lost: the first hooked module that sees a device
  out-of-memory error pass through it (the innermost open one: a piece, an attention, an MLP)
  emits one event of kind "oom" with the bytes in use and the request's size (oom.py), read
  from the error being handled (`sys.exc_info()` inside the always-called forward hook).
"""

from __future__ import annotations

import logging
import sys
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..engine import families
from ..engine.cache import kv_bytes_by_layer
from ..engine.patch import handle_of
from .events import MemoryEvent, events_frame
from .jsonl import open_append, write_line
from .oom import allocated_at_failure, oom_kind, requested_bytes
from .probes import Probe, Watch, active_tracker, default_probe

logger = logging.getLogger(__name__)

Listener = Callable[[MemoryEvent], None]


@dataclass
class _Frame:
    module: str
    layer: int | None
    piece: int | None
    watch: Watch
    before: int
    start: float
    device: str | None = None


class MemoryRecorder:
    """Record memory events of every hooked module call while active.

    Args:
        model: a Hugging Face causal LM of a supported family (mom enabled or not).
        probe: where numbers come from; default: the shared CudaProbe of a CUDA model, the
            active TensorTracker if one is, else a new TensorTracker (CPU).
        timing: synchronize the device around each hooked call for exact durations.
        tags: extra key/values written on every JSONL line (e.g. a config label).
        device_probes: {device: probe} for a model spread over several devices; default: the
            shared CudaProbe of each CUDA device the model's modules run on (one device: none).

    Raises:
        UnsupportedModelError: not a causal LM of a supported family.
    """

    def __init__(self, model: nn.Module, probe: Probe | None = None, timing: bool = False,
                 tags: dict[str, Any] | None = None, device_probes: dict | None = None):
        self.family = families.family_of(model)
        self.model = model
        self.device_probes = _device_probes(model, probe, device_probes)
        self.probe = probe or (next(iter(self.device_probes.values())) if self.device_probes else None) \
            or active_tracker(model) or default_probe(model)
        self._module_devices: dict[int, str] = {}  # id(module) -> device key, for device_probes
        self.timing = timing
        self.tags = dict(tags or {})
        self.events: list[MemoryEvent] = []
        self.run_index = 0
        self.start_bytes = 0
        self.host_peak_bytes = 0
        self._listeners: list[Listener] = []
        self._path: Path | None = None
        self._sink = None
        self._handles: list = []
        self._frames: list[_Frame] = []
        self._run_watch: Watch | None = None
        self._device_watches: dict[str, Watch] = {}
        self._final_peak = 0
        self._final_device_peaks: dict[str, int] = {}
        self._piece_handle = None
        self._cache_ref: Callable[[], Any] = lambda: None
        self._kv = (0, 0)
        self._kv_layers: list[tuple[int, int]] = []
        self._kv_self_reported = False
        self._phase, self._step, self._forwards = "prefill", 0, 0
        self._t0 = 0.0
        self._failure_seen: int | None = None  # id() of the OOM error already drawn

    # -- public --
    def add_listener(self, fn: Listener) -> Listener:
        """Call `fn(event)` for every event as it happens; returns fn (usable as a decorator)."""
        self._listeners.append(fn)
        return fn

    def remove_listener(self, fn: Listener) -> None:
        self._listeners.remove(fn)

    def save(self, path: str | Path) -> MemoryRecorder:
        """Append events as JSON lines to `path`: those so far now, every later one as it arrives.

        Each run starts with a header line (`record: "run"`, the tags, the provenance); each
        event line is the event's fields plus `run` (this recorder's run index) and the tags.
        Read a file back with `mom.memory.jsonl.read_jsonl`.
        """
        self._path = Path(path)
        if self.recording or self.events:
            self._open_sink()
            for event in self.events:
                self._write(event)
            if not self.recording:
                self._close_sink()
        return self

    def to_frame(self):
        """The events of the last run as a pandas DataFrame, one row per event."""
        return events_frame(self.events)

    @property
    def recording(self) -> bool:
        return self._run_watch is not None

    @property
    def peak_bytes(self) -> int:
        """Device high-water mark of the run (live while recording), weights included; on a
        model spread over several devices, the largest device's."""
        if self._device_watches:
            return max(self.peaks_by_device.values())
        return self._run_watch.peak if self._run_watch is not None else self._final_peak

    @property
    def peaks_by_device(self) -> dict[str, int]:
        """Each device's high-water mark of the run ({} on a single-device model)."""
        if self._device_watches:
            return {device: watch.peak for device, watch in self._device_watches.items()}
        return dict(self._final_device_peaks)

    def __enter__(self) -> MemoryRecorder:
        if self.recording:
            raise RuntimeError("this MemoryRecorder is already recording; use a second recorder to nest")
        self.probe.__enter__()
        try:
            self._start()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stop()

    # -- run lifecycle --
    def _start(self) -> None:
        self.events = []
        self.run_index += 1
        self._frames = []
        self._phase, self._step, self._forwards = "prefill", 0, 0
        self._kv, self._kv_layers = (0, 0), []
        self._failure_seen = None
        self.host_peak_bytes = self.probe.host_allocated()
        self._t0 = time.perf_counter()
        self._run_watch = self.probe.watch()
        self.start_bytes = self._run_watch.start_bytes
        self._device_watches = {device: probe.watch() for device, probe in self.device_probes.items()}
        self._open_sink()
        self._attach()

    def _stop(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._detach_piece_hook()
        for frame in reversed(self._frames):
            frame.watch.close()
        self._frames = []
        if self._run_watch is not None:
            self._final_peak = self._run_watch.close()
            self._run_watch = None
        if self._device_watches:
            self._final_device_peaks = {device: watch.close() for device, watch in self._device_watches.items()}
            self._device_watches = {}
        self._cache_ref = lambda: None
        self._kv_layers = []
        self._close_sink()
        self.probe.__exit__(None, None, None)

    def _attach(self) -> None:
        model, family = self.model, self.family
        self._note_module_devices()
        self._hook(model, None, None, top=True)
        self._hook(families.embedding(model), "embedding", None)
        for index, layer in enumerate(families.decoder_layers(model)):
            self._hook(layer, "layer", index, layer_kwargs=True)
            self._hook(getattr(layer, family.attention), "attention", index)
            self._hook(getattr(layer, family.mlp), "mlp", index)
        self._hook(families.final_norm(model), "norm", None)
        self._hook(families.lm_head(model), "lm_head", None)
        self._sync_piece_hook()

    def _hook(self, module: nn.Module, name: str | None, layer: int | None,
              top: bool = False, layer_kwargs: bool = False) -> None:
        if top:
            pre, post = self._on_model_start, self._on_model_end
        else:
            def pre(mod, args, kwargs, name=name, layer=layer):
                if layer_kwargs:
                    self._note_cache(kwargs)
                self._open(name, layer, None, self._module_devices.get(id(mod)))

            def post(mod, args, output, name=name, layer=layer):
                self._close(name, layer, None, failed=output is None)

        self._handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        self._handles.append(module.register_forward_hook(post, always_call=True))

    # -- hooks --
    def _on_model_start(self, module, args, kwargs) -> None:
        self._sync_piece_hook()
        for frame in reversed(self._frames):  # left open by an error caught outside the model
            frame.watch.close()
        self._frames = []
        seq_len = _sequence_length(args, kwargs)
        if seq_len > 1 or self._forwards == 0:
            self._phase, self._step = "prefill", 0
        else:
            self._phase, self._step = "decode", self._step + 1
        self._forwards += 1

    def _on_model_end(self, module, args, output) -> None:
        self._update_host_peak()

    def _on_piece(self, layer: int, piece: int, count: int, stage: str, block: str = "mlp") -> None:
        # `block` lets the engine report attention pieces too (module "attention_piece")
        if stage == "start":
            self._open(f"{block}_piece", layer, piece, self._layer_device(layer))
        else:
            self._close(f"{block}_piece", layer, piece, failed=False)

    def _open(self, module: str, layer: int | None, piece: int | None, device: str | None = None) -> None:
        probe = self.device_probes.get(device, self.probe)
        if self.timing:
            probe.synchronize()
        watch = probe.watch()
        self._frames.append(_Frame(module, layer, piece, watch, watch.start_bytes, time.perf_counter(), device))

    def _close(self, module: str, layer: int | None, piece: int | None, failed: bool) -> None:
        if failed:
            self._note_failure()
        frame = self._pop(module, layer, piece)
        if frame is None:
            return
        if failed:
            frame.watch.close()
            return
        if self.timing:
            frame.watch._probe.synchronize()
        now = time.perf_counter()
        watch = frame.watch
        peak = watch.close()
        if module == "attention" or (module == "layer" and self._kv_self_reported):
            self._refresh_kv(layer)
        own = self._kv_layers[layer] if layer is not None and layer < len(self._kv_layers) else (None, None)
        event = MemoryEvent(
            phase=self._phase, step=self._step, layer=layer, module=module,
            bytes_before=frame.before, bytes_after=watch.end_bytes, peak_bytes=peak,
            reserved_bytes=watch.end_reserved, kv_gpu_bytes=self._kv[0], kv_host_bytes=self._kv[1],
            elapsed_s=now - self._t0, duration_s=now - frame.start, piece=piece,
            kv_layer_gpu_bytes=own[0], kv_layer_host_bytes=own[1], device=frame.device,
        )
        self._emit(event)

    def _note_failure(self) -> None:
        """Emit the allocation that failed, once per error, at the innermost open call."""
        error = sys.exc_info()[1]
        if error is None or id(error) == self._failure_seen or oom_kind(error) != "device" or not self._frames:
            return
        self._failure_seen = id(error)
        frame, now = self._frames[-1], time.perf_counter()
        in_use = allocated_at_failure(error)
        probe = self.device_probes.get(frame.device, self.probe)
        in_use = probe.allocated() if in_use is None else in_use
        own = self._kv_layers[frame.layer] if frame.layer is not None and frame.layer < len(self._kv_layers) else (None, None)
        self._emit(MemoryEvent(
            phase=self._phase, step=self._step, layer=frame.layer, module=frame.module,
            bytes_before=frame.before, bytes_after=in_use, peak_bytes=max(frame.watch.peak, in_use),
            reserved_bytes=probe.reserved(), kv_gpu_bytes=self._kv[0], kv_host_bytes=self._kv[1],
            elapsed_s=now - self._t0, duration_s=now - frame.start, piece=frame.piece,
            kv_layer_gpu_bytes=own[0], kv_layer_host_bytes=own[1],
            kind="oom", requested_bytes=requested_bytes(error), device=frame.device,
        ))

    def _pop(self, module: str, layer: int | None, piece: int | None) -> _Frame | None:
        """Pop frames down to the one this call opened (frames above it were left by an error)."""
        for index in range(len(self._frames) - 1, -1, -1):
            frame = self._frames[index]
            if (frame.module, frame.layer, frame.piece) == (module, layer, piece):
                for stale in self._frames[index + 1:]:
                    stale.watch.close()
                del self._frames[index:]
                return frame
        return None

    def _emit(self, event: MemoryEvent) -> None:
        self.events.append(event)
        self.host_peak_bytes = max(self.host_peak_bytes, event.kv_host_bytes)
        if self._sink is not None:
            self._write(event)
        for listener in self._listeners:
            listener(event)

    # -- devices --
    def _note_module_devices(self) -> None:
        """Which device each hooked module runs on, when the recorder measures several."""
        self._module_devices = {}
        if not self.device_probes:
            return
        from ..engine import devices

        for index, layer in enumerate(families.decoder_layers(self.model)):
            device = str(devices.layer_devices(self.model)[index])
            for module in (layer, getattr(layer, self.family.attention), getattr(layer, self.family.mlp)):
                self._module_devices[id(module)] = device
        for module in (families.embedding(self.model), families.final_norm(self.model), families.lm_head(self.model)):
            self._module_devices[id(module)] = str(devices.module_device(module) or self.probe.device)

    def _layer_device(self, layer: int) -> str | None:
        if not self._module_devices:
            return None
        return self._module_devices.get(id(families.decoder_layers(self.model)[layer]))

    # -- KV cache, pieces, host --
    def _note_cache(self, kwargs: dict) -> None:
        cache = families.cache_argument(kwargs)
        if cache is None or cache is self._cache_ref():
            return
        self._kv_self_reported = hasattr(cache, "bytes_by_layer")
        self._kv_layers = list(kv_bytes_by_layer(cache, self.probe.device))
        self._kv = _totals(self._kv_layers)
        try:
            self._cache_ref = weakref.ref(cache)
        except TypeError:  # not weak-referenceable: keep nothing (KV stays as measured now)
            self._cache_ref = lambda: None

    def _refresh_kv(self, layer: int) -> None:
        """After a layer's attention (and, for a cache that places layers itself, after the layer).

        A plain transformers cache changes only in the layer whose attention just ran, so only
        that layer is re-measured: all layers every time would cost O(layers^2) per forward.
        """
        cache = self._cache_ref()
        if cache is None:
            return
        if self._kv_self_reported:
            self._kv_layers = list(kv_bytes_by_layer(cache, self.probe.device))
        else:
            while len(self._kv_layers) <= layer:
                self._kv_layers.append((0, 0))
            self._kv_layers[layer] = kv_bytes_by_layer(cache, self.probe.device, layers=[layer])[0]
        self._kv = _totals(self._kv_layers)

    def _update_host_peak(self) -> None:
        self.host_peak_bytes = max(self.host_peak_bytes, self.probe.host_allocated(), self._kv[1])

    def _sync_piece_hook(self) -> None:
        handle = handle_of(self.model)
        if handle is self._piece_handle:
            return
        self._detach_piece_hook()
        if handle is not None:
            handle.piece_hooks.append(self._on_piece)
            self._piece_handle = handle

    def _detach_piece_hook(self) -> None:
        handle, self._piece_handle = self._piece_handle, None
        if handle is not None and self._on_piece in handle.piece_hooks:
            handle.piece_hooks.remove(self._on_piece)

    # -- JSONL --
    def _open_sink(self) -> None:
        """Open the JSONL file (if one was asked for) and write this run's header line."""
        if self._path is not None and self._sink is None:
            from .provenance import provenance

            self._sink = open_append(self._path)
            header = {"record": "run", "run": self.run_index, **self.tags, "provenance": provenance(self.probe.device)}
            write_line(self._sink, header)

    def _close_sink(self) -> None:
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.close()

    def _write(self, event: MemoryEvent) -> None:
        write_line(self._sink, {"run": self.run_index, **self.tags, **event.to_dict()})


def _device_probes(model: nn.Module, probe: Probe | None, given: dict | None) -> dict:
    """{device: probe} to measure a model spread over several devices; {} for one device."""
    if given is not None:
        return {str(device): p for device, p in given.items()}
    if probe is not None:
        return {}
    from ..engine import devices

    used = {d for d in devices.layer_devices(model) if d.type == "cuda"}
    if len(used) < 2:
        return {}
    from .probes import cuda_probe

    return {str(d): cuda_probe(d) for d in sorted(used, key=str)}


def _sequence_length(args: tuple, kwargs: dict) -> int:
    for value in (kwargs.get("input_ids"), kwargs.get("inputs_embeds"), args[0] if args else None):
        if isinstance(value, torch.Tensor) and value.dim() >= 2:
            return value.shape[1]
    return 0


def _totals(per_layer: list[tuple[int, int]]) -> tuple[int, int]:
    return sum(d for d, _ in per_layer), sum(h for _, h in per_layer)
