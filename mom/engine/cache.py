"""KV cache placement (MomCache arrives with the offload modes); byte accounting by layer."""

from __future__ import annotations

import torch

from . import families


def kv_bytes_by_layer(cache, device: torch.device | str) -> list[tuple[int, int]]:
    """(device bytes, host bytes) of K/V held per layer by any transformers Cache.

    `device` is the compute device: tensors there count as device (GPU) memory, anything
    else as host memory. A cache that knows better (MomCache) answers itself.
    """
    if cache is None:
        return []
    if hasattr(cache, "bytes_by_layer"):
        return cache.bytes_by_layer()
    device = torch.device(device)
    out = []
    for layer in range(len(getattr(cache, "layers", []))):
        on_device = on_host = 0
        for tensor in families.cache_layer_tensors(cache, layer):
            if tensor.device.type == device.type:
                on_device += tensor.nbytes
            else:
                on_host += tensor.nbytes
        out.append((on_device, on_host))
    return out
