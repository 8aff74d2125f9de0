"""Pinned host memory for the offloaded KV cache: exact sizes, pinned ahead, kept between runs.

Three costs shape this module:
- torch's pinned allocator rounds every block up to a power of two: a 272 MiB layer buffer
  takes 512 MiB of RAM, which would halve the context that host RAM can hold. Blocks here are
  plain host tensors of the exact size, page-locked with cudaHostRegister.
- Pinning is slow (about 1.7 GiB/s measured on the H100 host): pinning a 128k cache takes
  seconds. So the pool pins the blocks a prefill will need on a background thread as soon as
  the prompt length is known, while the GPU computes; `take` waits only if the thread is behind.
- Pinned blocks are kept between runs (sweeps, benchmarks, the explorer) and unregistered
  explicitly in `clear()`, never left to the garbage collector.

Without CUDA the blocks are plain tensors and nothing runs in the background.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import torch

logger = logging.getLogger(__name__)

# How blocks are page-locked; measured choices in benchmarks/NOTES.md.
#   "ctypes": cudaHostRegister through ctypes, which releases the GIL while the kernel pins
#   "torch": torch's cudart binding
#   "prefault": touch the pages with torch's multi-threaded fill first, then ctypes
PIN_METHOD = os.environ.get("MOM_PIN_METHOD", "prefault")


# Memory trackers (mom.memory) add a context factory here so that host blocks allocated inside
# it count as host memory, not device memory; the engine never imports the memory layer.
HOST_TIER_CONTEXTS: list = []


def host_tier() -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    for context in HOST_TIER_CONTEXTS:
        stack.enter_context(context())
    return stack


@functools.cache
def _libcudart():
    for name in ("libcudart.so.13", "libcudart.so.12", "libcudart.so"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.cudaHostRegister.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint]
        lib.cudaHostUnregister.argtypes = [ctypes.c_void_p]
        return lib
    return None


def _register(block: torch.Tensor) -> None:
    lib = _libcudart() if PIN_METHOD != "torch" else None
    if PIN_METHOD == "prefault":
        block.fill_(0)  # fault the pages in on all cores before locking them
    if lib is not None:
        code = lib.cudaHostRegister(block.data_ptr(), block.numel(), 0)
    else:
        code = int(torch.cuda.cudart().cudaHostRegister(block.data_ptr(), block.numel(), 0))
    if code != 0:
        raise MemoryError(
            f"could not pin {block.numel() / 2**30:.2f} GiB of host memory (cudaHostRegister error {code}); "
            "the locked-memory limit (ulimit -l) or host RAM may be too small"
        )


def _unregister(block: torch.Tensor) -> None:
    lib = _libcudart() if PIN_METHOD != "torch" else None
    if lib is not None:
        lib.cudaHostUnregister(block.data_ptr())
    else:
        torch.cuda.cudart().cudaHostUnregister(block.data_ptr())


class HostPool:
    """Flat pinned byte blocks, handed out as typed views and taken back for the next run."""

    def __init__(self, pin: bool):
        self.pin = pin
        self.free: list[torch.Tensor] = []
        self._lent: dict[int, tuple[torch.Tensor, int]] = {}  # view data_ptr -> (block, owner)
        self._pending: list[tuple[int, Future]] = []  # (nbytes, future block) pinned ahead
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def _new_block(self, nbytes: int) -> torch.Tensor:
        with host_tier():
            block = torch.empty(nbytes, dtype=torch.uint8)
        if self.pin:
            _register(block)
        return block

    def reserve(self, sizes: list[int]) -> None:
        """Start pinning blocks of these byte sizes in the background (in order of need)."""
        if not self.pin:
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mom-pin")
        spare = sorted(b.numel() for b in self.free)
        for nbytes in sizes:
            fitting = [s for s in spare if s >= nbytes]
            if fitting:
                spare.remove(min(fitting))
                continue
            self._pending.append((nbytes, self._executor.submit(self._new_block, nbytes)))

    def _claim(self, nbytes: int) -> torch.Tensor:
        fits = [b for b in self.free if b.numel() >= nbytes]
        if fits:
            block = min(fits, key=torch.Tensor.numel)
            self.free.remove(block)
            return block
        for index, (size, future) in enumerate(self._pending):
            if size >= nbytes:
                del self._pending[index]
                return future.result()
        return self._new_block(nbytes)

    def take(self, shape, dtype: torch.dtype, owner: int = 0) -> torch.Tensor:
        """A host tensor of this shape, pinned when the pool pins."""
        nbytes = torch.Size(shape).numel() * dtype.itemsize
        with self._lock:
            block = self._claim(nbytes)
            view = block[:nbytes].view(dtype).view(shape)
            self._lent[view.data_ptr()] = (block, owner)
        return view

    def give(self, view: torch.Tensor) -> None:
        with self._lock:
            block, _ = self._lent.pop(view.data_ptr(), (None, None))
            if block is not None:
                self.free.append(block)

    def give_owner(self, owner: int) -> None:
        """Take back every block lent to `owner` (a cache that was dropped)."""
        with self._lock:
            for key in [k for k, (_, o) in self._lent.items() if o == owner]:
                self.free.append(self._lent.pop(key)[0])

    @property
    def free_bytes(self) -> int:
        return sum(b.numel() for b in self.free)

    @property
    def held_bytes(self) -> int:
        return self.free_bytes + sum(b.numel() for b, _ in self._lent.values())

    def clear(self) -> None:
        """Unpin and drop everything (pending blocks included)."""
        with self._lock:
            blocks = self.free + [b for b, _ in self._lent.values()]
            blocks += [future.result() for _, future in self._pending]
            self.free, self._lent, self._pending = [], {}, []
        if self.pin:
            for block in blocks:
                _unregister(block)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
