"""The host-RAM guard: refuse an offloaded prefill whose K/V cannot fit in host RAM, up front.

Counted: exactly the host blocks the cache will take (full-attention layers only; sliding-window
layers stay on the GPU), against available RAM plus the pool's free pinned blocks, with a
margin for everything else the process and the OS need.
"""

from __future__ import annotations

import psutil

HOST_RAM_MARGIN = 0.9  # use at most this share of available host RAM for the cache


class HostMemoryError(MemoryError):
    """The offloaded KV cache would not fit in host RAM; raised before anything is allocated."""


def check_host_memory(needed: int, batch: int, seq_len: int, pool_free: int = 0) -> int:
    """Raise HostMemoryError if `needed` host bytes for a batch x seq_len prompt cannot fit."""
    available = psutil.virtual_memory().available + pool_free
    if needed > HOST_RAM_MARGIN * available:
        gib = 1 << 30
        raise HostMemoryError(
            f"offloading the KV cache of {batch} x {seq_len} tokens needs {needed / gib:.1f} GiB of host RAM, "
            f"but only {available / gib:.1f} GiB is available; use a shorter context, offload='auto' with a larger "
            "kv_gpu_budget, or a machine with more RAM"
        )
    return needed


def host_bytes_needed(model_config, dtype, batch: int, seq_len: int) -> int:
    """Host bytes an offloaded cache takes for a prompt: K and V of each full-attention layer."""
    from . import families
    from .kv_layer import kv_buffer_bytes

    return 2 * kv_buffer_bytes(model_config, dtype, batch, seq_len) * len(families.offloadable_layers(model_config))


def check_model_fits_host(model, batch: int, seq_len: int, pool_free: int = 0) -> int:
    """check_host_memory for `model`'s offloaded cache of batch x seq_len tokens."""
    needed = host_bytes_needed(model.config, model.dtype, batch, seq_len)
    return check_host_memory(needed, batch, seq_len, pool_free)
