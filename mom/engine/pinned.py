"""Pinned host memory for the offloaded KV cache: exact sizes, pinned ahead, kept between runs.

Three costs shape this module:
- torch's pinned allocator rounds every block up to a power of two: a 272 MiB layer buffer
  takes 512 MiB of RAM, which would halve the context that host RAM can hold. Blocks here are
  plain host tensors of the exact size, page-locked with cudaHostRegister through torch's own
  binding of the CUDA runtime (the runtime torch uses, with the GIL released while it pins).
- Pinning is slow (benchmarks/results/history/*_pin_rate.json has the rate on the H100 host), so the
  pool pins the blocks a prefill will need on a background thread as soon as the prompt length
  is known, while the GPU computes; `lend` waits only if the thread is behind. The pages are
  touched first with torch's multi-threaded fill, which pins faster than faulting them in
  inside the driver.
- Pinned blocks are kept between runs (sweeps, benchmarks, the explorer) and unregistered
  explicitly in `clear()`, never left to the garbage collector.

Ordering: a block handed back may still be the source or target of a copy in flight on the
handle's side stream. `take_back(view, after=event)` keeps the event recorded after its last
copy; the block is lent again only after that event, and `clear()` waits for the side stream
before unpinning anything.

Without CUDA the blocks are plain tensors and nothing runs in the background.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

# Memory trackers (mom.memory) add a context factory here so that host blocks allocated inside
# it count as host memory, not device memory; the engine never imports the memory layer.
HOST_TIER_CONTEXTS: list = []

_owners = itertools.count(1)


def new_owner() -> int:
    """A token naming one borrower (a cache); never reused, unlike id()."""
    return next(_owners)


def host_tier() -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    for context in HOST_TIER_CONTEXTS:
        stack.enter_context(context())
    return stack


def _register(block: torch.Tensor) -> None:
    block.fill_(0)  # fault the pages in on all cores before locking them
    code = int(torch.cuda.cudart().cudaHostRegister(block.data_ptr(), block.numel(), 0))
    if code != 0:
        raise MemoryError(
            f"could not pin {block.numel() / 2**30:.2f} GiB of host memory (cudaHostRegister error {code}); "
            "the locked-memory limit (ulimit -l) or host RAM may be too small"
        )


def _unregister(block: torch.Tensor) -> None:
    code = int(torch.cuda.cudart().cudaHostUnregister(block.data_ptr()))
    if code != 0:
        raise RuntimeError(f"cudaHostUnregister failed with error {code} for a block of {block.numel()} bytes")


@dataclass
class _Free:
    block: torch.Tensor  # flat uint8
    after: object = None  # event recorded after the block's last copy, or None


class HostPool:
    """Flat pinned byte blocks, lent as typed views and taken back for the next run.

    Args:
        pin: page-lock the blocks (CUDA hosts).
        synchronize: waits for the side stream that copies to and from the blocks; called
            before anything is unpinned.
        device: the CUDA device whose copies use the blocks; they are pinned in its context
            (one pool per device of a model spread over several, engine/lanes.py).
    """

    def __init__(self, pin: bool, synchronize: Callable[[], None] | None = None,
                 device: torch.device | None = None):
        self.pin = pin
        self.device = device if device is not None and device.type == "cuda" else None
        self._synchronize = synchronize or (lambda: None)
        self.free: list[_Free] = []
        self._lent: dict[int, tuple[torch.Tensor, int]] = {}  # view data_ptr -> (block, owner)
        self._pending: list[tuple[int, Future]] = []  # (nbytes, future block) pinned ahead
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def _new_block(self, nbytes: int) -> torch.Tensor:
        with host_tier():
            block = torch.empty(nbytes, dtype=torch.uint8)
        if self.pin:
            with torch.cuda.device(self.device) if self.device is not None else contextlib.nullcontext():
                _register(block)
        return block

    def reserve(self, sizes: list[int]) -> None:
        """Start pinning blocks of these byte sizes in the background (in order of need).

        Free blocks and blocks already being pinned (a prefill that failed before taking them)
        count: only what they cannot cover is pinned anew.
        """
        if not self.pin:
            return
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mom-pin")
            spare = sorted([f.block.numel() for f in self.free] + [size for size, _ in self._pending])
            for nbytes in sizes:
                fitting = [s for s in spare if s >= nbytes]
                if fitting:
                    spare.remove(min(fitting))
                    continue
                self._pending.append((nbytes, self._executor.submit(self._new_block, nbytes)))

    def _claim(self, nbytes: int) -> torch.Tensor:
        fits = [index for index, f in enumerate(self.free) if f.block.numel() >= nbytes]
        if fits:
            entry = self.free.pop(min(fits, key=lambda index: self.free[index].block.numel()))
            if entry.after is not None:
                entry.after.synchronize()  # its last write-back has landed
            return entry.block
        for index, (size, future) in enumerate(self._pending):
            if size >= nbytes:
                del self._pending[index]
                return future.result()
        return self._new_block(nbytes)

    def lend(self, shape, dtype: torch.dtype, owner: int = 0) -> torch.Tensor:
        """A host tensor of this shape, pinned when the pool pins."""
        nbytes = torch.Size(shape).numel() * dtype.itemsize
        with self._lock:
            block = self._claim(nbytes)
            view = block[:nbytes].view(dtype).view(shape)
            self._lent[view.data_ptr()] = (block, owner)
        return view

    def take_back(self, view: torch.Tensor, after=None) -> None:
        """Take back a lent view; `after` is an event recorded after its last copy (or None)."""
        with self._lock:
            block, _ = self._lent.pop(view.data_ptr(), (None, None))
            if block is not None:
                self.free.append(_Free(block, after))

    def take_back_all(self, owner: int, after=None) -> None:
        """Take back every block lent to `owner` (a cache that was dropped)."""
        with self._lock:
            for key in [k for k, (_, o) in self._lent.items() if o == owner]:
                self.free.append(_Free(self._lent.pop(key)[0], after))

    @property
    def free_bytes(self) -> int:
        return sum(f.block.numel() for f in self.free)

    @property
    def held_bytes(self) -> int:
        return self.free_bytes + sum(b.numel() for b, _ in self._lent.values())

    def clear(self) -> None:
        """Unpin and drop everything (pending blocks included), after in-flight copies finish."""
        with self._lock:
            blocks = [f.block for f in self.free] + [b for b, _ in self._lent.values()]
            pending, self._pending = self._pending, []
            self.free, self._lent = [], {}
        blocks += [future.result() for _, future in pending]
        if self.pin and blocks:
            self._synchronize()
            for block in blocks:
                _unregister(block)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
