"""MomCache: a transformers Cache whose full-attention layers live on the GPU, on the host, or stream.

Why not `DynamicCache(offloading=True)`: it moves each layer's whole cache back to the host at
every decode step (4.76 s/token at 128k on an H100, benchmarks/results/history/*_offload_128k_final.json)
and it grows by `torch.cat`, which copies the layer's whole cache on every token. Here every
layer keeps preallocated buffers with room to grow, and a decode step writes only the new
token's K/V.

The pieces: tiers of one layer in engine/kv_layer.py, the decode placement in
engine/placement.py, copies on the handle's side stream in engine/copies.py, pinned blocks in
engine/pinned.py, the host-RAM guard in engine/host_guard.py, and what one handle's caches
share (streams, pools, lock) in engine/offload.py. This module fetches layers for decoding:
prefetch of the next layer while the current one computes, two shared slots per device for
streamed layers.

A model spread over several devices (a `device_map`) keeps each layer's K/V on that layer's
own device: each layer has a lane (engine/lanes.py: its device, that device's side stream
and pinned pool), streamed layers alternate between two slots of their own device, and the
placement plans each device's budget from that device's free memory.

Without CUDA the same logic runs with plain CPU tensors and synchronous copies, so the tier
machinery is tested on any machine; the numbers only mean something on a GPU.
Sliding-window layers keep transformers' own small sliding layer and stay on the GPU.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from . import families
from .host_guard import HostMemoryError, check_host_memory  # noqa: F401  (public re-exports)
from .kv_bytes import kv_bytes_by_layer  # noqa: F401
from .kv_layer import MomLayer, device_buffers, growth, kv_buffer_bytes  # noqa: F401
from .pinned import HOST_TIER_CONTEXTS, HostPool, new_owner  # noqa: F401  (trackers find the hook here)
from .placement import plan_decode_tiers

logger = logging.getLogger(__name__)


class RestoredHandleError(RuntimeError):
    """A MomCache used after the handle that made it was restored."""


@dataclass
class _Fetch:
    slot: int | None  # stream slot index, or None for a reload into the layer's own buffer
    event: object  # torch.cuda.Event, or None on CPU


class MomCache(Cache):
    """A transformers Cache with GPU-resident, host and streamed layers (module docstring).

    Args:
        model: the model this cache serves (its config gives the layer types).
        mode: "prefill", "stream" or "auto".
        kv_gpu_budget: bytes of K/V to keep on the GPU in "auto"; None = what fits.
        lanes: the handle's engine.lanes.Lanes (per device: side-stream copier, pinned pool).
    """

    def __init__(self, model, mode: str, kv_gpu_budget: int | None, lanes):
        layers = DynamicCache(config=model.config).layers
        for index, layer in enumerate(layers):
            if type(layer) is DynamicLayer:
                layers[index] = MomLayer(self, index)
        super().__init__(layers=layers)
        self._mom_layers = [layer for layer in layers if isinstance(layer, MomLayer)]
        self._stream_positions: dict[int, int] = {}  # layer index -> position among streamed layers
        self.mode, self.kv_gpu_budget = mode, kv_gpu_budget
        self.lanes = lanes
        self.device = lanes.first.device  # the first layer's; each layer's own is its lane's
        self.dtype, self.model_config = model.dtype, model.config
        self.copier, self.pool = lanes.first.copier, lanes.first.pool
        self.owner = new_owner()
        # a dropped cache gives its blocks back, usable once its last copy has landed
        weakref.finalize(self, _give_back_blocks, list(lanes), self.owner)
        # two GPU slots per device for streamed layers: device -> [slot 0, slot 1]
        self.device_slots: dict[torch.device, list[tuple[torch.Tensor, torch.Tensor] | None]] = {
            lane.device: [None, None] for lane in lanes}
        self._fetches: dict[int, _Fetch] = {}
        self._planned = False
        self.closed = False
        self.placed_bytes = 0  # K/V bytes placed on the GPU before prefill (engine/placement.py)
        self.placed_bytes_by_device: dict = {}  # the same, per device

    @property
    def decode_planned(self) -> bool:
        """Whether decode's tiers are decided (at the first decode step, engine/placement.py)."""
        return self._planned

    def mom_layers(self) -> list[MomLayer]:
        return self._mom_layers

    def lane_of(self, index: int):
        """The lane (device, side-stream copier, pinned pool) of decoder layer `index`."""
        return self.lanes.of_layer(index)

    def layers_by_lane(self) -> dict:
        """The MomLayers of each lane, in layer order (one entry on a single-device model)."""
        groups: dict = {}
        for layer in self._mom_layers:
            groups.setdefault(self.lane_of(layer.index), []).append(layer)
        return groups

    @property
    def slots(self) -> list:
        """Every device's stream slots, flat (for byte counts and inspection)."""
        return [slot for pair in self.device_slots.values() for slot in pair]

    def close(self) -> None:
        """Called when the handle is restored: its pinned pool goes, so this cache cannot go on."""
        self.closed = True

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        if self.closed:
            raise RestoredHandleError(
                "this MomCache belongs to a mom.enable handle that was restored (its pinned host memory was "
                "released); call generate() again under a new mom.enable(...) to start a fresh cache"
            )
        layer = self.layers[layer_idx]
        decoding = isinstance(layer, MomLayer) and layer.length > 0
        if decoding and not self._planned:
            plan_decode_tiers(self)
            self._number_streamed_layers()
            self._planned = True
        if decoding and layer_idx == self._mom_layers[0].index:
            self._prefetch_after(-1)
        return super().update(key_states, value_states, layer_idx, *args, **kwargs)

    # -- fetching --------------------------------------------------------------------------
    def _needs_fetch(self, layer) -> bool:
        return isinstance(layer, MomLayer) and layer.tier in ("reload", "stream")

    def _prefetch_after(self, index: int) -> None:
        """Start copying the next layer after `index` that needs its K/V on the GPU."""
        for layer in self.layers[index + 1 :]:
            if self._needs_fetch(layer):
                if layer.index not in self._fetches:
                    self._fetches[layer.index] = self._start_fetch(layer)
                return

    def _start_fetch(self, layer: MomLayer) -> _Fetch:
        needed = layer.length + 1
        lane = self.lane_of(layer.index)
        if layer.tier == "reload":
            try:
                layer.device_kv = device_buffers(layer.host_kv[0], needed, lane.device)
            except torch.OutOfMemoryError:  # the budget was optimistic: stream this layer instead
                logger.warning("mom cache: layer %d does not fit on the GPU after all; streaming it", layer.index)
                layer.device_kv, layer.tier = None, "stream"
                self._number_streamed_layers()
                return self._start_fetch(layer)
            targets, slot = layer.device_kv, None
        else:
            slot = self._stream_positions[layer.index] % 2
            targets = self._slot(lane.device, slot, layer.host_kv[0], needed)
        event = None
        for dst, src in zip(targets, layer.host_kv):
            event = lane.copier.copy(dst[..., : layer.length, :], src[..., : layer.length, :])
        return _Fetch(slot, event)

    def _number_streamed_layers(self) -> None:
        """Each streamed layer's position among the streamed layers of its own device (slot
        = position % 2, so consecutive streamed layers of one device alternate slots)."""
        self._stream_positions = {}
        for layers in self.layers_by_lane().values():
            streamed = [layer.index for layer in layers if layer.tier == "stream"]
            self._stream_positions.update({index: position for position, index in enumerate(streamed)})

    def _slot(self, device, slot: int, like: torch.Tensor, needed: int) -> tuple[torch.Tensor, torch.Tensor]:
        slots = self.device_slots[device]
        current = slots[slot]
        if current is None or current[0].shape[-2] < needed or current[0].shape[:-2] != like.shape[:-2]:
            slots[slot] = None  # free the old slot before allocating the new one
            slots[slot] = device_buffers(like, needed, device)
        return slots[slot]

    def grow_slot(self, layer: MomLayer, needed: int) -> tuple[torch.Tensor, torch.Tensor]:
        device, slot = self.lane_of(layer.index).device, self._stream_positions[layer.index] % 2
        slots = self.device_slots[device]
        old = slots[slot]
        slots[slot] = device_buffers(old[0], needed, device)
        for new_buffer, old_buffer in zip(slots[slot], old):
            new_buffer[..., : layer.length, :] = old_buffer[..., : layer.length, :]
        return slots[slot]

    def fetched(self, layer: MomLayer) -> tuple[torch.Tensor, torch.Tensor]:
        """This layer's K/V on the GPU: waits for its fetch (starting it if needed), starts the
        next layer's, and moves a reloaded layer to the "device" tier for good."""
        fetch = self._fetches.pop(layer.index, None) or self._start_fetch(layer)
        lane = self.lane_of(layer.index)
        lane.copier.wait(fetch.event)
        self._prefetch_after(layer.index)
        if fetch.slot is None:  # reloaded for good: the host copy is no longer needed
            if fetch.event is not None:
                fetch.event.synchronize()
            self.release_host(layer.host_kv, layer.index)
            layer.host_kv, layer.tier = None, "device"
            return layer.device_kv
        return self.device_slots[lane.device][fetch.slot]

    # -- host memory -----------------------------------------------------------------------
    def host_buffer(self, shape, capacity: int, dtype, index: int | None = None) -> torch.Tensor:
        """A pinned host buffer from the pool of layer `index`'s device (the first device's if None)."""
        pool = self.pool if index is None else self.lane_of(index).pool
        return pool.lend((*shape[:-2], capacity, shape[-1]), dtype, owner=self.owner)

    def release_host(self, buffers, index: int | None = None) -> None:
        """Give layer `index`'s host buffers back to its device's pool, after its copies so far."""
        lane = self.lanes.first if index is None else self.lane_of(index)
        after = lane.copier.event()
        for buffer in buffers or ():
            lane.pool.take_back(buffer, after=after)

    def host_block_sizes(self, batch: int, seq_len: int) -> list[int]:
        """Bytes of each host buffer a prefill of this size will take, in order of need (layers
        placed on the GPU before prefill take none)."""
        return [size for sizes in self.host_block_sizes_by_lane(batch, seq_len).values() for size in sizes]

    def host_block_sizes_by_lane(self, batch: int, seq_len: int) -> dict:
        """host_block_sizes split by lane: each device's share of the pinned pool."""
        nbytes = kv_buffer_bytes(self.model_config, self.dtype, batch, seq_len)
        return {lane: [nbytes] * (2 * sum(layer.placement == "host" for layer in layers))
                for lane, layers in self.layers_by_lane().items()}

    def bytes_by_layer(self) -> list[tuple[int, int]]:
        """(device bytes, host bytes) per layer; the shared stream slots are in `slot_bytes`."""
        out = []
        for index, layer in enumerate(self.layers):
            if isinstance(layer, MomLayer):
                out.append(layer.bytes())
            else:  # a transformers sliding-window layer, always on the device
                out.append((sum(t.nbytes for t in families.cache_layer_tensors(self, index)), 0))
        return out

    @property
    def slot_bytes(self) -> int:
        return sum(t.nbytes for slot in self.slots if slot is not None for t in slot)


def _give_back_blocks(lanes: list, owner: int) -> None:
    for lane in lanes:
        lane.pool.take_back_all(owner, after=lane.copier.event())
