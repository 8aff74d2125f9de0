"""TTFT and decode as a user sees them: through `model.generate()`, stamped by a streamer.

The streamer's `put()` synchronizes the device and stamps the time: generate() calls it once
with the prompt and once per new token, so the first stamp after the prompt is the first token
(TTFT = that stamp - the call's start) and the gaps after it are decode steps. The prefill peak
is read at the first token (then the peak statistic is reset, so the decode peak is its own);
the run's peak is the larger of the two.

Every variant is one generate() call with its own options (GENERATE_OPTIONS) and, for mom, a
MomConfig enabled around the call. The clock runs on any device so every benchmark script can
be tested end to end on a CPU with a tiny preset; there peaks are None (no allocator counters).
An out-of-memory (GPU or mom's host-RAM guard) is a result (`oom=True`, `wall`), never a crash:
the memory is freed and the caller goes on.
"""

from __future__ import annotations

import dataclasses
import gc
import time
import traceback

import torch

import mom
from mom.engine.host_guard import HostMemoryError
from mom.engine.kv_bytes import kv_bytes_by_layer

GiB = 2**30
PAPER_CHUNK = 8192  # hf-chunked: the paper's chunked-prefill baseline (chunks of 8192)
PAPER_PIECE = 4096  # mom: the paper code's mini-sequence size

# generate() options per variant; `chunk` is filled in by generate_options()
GENERATE_OPTIONS = {
    "standard": dict(logits_to_keep=0),  # every position's logits, as the paper's Standard
    "hf": {},
    "hf-offload": dict(cache_implementation="offloaded"),
    "hf-chunked": dict(prefill_chunk_size=None),
    "hf-static": dict(cache_implementation="static", disable_compile=True),
    "hf-static-compile": dict(cache_implementation="static"),  # generate() compiles decode on a GPU
}


def mom_configs(piece: int = PAPER_PIECE) -> dict[str, mom.MomConfig]:
    """The mom variants of docs/benchmarks.md, with mini-sequences of `piece` tokens."""
    return {
        "mom-paper": dataclasses.replace(mom.MomConfig.paper(), mini_sequence_size=piece),
        "mom-none": mom.MomConfig(mini_sequence_size=piece),
        "mom-prefill": mom.MomConfig(mini_sequence_size=piece, offload="prefill"),
        "mom-stream": mom.MomConfig(mini_sequence_size=piece, offload="stream"),
        "mom-auto": mom.MomConfig(mini_sequence_size=piece, offload="auto"),
        "mom": mom.MomConfig(mini_sequence_size=piece, offload="auto"),
    }


def known_variants() -> list[str]:
    return [*GENERATE_OPTIONS, *mom_configs()]


def generate_options(variant: str, chunk: int = PAPER_CHUNK) -> dict:
    """generate() keyword arguments of a variant (mom variants: none, mom is enabled instead)."""
    options = dict(GENERATE_OPTIONS.get(variant, {}))
    if "prefill_chunk_size" in options:
        options["prefill_chunk_size"] = chunk
    return options


def device_of(model) -> torch.device:
    return next(model.parameters()).device


def sync(device: torch.device) -> float:
    """Wait for the device, then read the clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def free_memory(settle_s: float = 0.0) -> None:
    """Collect garbage and hand cached device and pinned host blocks back between runs."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        if hasattr(torch._C, "_host_emptyCache"):
            torch._C._host_emptyCache()  # pinned blocks cached by torch (hf-offload) go back to the OS
    time.sleep(settle_s)


class StampingStreamer:
    """A transformers streamer that records a synchronized time stamp per put()."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stamps: list[float] = []
        self.prefill_peak: int | None = None

    def put(self, value) -> None:
        self.stamps.append(sync(self.device))
        if len(self.stamps) == 2:  # the first generated token: prefill is over
            self.prefill_peak = peak_bytes(self.device)
            reset_peak(self.device)

    def end(self) -> None:
        pass


def fresh_length(context: int, run_index: int, new_tokens: int) -> int:
    """A prompt length whose decode meets only K/V lengths no earlier run of the process met: the
    context plus `run_index` x (new tokens + 1). The first decode of a length costs more than a
    repeat (cuDNN's sdpa plans, docs/benchmarks.md "Cold and warm lengths"), and a user's
    generate() always decodes new lengths, so this is the figure they see."""
    return context + run_index * (new_tokens + 1)


FRESH_HELP = ("every run at K/V lengths not decoded before in the process (generate_clock.fresh_length): "
              "the cold figure a user's generate() sees")


def prompt(model, context: int, seed: int = 0) -> torch.Tensor:
    """Seeded random token ids [1, context] on the model's device (ids 0-2: pad/bos/eos kept out)."""
    generator = torch.Generator("cpu").manual_seed(seed)
    ids = torch.randint(3, model.config.vocab_size, (1, context), generator=generator)
    return ids.to(device_of(model))


@torch.no_grad()
def measure_generate(model, variant: str, config, context: int, new_tokens: int = 32, seed: int = 0,
                     options: dict | None = None, settle_s: float = 1.0) -> dict:
    """One generate() run of one variant; every raw figure in a flat dict. OOM is a result.

    Args:
        config: the MomConfig to enable around the call (None: plain transformers).
        options: generate() keyword arguments (default: generate_options(variant)).
    """
    device = device_of(model)
    record = dict(variant=variant, context=context, new_tokens=new_tokens, clock="generate+streamer",
                  oom=False, error=None)
    ids = prompt(model, context, seed)
    options = generate_options(variant) if options is None else options
    handle = mom.enable(model, config) if config is not None else None
    try:
        free_memory()
        record.update(_timed_generate(model, ids, new_tokens, options, device))
    except torch.OutOfMemoryError as error:
        record.update(oom=True, wall="gpu", error=str(error).splitlines()[0], peak_gib=_gib(peak_bytes(device)))
    except HostMemoryError as error:  # mom's host-RAM guard refused before allocating anything
        record.update(oom=True, wall="host", error=str(error))
    except Exception as error:  # a failed run is recorded, the sweep goes on
        record.update(error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc(limit=4))
    finally:
        if handle is not None:
            handle.restore()
            record["decode"] = handle.decode_stats  # which decode path ran (None: no graph path)
        free_memory(settle_s)
    return record


def _timed_generate(model, ids: torch.Tensor, new_tokens: int, options: dict, device: torch.device) -> dict:
    streamer = StampingStreamer(device)
    reset_peak(device)
    start = sync(device)
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, do_sample=False, pad_token_id=0, streamer=streamer,
                         return_dict_in_generate=True, **options)
    end = sync(device)
    stamps, context = streamer.stamps, ids.shape[1]
    gaps = [b - a for a, b in zip(stamps[1:], stamps[2:])]
    decode = sum(gaps) / len(gaps) if gaps else None
    peaks = [p for p in (streamer.prefill_peak, peak_bytes(device)) if p is not None]
    cache = out.cache if "cache" in out else out.past_key_values
    per_layer = kv_bytes_by_layer(cache, device)
    return dict(ttft_s=stamps[1] - start, total_s=end - start, decode_step_s=gaps, decode_s_per_token=decode,
                decode_median_s_per_token=sorted(gaps)[len(gaps) // 2] if gaps else None,
                decode_tokens_per_s=1 / decode if decode else None,
                prefill_peak_gib=_gib(streamer.prefill_peak), peak_gib=_gib(max(peaks)) if peaks else None,
                kv_gpu_gib=sum(d for d, _ in per_layer) / GiB, kv_host_gib=sum(h for _, h in per_layer) / GiB,
                tokens=out.sequences[0, context:].tolist())


def _gib(n: int | None) -> float | None:
    return None if n is None else n / GiB
