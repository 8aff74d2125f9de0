"""TTFT and decode as a user sees them: through `model.generate()`, stamped by a streamer.

The streamer's `put()` synchronizes the GPU and stamps the time: generate() calls it once with
the prompt and once per new token, so the first stamp after the prompt is the first token
(TTFT = that stamp - the call's start) and the gaps after it are decode steps. The prefill peak
is read at the first token (then the peak statistic is reset, so the decode peak is its own);
the run's peak is the larger of the two.

Variants through generate(): hf (GPU DynamicCache), hf-offload (`cache_implementation=
"offloaded"`), hf-chunked (`prefill_chunk_size=8192`), and every mom config of harness.VARIANTS
(mom.enable, then the same generate() call).
"""

from __future__ import annotations

import time
import traceback

import torch

import mom
from mom.engine.cache import HostMemoryError, kv_bytes_by_layer

GiB = 2**30
GENERATE_OPTIONS = {
    "hf-offload": dict(cache_implementation="offloaded"),
    "hf-chunked": dict(prefill_chunk_size=8192),
}


class StampingStreamer:
    """A transformers streamer that records a synchronized time stamp per put()."""

    def __init__(self):
        self.stamps: list[float] = []
        self.prefill_peak: int | None = None

    def put(self, value) -> None:
        torch.cuda.synchronize()
        self.stamps.append(time.perf_counter())
        if len(self.stamps) == 2:  # the first generated token: prefill is over
            self.prefill_peak = torch.cuda.max_memory_allocated()
            torch.cuda.reset_peak_memory_stats()

    def end(self) -> None:
        pass


@torch.no_grad()
def measure_generate(model, variant: str, config, context: int, new_tokens: int = 32, seed: int = 0) -> dict:
    """One generate() run of one variant; every raw figure in a flat dict. OOM is a result."""
    from harness import free_memory

    record = dict(variant=variant, context=context, new_tokens=new_tokens, clock="generate+streamer", oom=False, error=None)
    generator = torch.Generator("cuda").manual_seed(seed)
    ids = torch.randint(3, model.config.vocab_size, (1, context), device="cuda", generator=generator)
    handle = mom.enable(model, config) if config is not None else None
    out = None
    try:
        free_memory()
        streamer = StampingStreamer()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, pad_token_id=0, streamer=streamer,
                             return_dict_in_generate=True, **GENERATE_OPTIONS.get(variant, {}))
        stamps = streamer.stamps
        gaps = [b - a for a, b in zip(stamps[1:], stamps[2:])]
        record.update(ttft_s=stamps[1] - start, decode_step_s=gaps,
                      decode_s_per_token=sum(gaps) / len(gaps) if gaps else None,
                      decode_median_s_per_token=sorted(gaps)[len(gaps) // 2] if gaps else None,
                      prefill_peak_gib=streamer.prefill_peak / GiB,
                      peak_gib=max(streamer.prefill_peak, torch.cuda.max_memory_allocated()) / GiB,
                      tokens=out.sequences[0, context:].tolist())
        cache = out.cache if "cache" in out else out.past_key_values
        per_layer = kv_bytes_by_layer(cache, "cuda")
        record.update(kv_gpu_gib=sum(d for d, _ in per_layer) / GiB, kv_host_gib=sum(h for _, h in per_layer) / GiB)
    except torch.OutOfMemoryError as error:
        record.update(oom=True, wall="gpu", error=str(error).splitlines()[0], peak_gib=torch.cuda.max_memory_allocated() / GiB)
    except HostMemoryError as error:
        record.update(oom=True, wall="host", error=str(error))
    except Exception as error:  # a failed run is recorded, the sweep goes on
        record.update(error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc(limit=4))
    finally:
        out = None
        if handle is not None:
            handle.restore()
        free_memory(settle_s=1.0)
    return record
