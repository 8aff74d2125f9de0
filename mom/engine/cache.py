"""MomCache: a transformers Cache whose layers live on the GPU, in pinned host memory, or stream.

Why not `DynamicCache(offloading=True)`: it moves each layer's whole cache back to the host at
every decode step (2.4 s/token at 128k on an H100) and it grows by `torch.cat`, which copies
the layer's whole cache on every token. Here every layer keeps preallocated buffers with room
to grow, and a decode step writes only the new token's K/V.

Tiers of a layer (`MomLayer.tier`):
- "device": K/V in a GPU buffer with spare capacity (the GPU-resident part of "auto", and every
  layer of "prefill" after its reload).
- "host": K/V in pinned host memory; nothing on the GPU. Prefill leaves every offloaded layer
  here: K/V go to the host on a side stream right after the layer computed them, and the
  attention of that layer uses the freshly computed tensors directly.
- "stream": K/V live on the host; each decode step copies them into one of two shared GPU
  slots (prefetched on the side stream while the previous layer computes), appends the new
  token on the GPU, and writes only the new token back to the host.

Modes (MomConfig.offload): "prefill" reloads every layer to the GPU at the first decode step
(the paper); "stream" streams every layer; "auto" reloads as many layers as fit the GPU budget
and streams the rest. Without CUDA, the same logic runs with plain CPU tensors and synchronous
copies, so the tier machinery is tested on any machine; the numbers only mean something on a GPU.

Sliding-window layers keep transformers' own small sliding layer and stay on the GPU.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass

import psutil
import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from . import families
from .pinned import HOST_TIER_CONTEXTS, HostPool  # noqa: F401  (trackers find the hook here)

logger = logging.getLogger(__name__)

HOST_RAM_MARGIN = 0.9  # use at most this share of available host RAM for the cache


class HostMemoryError(MemoryError):
    """The offloaded KV cache would not fit in host RAM; raised before anything is allocated."""


def growth(length: int) -> int:
    """Spare tokens to allocate beyond `length`, so decoding rarely reallocates."""
    return max(256, length // 16)


@dataclass
class _Fetch:
    slot: int | None  # stream slot index, or None for a reload into the layer's own buffer
    event: object  # torch.cuda.Event, or None on CPU


class Mover:
    """Host <-> device copies, on a side CUDA stream when there is one (synchronous on CPU)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if self.cuda else None

    def copy(self, dst: torch.Tensor, src: torch.Tensor):
        """Enqueue dst.copy_(src) after all work queued so far; returns an event (None on CPU).

        K/V views like host[..., :length, :] are not contiguous (capacity > length), and torch
        copies a non-contiguous host tensor through a staging buffer filled by the CPU at
        enqueue time, racing the asynchronous copies still queued. So the copy goes row by row
        over the (batch, head) rows, each a contiguous [tokens, head_dim] block: one direct
        cudaMemcpyAsync per row, ordered on the side stream.
        """
        if not self.cuda:
            dst.copy_(src)
            return None
        if not _rows_contiguous(src):  # e.g. K/V straight out of RoPE on a transposed view
            src = src.contiguous()
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            for dst_row, src_row in zip(_rows(dst), _rows(src)):
                dst_row.copy_(src_row, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self.stream)
        for tensor in (src, dst):
            if tensor.is_cuda:
                tensor.record_stream(self.stream)
        return event

    def wait(self, event) -> None:
        if event is not None:
            torch.cuda.current_stream(self.device).wait_event(event)


def _rows_contiguous(tensor: torch.Tensor) -> bool:
    # [B, H, tokens, hd]: each (b, h) row is one contiguous block, and rows can be indexed flat
    b_stride, h_stride, t_stride, d_stride = tensor.stride()
    return d_stride == 1 and t_stride == tensor.shape[-1] and b_stride == h_stride * tensor.shape[1]


def _rows(tensor: torch.Tensor) -> list[torch.Tensor]:
    """The contiguous [tokens, head_dim] rows of a [B, H, tokens, head_dim] view."""
    if not _rows_contiguous(tensor):
        raise ValueError("K/V rows must be contiguous blocks")
    return list(tensor.flatten(0, 1).unbind(0))


class MomLayer(DynamicLayer):
    """One full-attention layer's K/V in one of three tiers (module docstring)."""

    def __init__(self, cache: MomCache, index: int):
        super().__init__()
        self.cache, self.index = cache, index
        self.tier = "device"
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
        if self.length == 0 and self.cache.offloads(self.index):
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
        self.host_kv = tuple(self.cache.host_buffer(t.shape, length + growth(length), t.dtype) for t in (key_states, value_states))
        for dst, src in zip(self.host_kv, (key_states, value_states)):
            self.cache.mover.copy(dst[..., :length, :], src)
        self.length, self.tier = length, "host"
        self._expose_host()
        return key_states, value_states

    def _append_on_device(self, key_states, value_states):
        new = key_states.shape[-2]
        if self.device_kv is None or self.length + new > self.device_kv[0].shape[-2]:
            self._grow_device(self.length + new, like=key_states)
        for buffer, states in zip(self.device_kv, (key_states, value_states)):
            buffer[..., self.length : self.length + new, :] = states
        self.length += new
        self.keys, self.values = (b[..., : self.length, :] for b in self.device_kv)
        return self.keys, self.values

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
            self.cache.mover.copy(host[..., self.length : self.length + new, :], slot[..., self.length : self.length + new, :])
        self.length += new
        self._expose_host()
        return keys[..., : self.length, :], values[..., : self.length, :]

    def _ensure_host_capacity(self, needed: int) -> None:
        if needed <= self.host_kv[0].shape[-2]:
            return
        if self.cache.mover.cuda:
            torch.cuda.current_stream(self.device).synchronize()
            self.cache.mover.stream.synchronize()
        old = self.host_kv
        self.host_kv = tuple(self.cache.host_buffer(t.shape, needed + growth(needed), t.dtype) for t in old)
        for new_buffer, old_buffer in zip(self.host_kv, old):
            new_buffer[..., : self.length, :] = old_buffer[..., : self.length, :]
        self.cache.release_host(old)

    def _expose_host(self) -> None:
        # `keys`/`values` always show the valid K/V wherever they live (for inspection and byte counts)
        self.keys, self.values = (h[..., : self.length, :] for h in self.host_kv)

    def bytes(self) -> tuple[int, int]:
        """(device bytes, host bytes) this layer holds, capacity included."""
        on_device = sum(t.nbytes for t in self.device_kv) if self.device_kv is not None else 0
        on_host = sum(t.nbytes for t in self.host_kv) if self.host_kv is not None else 0
        return on_device, on_host


class MomCache(Cache):
    """A transformers Cache with GPU-resident, host and streamed layers (module docstring).

    Args:
        model: the model this cache serves (its config gives the layer types).
        mode: "prefill", "stream" or "auto".
        kv_gpu_budget: bytes of K/V to keep on the GPU in "auto"; None = what fits.
        host_pool: optional HostPool that keeps pinned buffers between runs.
    """

    def __init__(self, model, mode: str, kv_gpu_budget: int | None = None, host_pool: HostPool | None = None):
        layers = DynamicCache(config=model.config).layers
        for index, layer in enumerate(layers):
            if type(layer) is DynamicLayer:
                layers[index] = MomLayer(self, index)
        super().__init__(layers=layers)
        self._mom_layers = [layer for layer in layers if isinstance(layer, MomLayer)]
        self._stream_positions: dict[int, int] = {}  # layer index -> position among streamed layers
        self.mode, self.kv_gpu_budget = mode, kv_gpu_budget
        self.device = next(model.parameters()).device
        self.dtype, self.model_config = model.dtype, model.config
        self.mover = Mover(self.device)
        self.pool = host_pool or HostPool(pin=self.mover.cuda)
        # a cache that is dropped gives its pinned buffers back to the pool for the next run
        weakref.finalize(self, self.pool.give_owner, id(self))
        self.slots: list[tuple[torch.Tensor, torch.Tensor] | None] = [None, None]
        self._fetches: dict[int, _Fetch] = {}
        self._planned = False

    # -- policy ----------------------------------------------------------------------------
    def mom_layers(self) -> list[MomLayer]:
        return self._mom_layers

    def offloads(self, index: int) -> bool:
        return isinstance(self.layers[index], MomLayer)

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        layer = self.layers[layer_idx]
        decoding = isinstance(layer, MomLayer) and layer.length > 0
        if decoding and not self._planned:
            self._plan_decode()
        if decoding and layer_idx == self._first_mom_index():
            self._prefetch_after(-1)
        return super().update(key_states, value_states, layer_idx, *args, **kwargs)

    def _first_mom_index(self) -> int:
        return self._mom_layers[0].index

    def _plan_decode(self) -> None:
        """After prefill: choose which host layers come back to the GPU and which stream."""
        layers = [layer for layer in self.mom_layers() if layer.tier == "host"]
        keep = len(layers) if self.mode == "prefill" else 0
        if self.mode == "auto":
            per_layer = max((sum(t.nbytes for t in layer.host_kv) for layer in layers), default=1)
            keep = min(len(layers), self._gpu_budget(per_layer) // max(per_layer, 1))
        for position, layer in enumerate(layers):
            layer.tier = "reload" if position < keep else "stream"
        self._number_streamed_layers()
        self._planned = True
        logger.info("mom cache: %d layers back on the GPU, %d streamed", keep, len(layers) - keep)

    def _gpu_budget(self, per_layer: int) -> int:
        if self.kv_gpu_budget is not None:
            return self.kv_gpu_budget
        if not self.mover.cuda:
            return 1 << 62  # nothing to bound on CPU: keep everything "resident"
        # Cached blocks freed by prefill are fragmented: 6.8 GiB of them could not hold one
        # 1.7 GiB buffer at 852k tokens (benchmarks/NOTES.md). Give them back, count true free.
        torch.cuda.empty_cache()
        free, _ = torch.cuda.mem_get_info(self.device)
        working_set = 2 * per_layer + (1 << 30)  # two stream slots + logits and activations of a step
        return max(0, int((free - working_set) * 0.92))

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
        if layer.tier == "reload":
            try:
                layer.device_kv = device_buffers(layer.host_kv[0], needed, self.device)
            except torch.OutOfMemoryError:  # the budget was optimistic: stream this layer instead
                logger.warning("mom cache: layer %d does not fit on the GPU after all; streaming it", layer.index)
                layer.device_kv, layer.tier = None, "stream"
                self._number_streamed_layers()
                return self._start_fetch(layer)
            targets, slot = layer.device_kv, None
        else:
            slot = self._stream_position(layer) % 2
            targets = self._slot(slot, layer.host_kv[0], needed)
        event = None
        for dst, src in zip(targets, layer.host_kv):
            event = self.mover.copy(dst[..., : layer.length, :], src[..., : layer.length, :])
        return _Fetch(slot, event)

    def _number_streamed_layers(self) -> None:
        streamed = [layer.index for layer in self._mom_layers if layer.tier == "stream"]
        self._stream_positions = {index: position for position, index in enumerate(streamed)}

    def _stream_position(self, layer: MomLayer) -> int:
        return self._stream_positions[layer.index]

    def _slot(self, slot: int, like: torch.Tensor, needed: int) -> tuple[torch.Tensor, torch.Tensor]:
        current = self.slots[slot]
        if current is None or current[0].shape[-2] < needed or current[0].shape[:-2] != like.shape[:-2]:
            self.slots[slot] = None  # free the old slot before allocating the new one
            self.slots[slot] = device_buffers(like, needed, self.device)
        return self.slots[slot]

    def grow_slot(self, layer: MomLayer, needed: int) -> tuple[torch.Tensor, torch.Tensor]:
        slot = self._stream_position(layer) % 2
        old = self.slots[slot]
        self.slots[slot] = device_buffers(old[0], needed, self.device)
        for new_buffer, old_buffer in zip(self.slots[slot], old):
            new_buffer[..., : layer.length, :] = old_buffer[..., : layer.length, :]
        return self.slots[slot]

    def fetched(self, layer: MomLayer) -> tuple[torch.Tensor, torch.Tensor]:
        """Wait for this layer's fetch (starting it if needed); prefetch the next one."""
        fetch = self._fetches.pop(layer.index, None) or self._start_fetch(layer)
        self.mover.wait(fetch.event)
        self._prefetch_after(layer.index)
        if fetch.slot is None:  # reloaded for good: the host copy is no longer needed
            if fetch.event is not None:
                fetch.event.synchronize()
            self.release_host(layer.host_kv)
            layer.host_kv, layer.tier = None, "device"
            return layer.device_kv
        return self.slots[fetch.slot]

    # -- host memory -----------------------------------------------------------------------
    def host_buffer(self, shape, capacity: int, dtype) -> torch.Tensor:
        return self.pool.take((*shape[:-2], capacity, shape[-1]), dtype, owner=id(self))

    def release_host(self, buffers) -> None:
        for buffer in buffers or ():
            self.pool.give(buffer)

    def host_block_sizes(self, batch: int, seq_len: int) -> list[int]:
        """Bytes of each host buffer a prefill of this size will take, in order of need."""
        _, kv_heads, head_dim = families.kv_geometry_of_config(self.model_config)
        nbytes = batch * kv_heads * (seq_len + growth(seq_len)) * head_dim * self.dtype.itemsize
        return [nbytes] * (2 * len(self.mom_layers()))

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


def device_buffers(like: torch.Tensor, needed: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Two empty [B, H, capacity, D] buffers with room for `needed` tokens and some growth."""
    shape = (*like.shape[:-2], needed + growth(needed), like.shape[-1])
    return tuple(torch.empty(shape, dtype=like.dtype, device=device) for _ in range(2))


def kv_bytes_by_layer(cache, device: torch.device | str, layers: list[int] | None = None) -> list[tuple[int, int]]:
    """(device bytes, host bytes) of K/V held per layer by any transformers Cache.

    `device` is the compute device: tensors there count as device (GPU) memory, anything
    else as host memory. A cache that knows better (MomCache) answers itself. `layers`
    restricts the answer to those layers (in that order).
    """
    if cache is None:
        return []
    if hasattr(cache, "bytes_by_layer"):
        per_layer = cache.bytes_by_layer()
        return per_layer if layers is None else [per_layer[i] for i in layers]
    device = torch.device(device)
    out = []
    for layer in range(len(getattr(cache, "layers", []))) if layers is None else layers:
        on_device = on_host = 0
        for tensor in families.cache_layer_tensors(cache, layer):
            if tensor.device.type == device.type:
                on_device += tensor.nbytes
            else:
                on_host += tensor.nbytes
        out.append((on_device, on_host))
    return out


def check_host_memory(model, batch: int, seq_len: int, pool: HostPool | None = None) -> int:
    """Host bytes an offloaded cache needs for a prompt; raises HostMemoryError if they can't fit."""
    per_token = families.kv_bytes_per_token(model)
    needed = batch * (seq_len + growth(seq_len)) * per_token
    available = psutil.virtual_memory().available + (pool.free_bytes if pool else 0)
    if needed > HOST_RAM_MARGIN * available:
        gib = 1 << 30
        raise HostMemoryError(
            f"offloading the KV cache of {batch} x {seq_len} tokens needs {needed / gib:.1f} GiB of host RAM, "
            f"but only {available / gib:.1f} GiB is available; use a shorter context, offload='auto' with a larger "
            "kv_gpu_budget, or a machine with more RAM"
        )
    return needed


def install_cache_factory(handle) -> None:
    """Make the patched forward swap a fresh cache for a MomCache in offload modes."""
    model, config = handle.model, handle.config
    device = next(model.parameters()).device
    pool = HostPool(pin=device.type == "cuda")
    handle.host_pool = pool

    def factory(args, kwargs, call):
        name, current = families.cache_in_call(model, call)
        if call.get("use_cache") is False:
            return kwargs
        if isinstance(current, MomCache) or (current is not None and current.get_seq_length() > 0):
            return kwargs
        ids = call.get("input_ids") if call.get("input_ids") is not None else call.get("inputs_embeds")
        check_host_memory(model, ids.shape[0], ids.shape[1], pool)
        cache = MomCache(model, config.offload, config.kv_gpu_budget, pool)
        pool.reserve(cache.host_block_sizes(ids.shape[0], ids.shape[1]))
        return {**kwargs, name: cache}

    handle.cache_factory = factory
