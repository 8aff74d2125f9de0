"""One measured run of one variant at one context, the way docs/benchmarks.md defines it.

Variants (side by side, same model object, memory freed between runs):
  standard     plain forward with every position's logits, then greedy decode
  hf           Hugging Face as generate() runs it: logits_to_keep=1, GPU DynamicCache
  hf-offload   DynamicCache(offloading=True)
  hf-chunked   prefill in chunks of 8192 tokens into a GPU DynamicCache
  mom-paper    mini-sequences of 4096 + last-layer trim + offload in prefill, reload for decode
  mom-none     mini-sequences of 4096 + trim, GPU-resident DynamicCache
  mom-prefill / mom-stream / mom-auto   mom with mini-sequences of 4096 and that offload mode
  mom          everything: mini-sequences of 4096, trim, offload="auto"

TTFT is the synchronized wall time of the prefill call; decode is the synchronized wall time
of the greedy loop over the remaining tokens divided by their count. Peaks are
torch.cuda.max_memory_allocated() after reset, weights included. Host bytes are what the
KV cache holds in host memory at the end.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

import torch

import mom
from mom.engine import families
from mom.engine.cache import HostMemoryError, growth, kv_bytes_by_layer
from mom.engine.host_guard import check_model_fits_host

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate_clock import free_memory, mom_configs  # noqa: E402  (one definition of the variants)

GiB = 2**30
CHUNK = 8192

VARIANTS = {"standard": None, "hf": None, "hf-offload": None, "hf-chunked": None, **mom_configs()}


def sync_time() -> float:
    torch.cuda.synchronize()
    return time.perf_counter()


def _cache_of(output):
    return output.cache if "cache" in output else output.past_key_values


def _prefill(model, variant: str, ids: torch.Tensor, cache_name: str):
    if variant == "standard":
        return model(ids, use_cache=True)
    if variant == "hf-offload":
        from transformers import DynamicCache

        cache = DynamicCache(config=model.config, offloading=True)
        return model(ids, logits_to_keep=1, use_cache=True, **{cache_name: cache})
    if variant == "hf-chunked":
        cache, out = None, None
        for start in range(0, ids.shape[1], CHUNK):
            kwargs = {cache_name: cache} if cache is not None else {}
            out = model(ids[:, start : start + CHUNK], logits_to_keep=1, use_cache=True, **kwargs)
            cache = _cache_of(out)
        return out
    return model(ids, logits_to_keep=1, use_cache=True)


def _decode(model, first_token, cache, cache_name: str, steps: int) -> tuple[list, list[float]]:
    """Greedy steps, each synchronized and timed (the first one includes any cache reload)."""
    token, tokens, times = first_token, [], []
    for _ in range(steps):
        start = sync_time()
        out = model(token, logits_to_keep=1, use_cache=True, **{cache_name: cache})
        token = out.logits[:, -1:].argmax(-1)
        times.append(sync_time() - start)
        tokens.append(token)
    return tokens, times


@torch.no_grad()
def measure(model, variant: str, context: int, new_tokens: int = 32, seed: int = 0, decode_tokens: int | None = None):
    """One run; returns a flat dict of every raw figure. An OOM is a result (oom=True)."""
    record = dict(variant=variant, context=context, new_tokens=new_tokens, oom=False, error=None)
    steps = (decode_tokens or new_tokens) - 1
    cache_name = families.cache_in_call(model, {})[0]
    generator = torch.Generator("cuda").manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (1, context), device="cuda", generator=generator)
    handle = mom.enable(model, VARIANTS[variant]) if VARIANTS[variant] is not None else None
    out = cache = None
    try:
        free_memory()
        torch.cuda.reset_peak_memory_stats()
        start = sync_time()
        out = _prefill(model, variant, ids, cache_name)
        record["ttft_s"] = sync_time() - start
        record["prefill_peak_gib"] = torch.cuda.max_memory_allocated() / GiB
        cache = _cache_of(out)
        first = out.logits[:, -1:].argmax(-1)
        out = None
        tokens, times = _decode(model, first, cache, cache_name, steps)
        record["decode_step_s"] = times
        record["decode_s_per_token"] = sum(times) / max(steps, 1)  # mean, first step (reload) included
        record["decode_median_s_per_token"] = sorted(times)[len(times) // 2] if times else None
        record["decode_tokens_per_s"] = max(steps, 1) / sum(times) if times else None
        record["total_s"] = record["ttft_s"] + sum(times)
        record["peak_gib"] = torch.cuda.max_memory_allocated() / GiB
        per_layer = kv_bytes_by_layer(cache, "cuda")
        record["kv_gpu_gib"] = sum(d for d, _ in per_layer) / GiB
        record["kv_host_gib"] = sum(h for _, h in per_layer) / GiB
        record["decode_steps_timed"] = steps
        record["tokens"] = [int(first)] + [int(t) for t in tokens]
        if hasattr(cache, "mom_layers"):
            record["tiers"] = [layer.tier for layer in cache.mom_layers()]
    except torch.OutOfMemoryError as error:
        record.update(oom=True, wall="gpu", error=str(error).splitlines()[0],
                      peak_gib=torch.cuda.max_memory_allocated() / GiB)
    except HostMemoryError as error:  # the host-RAM guard refused before allocating anything
        record.update(oom=True, wall="host", error=str(error))
    except Exception as error:  # a failed run is recorded, the sweep goes on
        record.update(error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc(limit=3))
    finally:
        out = cache = None
        if handle is not None:
            handle.restore()
        free_memory(settle_s=2.0)
    return record


def copy_seconds(dst: torch.Tensor, src: torch.Tensor, repeats: int) -> float:
    """Median seconds of dst.copy_(src) on the current stream, timed by CUDA events."""
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src, non_blocking=True)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return sorted(times)[len(times) // 2]


def pinned_bandwidth(gib: float = 2.0, repeats: int = 5) -> dict:
    """Pinned host<->device copy bandwidth in GB/s (10^9), median of `repeats`."""
    n = int(gib * GiB)
    host = torch.empty(n, dtype=torch.uint8).pin_memory()
    device = torch.empty(n, dtype=torch.uint8, device="cuda")
    results = {f"{name}_gb_per_s": n / copy_seconds(dst, src, repeats) / 1e9
               for name, (dst, src) in {"h2d": (device, host), "d2h": (host, device)}.items()}
    del host, device
    free_memory()
    return results


def hbm_bandwidth(gib: float = 4.0, repeats: int = 10) -> dict:
    """Device-to-device copy rate, bytes read plus written per second (GB/s, 10^9)."""
    n = int(gib * GiB)
    src, dst = (torch.empty(n, dtype=torch.uint8, device="cuda") for _ in range(2))
    seconds = copy_seconds(dst, src, repeats)
    del src, dst
    free_memory()
    return dict(copy_gb_per_s=2 * n / seconds / 1e9, bytes=2 * n)


def environment() -> dict:
    """Card, host, versions and the code's commit (mom.memory.provenance: MOM_COMMIT wins)."""
    import platform

    import psutil
    import transformers

    from mom.memory.provenance import provenance

    props = torch.cuda.get_device_properties(0)
    prov = provenance("cuda")
    return dict(card=torch.cuda.get_device_name(), gpu_total_gib=props.total_memory / GiB,
                host_ram_gib=psutil.virtual_memory().total / GiB, torch=torch.__version__,
                transformers=transformers.__version__, python=platform.python_version(),
                commit=prov["commit"], dirty=prov["dirty"])


def host_guard_maximum(model, step: int) -> int:
    """Largest multiple of `step` whose offloaded cache passes the host-RAM guard right now."""
    context = step
    while True:
        try:
            check_model_fits_host(model, 1, context + step)
        except HostMemoryError:
            return context
        context += step


__all__ = ["VARIANTS", "growth", "host_guard_maximum", "measure", "pinned_bandwidth", "environment"]
