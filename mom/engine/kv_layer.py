"""MomLayer: one full-attention layer's K/V in one of four tiers, grown in place.

Tiers (`MomLayer.tier`):
- "device": K/V in a GPU buffer with spare capacity; decode writes the new token in place
  (no per-token `torch.cat` of the whole cache).
- "host": K/V in pinned host memory, nothing on the GPU. Prefill leaves every layer placed on
  the host here: K/V go to the host on the side stream right after the layer computed them,
  and that layer's attention uses the freshly computed tensors directly.
- "reload": planned to come back to the GPU for good at its first decode step (engine/placement.py).
- "stream": K/V live on the host; each decode step copies them into one of two shared GPU
  slots (prefetched while the previous layer computes), appends the new token on the GPU and
  writes only the new token back to the host.

The layer reaches its cache through a weak proxy: a dropped cache is freed by reference
counting at once (its GPU buffers, slots and pinned views with it), not by the cycle collector.
"""

from __future__ import annotations

import logging
import weakref

import torch
from transformers.cache_utils import DynamicLayer

logger = logging.getLogger(__name__)


GROWTH_CAP = 8192


def growth(length: int) -> int:
    """Spare tokens to allocate beyond `length`, so decoding rarely reallocates: 1/16 of it,
    at least 256 and at most GROWTH_CAP (at 1M tokens 1/16 would be 4 GiB of host RAM per
    32 layers' worth of slack no decode of a few thousand tokens uses)."""
    return max(256, min(length // 16, GROWTH_CAP))


def kv_buffer_bytes(model_config, dtype, batch: int, seq_len: int) -> int:
    """Bytes of one K (or V) buffer of one layer for a prompt, with decode's growth room."""
    from .families import kv_geometry_of_config

    _, kv_heads, head_dim = kv_geometry_of_config(model_config)
    return batch * kv_heads * (seq_len + growth(seq_len)) * head_dim * dtype.itemsize


def device_buffers(like: torch.Tensor, needed: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Two empty [B, H, capacity, D] buffers with room for `needed` tokens and some growth."""
    shape = (*like.shape[:-2], needed + growth(needed), like.shape[-1])
    return tuple(torch.empty(shape, dtype=like.dtype, device=device) for _ in range(2))


class MomLayer(DynamicLayer):
    """One full-attention layer's K/V in one of four tiers (module docstring)."""

    def __init__(self, cache, index: int):
        super().__init__()
        self.cache = weakref.proxy(cache)
        self.index = index
        self.tier = "device"
        self.placement = "host"  # where prefill writes this layer's K/V (engine/placement.py)
        self.length = 0
        self.device_kv: tuple[torch.Tensor, torch.Tensor] | None = None  # [B, H, capacity, D] each
        self.host_kv: tuple[torch.Tensor, torch.Tensor] | None = None

    # -- transformers Cache layer API -------------------------------------------------------
    def lazy_initialization(self, key_states, value_states) -> None:
        self.device = key_states.device
        self.dtype = key_states.dtype
        self.is_initialized = True

    def get_seq_length(self) -> int:
        return self.length

    def update(self, key_states, value_states, *args, **kwargs):
        # key_states, value_states: [B, H, q, D], already on the compute device
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.length == 0 and self.placement == "device":
            try:
                return self._append_on_device(key_states, value_states)
            except torch.OutOfMemoryError:  # the placement was optimistic: this layer goes to the host
                logger.warning("mom cache: layer %d does not fit on the GPU at prefill; offloading it", self.index)
                self.placement, self.device_kv = "host", None
        if self.length == 0:
            return self._prefill_to_host(key_states, value_states)
        if self.tier == "device":
            return self._append_on_device(key_states, value_states)
        return self._append_streamed(key_states, value_states)

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("mom's offloaded cache does not support crop (assisted decoding); use offload='none'")

    def reorder_cache(self, beam_idx) -> None:
        raise NotImplementedError("mom's offloaded cache does not support beam search; use offload='none'")

    batch_repeat_interleave = batch_select_indices = reorder_cache

    def reset(self) -> None:
        self.length, self.tier, self.device_kv, self.host_kv = 0, "device", None, None
        self.keys = self.values = None

    # -- tiers -----------------------------------------------------------------------------
    def _prefill_to_host(self, key_states, value_states):
        length = key_states.shape[-2]
        self.host_kv = tuple(self.cache.host_buffer(t.shape, length + growth(length), t.dtype, self.index)
                             for t in (key_states, value_states))
        for dst, src in zip(self.host_kv, (key_states, value_states)):
            self._copier.copy(dst[..., :length, :], src)
        self.length, self.tier = length, "host"
        self._expose_host()
        return key_states, value_states

    def _append_on_device(self, key_states, value_states):
        new = key_states.shape[-2]
        if self.device_kv is None or self.length + new > self.device_kv[0].shape[-2]:
            self._grow_device(self.length + new, like=key_states)
        for buffer, states in zip(self.device_kv, (key_states, value_states)):
            buffer[..., self.length : self.length + new, :] = states
        self.advance_in_place(new)
        return self.keys, self.values

    def advance_in_place(self, new: int) -> None:
        """Count `new` tokens written into the device buffers (here, or by a captured decode step)."""
        self.length += new
        self.keys, self.values = (b[..., : self.length, :] for b in self.device_kv)

    def _grow_device(self, needed: int, like: torch.Tensor | None = None) -> None:
        old = self.device_kv
        self.device_kv = device_buffers(like if like is not None else old[0], needed, self.device)
        if old is not None:
            for new_buffer, old_buffer in zip(self.device_kv, old):
                new_buffer[..., : self.length, :] = old_buffer[..., : self.length, :]

    def _append_streamed(self, key_states, value_states):
        """Host tier: K/V come to the GPU (own buffer on reload, a shared slot when streaming)."""
        keys, values = self.cache.fetched(self)
        if self.tier == "device":  # just reloaded into its own buffer
            return self._append_on_device(key_states, value_states)
        new = key_states.shape[-2]
        if self.length + new > keys.shape[-2]:  # a long chunk after prefill: grow the slot
            keys, values = self.cache.grow_slot(self, self.length + new)
        self._ensure_host_capacity(self.length + new)
        for slot, host, states in zip((keys, values), self.host_kv, (key_states, value_states)):
            slot[..., self.length : self.length + new, :] = states
            self._copier.copy(host[..., self.length : self.length + new, :], slot[..., self.length : self.length + new, :])
        self.length += new
        self._expose_host()
        return keys[..., : self.length, :], values[..., : self.length, :]

    def _ensure_host_capacity(self, needed: int) -> None:
        if needed <= self.host_kv[0].shape[-2]:
            return
        if self._copier.cuda:
            torch.cuda.current_stream(self.device).synchronize()
            self._copier.synchronize()
        old = self.host_kv
        self.host_kv = tuple(self.cache.host_buffer(t.shape, needed + growth(needed), t.dtype, self.index) for t in old)
        for new_buffer, old_buffer in zip(self.host_kv, old):
            new_buffer[..., : self.length, :] = old_buffer[..., : self.length, :]
        self.cache.release_host(old, self.index)

    @property
    def _copier(self):
        """The side-stream copier of this layer's device (engine/lanes.py)."""
        return self.cache.lane_of(self.index).copier

    def _expose_host(self) -> None:
        # `keys`/`values` always show the valid K/V wherever they live (for inspection and byte counts)
        self.keys, self.values = (h[..., : self.length, :] for h in self.host_kv)

    def bytes(self) -> tuple[int, int]:
        """(device bytes, host bytes) this layer holds, capacity included."""
        on_device = sum(t.nbytes for t in self.device_kv) if self.device_kv is not None else 0
        on_host = sum(t.nbytes for t in self.host_kv) if self.host_kv is not None else 0
        return on_device, on_host
