"""A model of the CUDA caching allocator: what `max_memory_allocated` and `reserved` would say.

Predictions count device memory the way torch's CUDACachingAllocator does, because that is
what users measure and what runs out:
- every request is rounded up to 512 bytes;
- requests up to 1 MiB come from a small pool of 2 MiB segments; larger ones from a large
  pool whose segments are 20 MiB (requests under 10 MiB) or the request rounded up to 2 MiB;
- a free cached block is reused best-fit (smallest that fits, oldest address first) and split
  when what is left is worth keeping (>= 512 B small, > 1 MiB large); an unsplit block counts
  whole in `allocated`, as it does on the GPU;
- freed blocks merge with free neighbours of their segment and stay reserved;
- a segment that does not fit the device makes the allocator release every wholly free cached
  segment and try again; only then is it out of memory. Free space stranded inside partly used
  segments (fragmentation) is why `hf` ran out at 256k on the H100 with 14 GiB "reserved but
  unallocated": this model reproduces that kind of failure rather than comparing peaks to a
  limit.
Streams, `max_split_size_mb`, expandable segments and graph pools are not modelled.
"""

from __future__ import annotations

import bisect
import itertools

import torch

from ..memory.events import format_bytes

ROUND = 512
SMALL_SIZE = 1 << 20  # kSmallSize: largest request served by the small pool
SMALL_BUFFER = 2 << 20  # small-pool segment size
LARGE_BUFFER = 20 << 20  # segment for large requests under MIN_LARGE_ALLOC
MIN_LARGE_ALLOC = 10 << 20
ROUND_LARGE = 2 << 20


def round_size(nbytes: int) -> int:
    """Bytes the allocator hands out for a request of `nbytes` (at least 512, a multiple of 512)."""
    return max(ROUND, -(-nbytes // ROUND) * ROUND)


def segment_size(nbytes: int) -> int:
    """Bytes of a new segment (cudaMalloc) for a rounded request that no cached block fits."""
    if nbytes <= SMALL_SIZE:
        return SMALL_BUFFER
    if nbytes < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return -(-nbytes // ROUND_LARGE) * ROUND_LARGE


class Block:
    """A contiguous piece of one segment, allocated or free."""

    __slots__ = ("size", "offset", "segment", "prev", "next", "free", "small")

    def __init__(self, size: int, offset: int, segment: int, small: bool):
        self.size, self.offset, self.segment, self.small = size, offset, segment, small
        self.prev: Block | None = None
        self.next: Block | None = None
        self.free = True

    def key(self) -> tuple[int, int, int]:
        return self.size, self.segment, self.offset


class _FreeBlocks:
    """The free blocks of one pool, sorted by (size, segment, offset): best fit is a bisection."""

    def __init__(self):
        self._keys: list[tuple[int, int, int]] = []
        self._blocks: dict[tuple[int, int, int], Block] = {}

    def add(self, block: Block) -> None:
        key = block.key()
        bisect.insort(self._keys, key)
        self._blocks[key] = block

    def remove(self, block: Block) -> None:
        key = block.key()
        del self._keys[bisect.bisect_left(self._keys, key)]
        del self._blocks[key]

    def best_fit(self, size: int) -> Block | None:
        index = bisect.bisect_left(self._keys, (size,))
        return self._blocks[self._keys[index]] if index < len(self._keys) else None

    def blocks(self) -> list[Block]:
        return list(self._blocks.values())


class CachingAllocatorModel:
    """Allocated, reserved and peak bytes of a simulated caching allocator.

    Args:
        capacity: bytes PyTorch may reserve on the device (total minus the CUDA context);
            None for no limit.
    """

    def __init__(self, capacity: int | None = None):
        self.capacity = capacity
        self.allocated = 0
        self.reserved = 0
        self.peak = 0
        self.peak_reserved = 0
        self._free = {True: _FreeBlocks(), False: _FreeBlocks()}  # small pool?, its free blocks
        self._segments = itertools.count()

    def malloc(self, nbytes: int) -> Block:
        """Allocate; raises torch.OutOfMemoryError like the GPU when no segment fits."""
        size = round_size(nbytes)
        small = size <= SMALL_SIZE
        block = self._free[small].best_fit(size) or self._new_segment(size, small)
        self._free[small].remove(block)
        block.free = False
        if self._should_split(block, size):
            rest = Block(block.size - size, block.offset + size, block.segment, small)
            rest.prev, rest.next = block, block.next
            if block.next is not None:
                block.next.prev = rest
            block.next, block.size = rest, size
            self._free[small].add(rest)
        self.allocated += block.size
        if self.allocated > self.peak:
            self.peak = self.allocated
        return block

    def free(self, block: Block) -> None:
        self.allocated -= block.size
        block.free = True
        pool = self._free[block.small]
        for neighbour in (block.prev, block.next):
            if neighbour is not None and neighbour.free:
                pool.remove(neighbour)
                self._merge(block, neighbour)
        pool.add(block)

    def empty_cache(self) -> None:
        """torch.cuda.empty_cache(): give back every segment that is wholly free."""
        for small in (True, False):
            whole = [b for b in self._free[small].blocks() if b.prev is None and b.next is None]
            for block in whole:
                self._free[small].remove(block)
                self.reserved -= block.size

    @property
    def unused_reserved(self) -> int:
        return self.reserved - self.allocated

    def reset_peak(self) -> None:
        self.peak = self.allocated

    # -- internals ---------------------------------------------------------------------------
    def _new_segment(self, size: int, small: bool) -> Block:
        segment = segment_size(size)
        if self.capacity is not None and self.reserved + segment > self.capacity:
            self.empty_cache()  # what the allocator does before giving up
            if self.reserved + segment > self.capacity:
                error = torch.OutOfMemoryError(self._oom_message(size))
                error.requested_bytes, error.allocated_bytes = size, self.allocated  # read by mom.memory.oom
                raise error
        block = Block(segment, 0, next(self._segments), small)
        self.reserved += segment
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        self._free[small].add(block)
        return block

    @staticmethod
    def _should_split(block: Block, size: int) -> bool:
        remaining = block.size - size
        return remaining >= ROUND if block.small else remaining > SMALL_SIZE

    @staticmethod
    def _merge(block: Block, neighbour: Block) -> None:
        if neighbour is block.prev:
            block.offset, block.prev = neighbour.offset, neighbour.prev
            if neighbour.prev is not None:
                neighbour.prev.next = block
        else:
            block.next = neighbour.next
            if neighbour.next is not None:
                neighbour.next.prev = block
        block.size += neighbour.size

    def _oom_message(self, size: int) -> str:
        free = max(0, self.capacity - self.reserved)
        return (
            f"out of memory (predicted). Tried to allocate {format_bytes(size)}; {format_bytes(free)} of "
            f"{format_bytes(self.capacity)} free. Of the allocated memory {format_bytes(self.allocated)} is "
            f"allocated by PyTorch, and {format_bytes(self.unused_reserved)} is reserved by PyTorch but unallocated."
        )
