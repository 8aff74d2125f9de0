"""Where each offloaded layer's K/V live for decoding, decided once after prefill.

"prefill" (the paper) brings every layer back to the GPU; "stream" streams every layer;
"auto" brings back as many layers as fit the GPU budget and streams the rest.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)


def plan_decode_tiers(cache) -> None:
    """Mark each host-tier MomLayer of `cache` "reload" or "stream"."""
    layers = [layer for layer in cache.mom_layers() if layer.tier == "host"]
    keep = len(layers) if cache.mode == "prefill" else 0
    if cache.mode == "auto":
        per_layer = max((sum(t.nbytes for t in layer.host_kv) for layer in layers), default=1)
        keep = min(len(layers), gpu_kv_budget(cache, per_layer) // max(per_layer, 1))
    for position, layer in enumerate(layers):
        layer.tier = "reload" if position < keep else "stream"
    logger.info("mom cache: %d layers back on the GPU, %d streamed", keep, len(layers) - keep)


def gpu_kv_budget(cache, per_layer: int) -> int:
    """Bytes of K/V the GPU can take back: the configured budget, or what is truly free."""
    if cache.kv_gpu_budget is not None:
        return cache.kv_gpu_budget
    if not cache.copier.cuda:
        return 1 << 62  # nothing to bound on CPU: keep everything "resident"
    # Cached blocks freed by prefill are fragmented: 6.8 GiB of them could not hold one
    # 1.7 GiB buffer at 852k tokens (benchmarks/NOTES.md). Give them back, count true free.
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(cache.device)
    working_set = 2 * per_layer + (1 << 30)  # two stream slots + logits and activations of a step
    return max(0, int((free - working_set) * 0.92))
