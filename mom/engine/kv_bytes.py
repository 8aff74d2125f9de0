"""Bytes of K/V held per layer by any transformers Cache, on the device and on the host.

Used by the memory layer and the benchmarks; a MomCache answers itself (it knows its tiers and
spare capacity), any other cache is counted from the tensors it holds.
"""

from __future__ import annotations

import torch

from . import families


def kv_bytes_by_layer(cache, device: torch.device | str, layers: list[int] | None = None) -> list[tuple[int, int]]:
    """(device bytes, host bytes) of K/V held per layer by any transformers Cache.

    `device` is the compute device: tensors there count as device (GPU) memory, anything
    else as host memory. `layers` restricts the answer to those layers (in that order).
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
