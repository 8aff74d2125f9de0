"""The caching-allocator model: rounding, pools, splitting, reuse, fragmentation and OOM."""

from __future__ import annotations

import pytest
import torch

from mom.simulate.allocator import CachingAllocatorModel, round_size, segment_size

MiB = 1 << 20


def test_requests_round_up_to_512_bytes():
    assert [round_size(n) for n in (1, 512, 513, 4096 + 1)] == [512, 512, 1024, 4608]


def test_segment_sizes_follow_the_pools():
    assert segment_size(512) == 2 * MiB  # small pool
    assert segment_size(1 * MiB + 512) == 20 * MiB  # large request under 10 MiB
    assert segment_size(11 * MiB + 1) == 12 * MiB  # rounded up to 2 MiB


def test_small_blocks_share_one_segment_and_count_rounded():
    alloc = CachingAllocatorModel()
    blocks = [alloc.malloc(100) for _ in range(4)]
    assert alloc.allocated == 4 * 512 and alloc.reserved == 2 * MiB
    for block in blocks:
        alloc.free(block)
    assert alloc.allocated == 0 and alloc.reserved == 2 * MiB  # cached, not given back
    alloc.empty_cache()
    assert alloc.reserved == 0


def test_an_unsplit_large_block_counts_whole():
    alloc = CachingAllocatorModel()
    alloc.malloc(19 * MiB + 512 * 1024)  # 20 MiB segment, 0.5 MiB left: not worth splitting
    assert alloc.allocated == 20 * MiB


def test_freed_blocks_merge_and_are_reused_best_fit():
    alloc = CachingAllocatorModel()
    a, b = alloc.malloc(100 * MiB), alloc.malloc(100 * MiB)
    alloc.free(a)
    alloc.free(b)
    c = alloc.malloc(150 * MiB)  # fits only if the two neighbours merged... they are separate segments
    assert alloc.reserved == 350 * MiB and c.size == 150 * MiB
    alloc.free(c)
    d = alloc.malloc(60 * MiB)  # best fit: a 100 MiB block, not the 150 MiB one
    assert d.segment in (a.segment, b.segment)


def test_split_blocks_merge_back_into_one():
    alloc = CachingAllocatorModel()
    big = alloc.malloc(64 * MiB)
    alloc.free(big)
    parts = [alloc.malloc(16 * MiB) for _ in range(4)]
    assert alloc.reserved == 64 * MiB  # all carved out of the cached segment
    for part in parts:
        alloc.free(part)
    whole = alloc.malloc(64 * MiB)
    assert whole.segment == big.segment and alloc.reserved == 64 * MiB


def test_fragmentation_runs_out_of_memory_before_the_allocated_bytes_reach_the_limit():
    alloc = CachingAllocatorModel(capacity=1000 * MiB)
    blocks = [alloc.malloc(100 * MiB) for _ in range(4)]
    keep = [alloc.malloc(1 * MiB + 512) for _ in range(4)]  # each in its own 20 MiB segment
    big = alloc.malloc(500 * MiB)
    alloc.free(big)
    for block in blocks:
        alloc.free(block)
    alloc.malloc(480 * MiB)  # reuses the freed 500 MiB block: still fits
    assert alloc.allocated < 600 * MiB
    with pytest.raises(torch.OutOfMemoryError, match="reserved by PyTorch but unallocated"):
        alloc.malloc(600 * MiB)  # 420 MiB free in cached blocks, but no 600 MiB hole
    assert keep


def test_out_of_memory_releases_wholly_free_segments_first():
    alloc = CachingAllocatorModel(capacity=300 * MiB)
    alloc.free(alloc.malloc(200 * MiB))
    block = alloc.malloc(250 * MiB)  # the cached 200 MiB segment is given back to make room
    assert block.size == 250 * MiB and alloc.reserved == 250 * MiB
