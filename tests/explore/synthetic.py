"""Synthetic recorder events and profiles: plot tests need no model and no recorder."""

from __future__ import annotations

from mom.memory.events import MemoryEvent, MiB, Profile

WEIGHTS = 10 * MiB
KV_PER_LAYER = 2 * MiB
ACTIVATION = 5 * MiB
LOGITS = 3 * MiB


def events(layers: int = 3, decode_steps: int = 2, kv_on_host: bool = False) -> list[MemoryEvent]:
    """Prefill then decode of a model whose every layer adds 2 MiB of K/V and needs 5 MiB of transients."""
    out = []
    live = WEIGHTS
    kv_gpu = kv_host = 0
    out.append(MemoryEvent("prefill", 0, None, "embedding", live, live + MiB, live + MiB))
    live += MiB
    for layer in range(layers):
        if kv_on_host:
            kv_host += KV_PER_LAYER
            after = live
        else:
            kv_gpu += KV_PER_LAYER
            after = live + KV_PER_LAYER
        out.append(MemoryEvent("prefill", 0, layer, "layer", live, after, after + ACTIVATION,
                               kv_gpu_bytes=kv_gpu, kv_host_bytes=kv_host))
        live = after
    out.append(MemoryEvent("prefill", 0, None, "lm_head", live, live + LOGITS, live + LOGITS,
                           kv_gpu_bytes=kv_gpu, kv_host_bytes=kv_host))
    for step in range(1, decode_steps + 1):
        for layer in range(layers):
            out.append(MemoryEvent("decode", step, layer, "layer", live, live, live + 1024,
                                   kv_gpu_bytes=kv_gpu, kv_host_bytes=kv_host))
    return out


def weights(layers: int = 3) -> dict[str, int]:
    share = WEIGHTS // (layers + 2)
    return {"embed": share, **{f"L{i}": share for i in range(layers)}, "head": share}


def profile(label: str, context: int, peak: int, oom: bool = False, limit: int | None = None) -> Profile:
    return Profile(model_name="synthetic", config={"label": label}, context=context, new_tokens=2,
                   backend="tracker", device_limit_bytes=limit, weights_bytes=WEIGHTS, peak_gpu_bytes=peak,
                   prefill_peak_bytes=peak, ttft_s=0.5, decode_tokens_per_s=20.0, oom=oom,
                   error="out of memory" if oom else None, events=events())
