"""AllocatorProbe: a memory Probe for runs on the meta device, counted by the allocator model.

On the meta device every op returns a tensor with a shape, a dtype and a storage of a size but
no data, so an 8B model's prefill at 720k tokens "runs" in seconds and takes no memory. This
probe is a TorchDispatchMode: it sees every op's outputs, hands each new storage to
`CachingAllocatorModel.malloc`, and frees the block from a weak-reference callback on the
storage, which fires exactly when the last view dies (torch keeps a storage's Python object
alive as long as the C++ storage). Ops whose outputs alias an input (views, in-place ops) are
skipped by their schema. The accounting rules are those of mom.memory's CPU tensor tracker;
the difference is the allocator model behind them (rounding, segments, fragmentation, OOM).

Tensors made inside `host_tier()` (the offloaded KV cache's host buffers) count as host
memory, outside the allocator. Being a `Probe`, it feeds the ordinary MemoryRecorder, so a
prediction produces the same per-layer, per-piece events as a measured run.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..memory.probes import Probe
from .allocator import Block, CachingAllocatorModel
from .shapes import fast_output


class AllocatorProbe(Probe):
    """Device bytes of fake-tensor runs, as the CUDA caching allocator would count them.

    Args:
        capacity: bytes PyTorch may reserve on the simulated GPU (None: unlimited).
        device_name: shown in profiles, e.g. "H100-80GB (predicted)".
    """

    backend = "predicted"

    def __init__(self, capacity: int | None, device_name: str = "predicted"):
        super().__init__(torch.device("meta"))
        self.allocator = CachingAllocatorModel(capacity)
        self._name = device_name
        self._live: dict[int, tuple[object, Block | None, int]] = {}  # storage key -> (ref, block, host bytes)
        self._host_bytes = self._host_peak = 0
        self._host_depth = 0
        self._mode: _Mode | None = None
        self._depth = 0
        self.last_request = 0

    # -- Probe --
    def allocated(self) -> int:
        return self.allocator.allocated

    def reserved(self) -> int:
        return self.allocator.reserved

    def sample(self) -> tuple[int, int, int]:
        a = self.allocator
        return a.allocated, a.peak, a.reserved

    def host_allocated(self) -> int:
        return self._host_bytes

    def host_peak(self) -> int:
        return self._host_peak

    def reset_host_peak(self) -> None:
        self._host_peak = self._host_bytes

    @property
    def limit(self) -> int | None:
        return self.allocator.capacity

    @property
    def device_name(self) -> str:
        return self._name

    def free_cached(self) -> None:
        self.allocator.empty_cache()

    def _raw_peak(self) -> int:
        return self.allocator.peak

    def _raw_reset(self) -> None:
        self.allocator.reset_peak()

    # -- activation --
    def __enter__(self) -> AllocatorProbe:
        if self._depth == 0:
            self._mode = _Mode(self)
            self._mode.__enter__()
        self._depth += 1
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0:
            mode, self._mode = self._mode, None
            mode.__exit__(None, None, None)

    @contextlib.contextmanager
    def host_tier(self) -> Iterator[None]:
        """Tensors made inside count as host memory (the offloaded KV cache)."""
        self._host_depth += 1
        try:
            yield
        finally:
            self._host_depth -= 1

    def track(self, *tensors: torch.Tensor) -> int:
        """Allocate existing tensors (weights) in order, once per storage; returns bytes added."""
        before = self.allocator.allocated
        for tensor in tensors:
            self._count(tensor.untyped_storage())
        return self.allocator.allocated - before

    # -- accounting --
    def _on_op(self, kwargs: dict, out) -> None:
        """Count an op's new outputs; a probe of several devices (simulate/devices.py) routes them."""
        self._on_output(out)

    def owns(self, storage_key: int) -> bool:
        """Whether a live storage (by `_cdata`) is counted here."""
        return storage_key in self._live

    def is_host(self, storage_key: int) -> bool:
        """Whether a storage counted here is a host-tier one."""
        entry = self._live.get(storage_key)
        return entry is not None and entry[1] is None

    def _on_output(self, out) -> None:
        for tensor in _tensors(out):
            storage = tensor.untyped_storage()
            key = storage._cdata
            entry = self._live.get(key)
            if entry is None:
                self._count(storage)
            elif entry[1] is not None and storage.nbytes() > entry[1].size:  # resize_ / out= growth
                self._regrow(key, storage)

    def _count(self, storage) -> None:
        key, nbytes = storage._cdata, storage.nbytes()
        if nbytes == 0 or key in self._live:
            return
        block, host = None, 0
        if self._host_depth > 0:
            host = nbytes
            self._host_bytes += nbytes
            self._host_peak = max(self._host_peak, self._host_bytes)
        else:
            block = self.malloc(nbytes)
        self._live[key] = (weakref.ref(storage, lambda _, key=key: self._free(key)), block, host)

    def malloc(self, nbytes: int) -> Block:
        """Allocate on the allocator model, remembering the request (for an OOM's event)."""
        self.last_request = nbytes
        return self.allocator.malloc(nbytes)

    def _regrow(self, key: int, storage) -> None:
        ref, block, _ = self._live[key]
        self.allocator.free(block)
        self._live[key] = (ref, self.malloc(storage.nbytes()), 0)

    def _free(self, key: int) -> None:
        entry = self._live.pop(key, None)
        if entry is None:
            return
        _, block, host = entry
        if block is not None:
            self.allocator.free(block)
        self._host_bytes -= host


class _Mode(TorchDispatchMode):
    def __init__(self, probe: AllocatorProbe):
        super().__init__()
        self.probe = probe

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = fast_output(func, args, kwargs)
        if out is None:
            out = func(*args, **kwargs)
        if not _aliases(func):
            self.probe._on_op(kwargs, out)
        return out


_ALIASING: dict = {}


def _aliases(func) -> bool:
    """True for ops whose outputs are views of their inputs (nothing new to count; cached per op)."""
    known = _ALIASING.get(func)
    if known is None:
        known = _ALIASING[func] = any(r.alias_info is not None for r in func._schema.returns) or (
            func is torch.ops.prim.device.default)
    return known


def _tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for t in out if isinstance(t, torch.Tensor)]
    return []
