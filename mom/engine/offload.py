"""What one handle's offloaded caches share, and the swap of a fresh cache for a MomCache.

Per handle, not per cache: one side stream per device (so copies of pinned blocks that pass
from one cache to the next are ordered), one pinned pool per device (kept between runs; both in
engine/lanes.py: a model on one device has one of each), the set of live caches (closed on
restore, since their pinned memory goes), and a lock that serializes forward calls from several
threads (the pools and the streams are shared; each call's own state is not).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

from . import devices, host_guard
from .cache import MomCache
from .lanes import Lanes
from .placement import place_before_prefill


class OffloadRuntime:
    """The side streams, pinned pools and live caches of one `mom.enable` handle."""

    def __init__(self, model, mode: str, kv_gpu_budget: int | None,
                 piece_size: Callable[[int], int] | None = None):
        self.model, self.mode, self.kv_gpu_budget = model, mode, kv_gpu_budget
        # mini-sequences (MomConfig.piece_size): prefill's transients are the fused layer's, one piece wide
        self.piece_size = piece_size
        self.lanes = Lanes(devices.layer_devices(model))
        self.caches: weakref.WeakSet[MomCache] = weakref.WeakSet()
        self.lock = threading.RLock()

    def cache_for(self, call: dict, current) -> MomCache | None:
        """A fresh MomCache for this forward call, or None to keep the call's own cache.

        Raises:
            HostMemoryError: the prompt's K/V would not fit in host RAM (nothing allocated).
        """
        if call.get("use_cache") is False:
            return None
        if isinstance(current, MomCache) or (current is not None and current.get_seq_length() > 0):
            return None
        ids = call.get("input_ids") if call.get("input_ids") is not None else call.get("inputs_embeds")
        if ids is None or ids.shape[1] == 0:
            return None
        cache, sizes = self.placed_cache(ids.shape[0], ids.shape[1])
        for lane, lane_sizes in sizes.items():
            lane.pool.reserve(lane_sizes)
        self.caches.add(cache)
        return cache

    def placed_cache(self, batch: int, seq_len: int) -> tuple[MomCache, dict]:
        """A MomCache placed for a batch x seq_len prompt and its host blocks by lane, checked
        against host RAM; nothing pinned yet (benchmarks/million.py asks it at each length).

        Raises:
            HostMemoryError: the prompt's K/V would not fit in host RAM.
        """
        cache = MomCache(self.model, self.mode, self.kv_gpu_budget, self.lanes)
        place_before_prefill(cache, batch, seq_len, self.piece_size(seq_len) if self.piece_size else None)
        sizes = cache.host_block_sizes_by_lane(batch, seq_len)
        needed = sum(sum(lane_sizes) for lane_sizes in sizes.values())
        host_guard.check_host_memory(needed, batch, seq_len, self.lanes.free_bytes)
        return cache, sizes

    @property
    def copier(self):
        """The first device's side-stream copier (the only one on a single-device model)."""
        return self.lanes.first.copier

    @property
    def pool(self):
        """The first device's pinned pool (the only one on a single-device model)."""
        return self.lanes.first.pool

    def close(self) -> None:
        """Restore: close live caches, wait for in-flight copies, unpin everything."""
        for cache in list(self.caches):
            cache.close()
        self.lanes.close()
