"""TensorTracker: device memory accounted tensor by tensor, for machines without a GPU.

It counts live tensor bytes itself, with a `TorchDispatchMode` that sees every op's outputs,
so the recorder, plots and notebooks get real numbers without a GPU, and its `limit_bytes`
raises the very `torch.OutOfMemoryError` a GPU would (oom.TrackerOutOfMemoryError, with the
exact numbers), so OOM handling and maximum-context search can be taught and tested on a laptop.

Accounting, and why it is right:
- A tensor is counted by its *storage* (untyped storage, keyed by its C++ address), once:
  views share a storage and cost nothing; in-place and `out=` ops return an input's storage.
  An op output whose storage is also an input's (a view of a tensor made before tracking) is
  not an allocation either.
- Storage Python objects are preserved by torch for as long as the C++ storage lives, so a
  weak reference to one fires exactly when the memory is freed; that is where bytes are given
  back. Freed means freed: the MLP intermediates disappear when the MLP returns.
- The model's parameters and buffers are counted at construction as the weights baseline.
- A tensor on another device than the tracked one (pinned host KV of a CUDA model), or made
  inside `host_tier()` on the same thread, counts as host memory. The KV cache enters
  `host_tier()` through the optional `mom.engine.cache.HOST_TIER_CONTEXTS` list, so the engine
  never imports this module.
- What a kernel allocates and frees inside one op (workspace) is invisible to the tracker.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections.abc import Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .events import format_bytes
from .oom import TrackerOutOfMemoryError
from .peaks import Probe
from .sizes import unique_storages

logger = logging.getLogger(__name__)


class _Entry:
    __slots__ = ("ref", "nbytes", "host")

    def __init__(self, ref, nbytes: int, host: bool):
        self.ref, self.nbytes, self.host = ref, nbytes, host


class TensorTracker(Probe):
    """Counts live tensor bytes of one device, op by op, with an optional device limit.

    Args:
        model: its parameters and buffers are counted at once as the weights baseline
            (and its device is the tracked device unless `device` is given).
        device: the compute device whose bytes are "device" memory; others are host.
        limit_bytes: device bytes available; an op that would go past it raises
            torch.OutOfMemoryError (a TrackerOutOfMemoryError carrying the exact numbers),
            like a GPU, and nothing of it is counted.

    Use as a context manager (re-entrant): ops are seen only while it is active, frees are
    seen always.
    """

    backend = "tracker"

    def __init__(
        self,
        model: torch.nn.Module | None = None,
        device: torch.device | str | None = None,
        limit_bytes: int | None = None,
    ):
        if device is None:
            device = _model_device(model) if model is not None else torch.device("cpu")
        super().__init__(device)
        self.limit_bytes = limit_bytes
        self._live: dict[int, _Entry] = {}
        self._device_bytes = 0
        self._host_bytes = 0
        self._peak = 0
        self._host_peak = 0
        self._host = threading.local()  # host_tier() depth, per thread: the pinning thread enters it
        self._depth = 0
        self._mode: _TrackerMode | None = None
        self.weights_bytes = 0
        if model is not None:
            self.weights_bytes = self.track(*model.parameters(), *model.buffers())

    # -- the Probe interface --
    def allocated(self) -> int:
        return self._device_bytes

    def host_allocated(self) -> int:
        return self._host_bytes

    def host_peak(self) -> int:
        return self._host_peak

    def reset_host_peak(self) -> None:
        self._host_peak = self._host_bytes

    @property
    def limit(self) -> int | None:
        return self.limit_bytes

    @property
    def device_name(self) -> str:
        return f"{self.device} (tensor tracker)"

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _raw_peak(self) -> int:
        return self._peak

    def _raw_reset(self) -> None:
        self._peak = self._device_bytes

    # -- activation --
    def __enter__(self) -> TensorTracker:
        if self._depth == 0:
            self._mode = _TrackerMode(self)
            self._mode.__enter__()
            _register_host_tier(self.host_tier, add=True)
            _ACTIVE_TRACKERS.append(self)
        self._depth += 1
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0:
            _ACTIVE_TRACKERS.remove(self)
            _register_host_tier(self.host_tier, add=False)
            mode, self._mode = self._mode, None
            mode.__exit__(None, None, None)

    @property
    def active(self) -> bool:
        return self._depth > 0

    @contextlib.contextmanager
    def host_tier(self) -> Iterator[None]:
        """Tensors made inside, on this thread, count as host memory (the offloaded KV cache on CPU).

        Per thread: mom's pinning thread allocates host blocks inside it while the main thread
        computes on the device, and the main thread's tensors must stay device bytes. (The
        dispatch mode is per thread too, so tensors made on other threads are not seen at all.)
        """
        self._host.depth = self._host_depth + 1
        try:
            yield
        finally:
            self._host.depth -= 1

    @property
    def _host_depth(self) -> int:
        return getattr(self._host, "depth", 0)

    def mark_host(self, tensor: torch.Tensor) -> None:
        """Move an already-counted tensor's storage to the host tier."""
        entry = self._live.get(tensor.untyped_storage()._cdata)
        if entry is None or entry.host:
            return
        self._device_bytes -= entry.nbytes
        entry.host = True
        self._add_host(entry.nbytes)

    def track(self, *tensors: torch.Tensor) -> int:
        """Count existing tensors (once per storage, no limit check); returns bytes newly counted."""
        before = self._device_bytes + self._host_bytes
        for storage in unique_storages(tensors):
            if storage._cdata not in self._live:
                self._count(storage, storage.device, check_limit=False)
        return self._device_bytes + self._host_bytes - before

    # -- accounting --
    def _on_op(self, func, args, kwargs, out) -> None:
        info = _op_info(func)
        for tensor in _tensors(out):
            try:
                storage = tensor.untyped_storage()
            except (NotImplementedError, RuntimeError):  # sparse, nested: not counted
                continue
            entry = self._live.get(storage._cdata)
            if entry is not None:
                if entry.nbytes != storage.nbytes():  # resize_ or out= growth
                    self._resize(entry, storage.nbytes())
                continue
            if info is _ALIASING or (info is _PLAIN and _shares_input(storage._cdata, args, kwargs)):
                continue  # a view of, or write into, a tensor made before tracking
            self._count(storage, tensor.device, check_limit=True)

    def _count(self, storage, device: torch.device, check_limit: bool) -> None:
        nbytes = storage.nbytes()
        if nbytes == 0:
            return
        host = self._host_depth > 0 or device.type != self.device.type
        if not host and check_limit and self.limit_bytes is not None:
            if self._device_bytes + nbytes > self.limit_bytes:
                raise TrackerOutOfMemoryError(self._oom_message(nbytes), nbytes, self._device_bytes, self.limit_bytes)
        key = storage._cdata
        self._live[key] = _Entry(weakref.ref(storage, lambda _, key=key: self._free(key)), nbytes, host)
        if host:
            self._add_host(nbytes)
        else:
            self._device_bytes += nbytes
            if self._device_bytes > self._peak:
                self._peak = self._device_bytes

    def _add_host(self, nbytes: int) -> None:
        self._host_bytes += nbytes
        if self._host_bytes > self._host_peak:
            self._host_peak = self._host_bytes

    def _resize(self, entry: _Entry, nbytes: int) -> None:
        delta, entry.nbytes = nbytes - entry.nbytes, nbytes
        if entry.host:
            self._add_host(delta)
        else:
            self._device_bytes += delta
            self._peak = max(self._peak, self._device_bytes)

    def _free(self, key: int) -> None:
        entry = self._live.pop(key, None)
        if entry is None:
            return
        if entry.host:
            self._host_bytes -= entry.nbytes
        else:
            self._device_bytes -= entry.nbytes

    def _oom_message(self, nbytes: int) -> str:
        free = max(0, self.limit_bytes - self._device_bytes)
        return (
            f"out of memory (mom TensorTracker on {self.device}). Tried to allocate {format_bytes(nbytes)}. "
            f"Device limit {format_bytes(self.limit_bytes)}, of which {format_bytes(free)} is free; "
            f"{format_bytes(self._device_bytes)} allocated by tracked tensors."
        )


_ACTIVE_TRACKERS: list[TensorTracker] = []


def active_tracker(model: torch.nn.Module | None = None) -> TensorTracker | None:
    """The innermost active TensorTracker (of the model's device type, when a model is given)."""
    device = _model_device(model) if model is not None else None
    for tracker in reversed(_ACTIVE_TRACKERS):
        if device is None or tracker.device.type == device.type:
            return tracker
    return None


class _TrackerMode(TorchDispatchMode):
    def __init__(self, tracker: TensorTracker):
        super().__init__()
        self.tracker = tracker

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.tracker._on_op(func, args, kwargs, out)
        return out


_PLAIN, _ALIASING, _FRESH = "plain", "aliasing", "fresh"
_OP_INFO: dict = {}


def _op_info(func) -> str:
    """How an op's outputs relate to its inputs, from its schema (cached per op)."""
    info = _OP_INFO.get(func)
    if info is None:
        if func.name().startswith("aten::lift_fresh"):
            info = _FRESH  # wraps a tensor born outside dispatch (torch.tensor): new memory
        elif any(r.alias_info is not None for r in func._schema.returns):
            info = _ALIASING
        else:
            info = _PLAIN  # usually new memory, but _unsafe_view & co. alias without saying so
        _OP_INFO[func] = info
    return info


def _tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for t in out if isinstance(t, torch.Tensor)]
    return []


def _shares_input(key: int, args, kwargs) -> bool:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            if value.untyped_storage()._cdata == key:
                return True
        elif isinstance(value, (tuple, list)):
            if any(isinstance(t, torch.Tensor) and t.untyped_storage()._cdata == key for t in value):
                return True
    return False


def _model_device(model: torch.nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def _register_host_tier(context, add: bool) -> None:
    """Offer the tracker's host tier to the KV cache, if the engine has the optional hook list."""
    from ..engine import cache

    contexts = getattr(cache, "HOST_TIER_CONTEXTS", None)
    if contexts is None:
        return
    if add:
        contexts.append(context)
    elif context in contexts:
        contexts.remove(context)
