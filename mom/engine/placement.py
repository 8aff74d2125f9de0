"""Where each layer's K/V live: placed before prefill, completed after it.

Before prefill ("auto" only): from the GPU budget (the configured `kv_gpu_budget`, or free
GPU memory less prefill's transients and decode's working set), the prompt length and the
decode growth, the first layers that fit are placed on the GPU and prefill writes their K/V
there directly: they never go to the host and back, and the host-RAM guard counts only the
layers placed on the host. "prefill" (the paper) and "stream" place every layer on the host.

After prefill (decode tiers): "prefill" brings every host layer back to the GPU; "stream"
streams every layer; "auto" brings back as many more host layers as now fit (prefill's
transients are gone) and streams the rest.

Per device: on a model spread over several devices (a `device_map`), both steps run for each
device's layers against that device's own budget, so a full card streams while an emptier one
keeps its layers resident.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)


PREFILL_HIDDEN_COPIES = 6  # [S, hidden] tensors alive at an unfused prefill's peak (measured ~44 KiB/token on 8B)


def prefill_transient_bytes(model_config, dtype, batch: int, seq_len: int, piece: int | None) -> int:
    """Bytes prefill holds at its peak beside the weights and the placed K/V.

    `piece`: tokens per mini-sequence piece, where prefill runs the fused layer (engine/patch.py
    `_fused_prefill_layer_forward`); None without mini-sequences. Fused, the prompt-length terms
    are the residual stream x, Q, this layer's freshly computed K and V, and the attention output,
    plus one piece's MLP intermediates, its normed input and its output:

        S b (d + 2 h_q d_h + 2 h_kv d_h) + C b (3 I + 2 d)

    (28 KiB per prompt token on Llama-3.1-8B in bf16, and 100 KiB per piece token). The piece
    term is small at C=4096 (0.2 GiB) but grows with the prompt at a fixed piece count: at 16
    pieces of 1.1M tokens it is 6.5 GiB, and without it "auto" kept a layer too many on an H100
    (predicted: llama-3.1-8b, 1,097,728 tokens, M=16, out of memory in prefill where 1,089,536
    and 1,114,112 passed; benchmarks/NOTES.md, ninth session). Without mini-sequences the
    family's own layer holds more: PREFILL_HIDDEN_COPIES [S, d] copies and two layers' K/V.
    """
    from .families import kv_geometry_of_config

    _, kv_heads, head_dim = kv_geometry_of_config(model_config)
    hidden, b = model_config.hidden_size, dtype.itemsize
    if piece is not None:
        per_token = hidden + 2 * model_config.num_attention_heads * head_dim + 2 * kv_heads * head_dim
        inner = getattr(model_config, "intermediate_size", None) or 4 * hidden
        per_piece_token = 3 * inner + 2 * hidden
        return batch * (seq_len * per_token + min(piece, seq_len) * per_piece_token) * b
    return PREFILL_HIDDEN_COPIES * batch * seq_len * hidden * b + 2 * layer_kv_bytes_of(model_config, dtype, batch, seq_len)


def place_before_prefill(cache, batch: int, seq_len: int, piece: int | None = None) -> int:
    """Place the first layers that fit the GPU budget on the device ("auto"); returns how many.

    `piece`: tokens per mini-sequence piece where prefill runs the fused layer, whose
    transients are smaller (None: the family's own layer).

    On a model spread over several devices, each device places its own first layers by its
    own budget: `kv_gpu_budget` applies to each device, and without one each device's budget
    comes from that device's free memory (every device holds prefill's transients while its
    layers run).
    """
    cache.placed_bytes_by_device = {}
    if cache.mode != "auto" or not cache.mom_layers():
        return 0
    per_layer = layer_kv_bytes(cache, batch, seq_len)
    placed = 0
    for lane, layers in cache.layers_by_lane().items():
        budget = cache.kv_gpu_budget
        if budget is None:
            budget = _free_for_kv_before_prefill(cache, lane.copier, batch, seq_len, piece)
        resident = _allocate_resident(cache, lane.device, layers, layers_that_fit(len(layers), per_layer, budget),
                                      batch, seq_len)
        for position, layer in enumerate(layers):
            layer.placement = "device" if position < resident else "host"
        cache.placed_bytes_by_device[lane.device] = resident * per_layer
        placed += resident
        logger.info("mom cache: %s: %d layers placed on the device before prefill, %d on the host",
                    lane.device, resident, len(layers) - resident)
    cache.placed_bytes = sum(cache.placed_bytes_by_device.values())
    return placed


def layers_that_fit(count: int, per_layer: int, budget: int) -> int:
    """How many of `count` layers of `per_layer` bytes each a budget of `budget` bytes holds."""
    return min(count, max(budget, 0) // max(per_layer, 1))


def _allocate_resident(cache, device, layers, resident: int, batch: int, seq_len: int) -> int:
    """Allocate the resident layers' K/V buffers now, before prefill's transients: allocated
    between them instead, each layer's buffers split the blocks a freed Q or attention output
    left, and the next full-length tensor finds no block big enough (predicted OOM at 704k on
    an H100 with room to spare). Returns how many could be allocated."""
    from . import kv_layer
    from .families import kv_geometry_of_config

    _, kv_heads, head_dim = kv_geometry_of_config(cache.model_config)
    like = torch.empty((batch, kv_heads, 0, head_dim), dtype=cache.dtype, device="meta")
    for position, layer in enumerate(layers[:resident]):
        try:
            layer.device_kv = kv_layer.device_buffers(like, seq_len, device)
        except torch.OutOfMemoryError:
            for dropped in layers[position:resident]:
                dropped.device_kv = None
            return position
    return resident


def layer_kv_bytes(cache, batch: int, seq_len: int) -> int:
    """K and V of one layer for the prompt, with decode's growth room."""
    return layer_kv_bytes_of(cache.model_config, cache.dtype, batch, seq_len)


def layer_kv_bytes_of(model_config, dtype, batch: int, seq_len: int) -> int:
    from .kv_layer import kv_buffer_bytes

    return 2 * kv_buffer_bytes(model_config, dtype, batch, seq_len)


DECODE_WORKING_SET = 1 << 30  # logits and activations of one decode step, beside two stream slots
BUDGET_SHARE = 0.92  # of what is free: the allocator rounds and fragments


def _free_for_kv_before_prefill(cache, copier, batch: int, seq_len: int, piece: int | None) -> int:
    free = copier.free_device_bytes()
    if free is None:
        return 1 << 62  # nothing to bound on CPU: keep everything resident
    return kv_budget(free, prefill_transient_bytes(cache.model_config, cache.dtype, batch, seq_len, piece))


def kv_budget(free: int, reserved: int) -> int:
    """Bytes of K/V a device may take: its share of what is free once `reserved` bytes (prefill's
    transients or two stream slots) and decode's working set are set aside."""
    return max(0, int((free - reserved - DECODE_WORKING_SET) * BUDGET_SHARE))


def plan_decode_tiers(cache) -> None:
    """Mark each host-tier MomLayer of `cache` "reload" or "stream", device by device."""
    for lane, lane_layers in cache.layers_by_lane().items():
        layers = [layer for layer in lane_layers if layer.tier == "host"]
        keep = len(layers) if cache.mode == "prefill" else 0
        if cache.mode == "auto" and layers:
            per_layer = max(sum(t.nbytes for t in layer.host_kv) for layer in layers)
            budget = gpu_kv_budget(cache, per_layer, lane.copier)
            if cache.kv_gpu_budget is not None:
                budget -= getattr(cache, "placed_bytes_by_device", {}).get(lane.device, 0)  # placed by prefill
            keep = layers_that_fit(len(layers), per_layer, budget)
        for position, layer in enumerate(layers):
            layer.tier = "reload" if position < keep else "stream"
        if layers:
            logger.info("mom cache: %s: %d layers back on the device, %d streamed", lane.device, keep, len(layers) - keep)


def gpu_kv_budget(cache, per_layer: int, copier=None) -> int:
    """Bytes of K/V a device can take back: the configured budget, or what is truly free on the
    device of `copier` (default: the first device's)."""
    if cache.kv_gpu_budget is not None:
        return cache.kv_gpu_budget
    # Cached blocks freed by prefill are fragmented: 6.8 GiB of them could not hold one
    # 1.7 GiB buffer at 852k tokens (benchmarks/NOTES.md). Give them back, count true free.
    free = (copier or cache.copier).free_device_bytes()
    if free is None:
        return 1 << 62
    return kv_budget(free, 2 * per_layer)
