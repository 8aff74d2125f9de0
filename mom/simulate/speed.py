"""Speed from a roofline of the GPU table, calibrated on the committed H100 runs.

Prefill (TTFT) is compute-bound: 2 x (matmul parameters) FLOPs per token for the projections
and MLPs, plus causal attention's 2 x S^2 x (heads x head_dim) per layer. Each term runs at its
own share of the card's bf16 peak: 61% for matmuls and 52.5% for attention, the two shares
that fit llama-3.1-8b's TTFT on the H100 at 128k (11.70 s) and 256k (40.74 s) exactly; at 704k
the fit predicts 279 s against 290 s measured (-4%). Other cards keep the shares. Offload adds
nothing while the device-to-host copy of a layer's K/V (on a side stream) is shorter than the
layer's compute, and is the bound otherwise.

Decode is memory- and host-bound. Per token: the weights are read once (at 80% of HBM
bandwidth), the device-resident K/V once at an attention share of HBM bandwidth (calibrated
on `auto` at 128k: 0.0198 s/token once the first step's reload is taken out), transformers'
DynamicCache also copies its whole cache each step (torch.cat: read + write; 2.7 cache reads
worth, fitted on `hf` at 128k: 0.060 s/token), streamed K/V
cross the host link at the card's pinned bandwidth (`stream` at 128k: 1.04x of that bound),
and the first step's reload of the offloaded cache is spread over the tokens. A step never
runs faster than the host launches its kernels: about 0.6 ms per decoder layer on the H100
host (an 8B model decodes at ~0.02 s/token however short the context); that floor is the
host's, not the card's, and the range says so.

Ranges: +-15% around the central value for prefill; -15% / +110% for decode, because the H100
host's decode timings of one config varied 2.08x between runs of the same session (0.0324 and
0.0675 s/token, benchmarks/NOTES.md): the host, not the card, sets the upper end.
"""

from __future__ import annotations

from ..config import MomConfig
from ..engine import families
from .gpus import GPU

MATMUL_SHARE = 0.61
ATTENTION_SHARE = 0.525
WEIGHTS_HBM_SHARE = 0.80
KV_HBM_SHARE = 0.35
CAT_TRAFFIC = 2.7  # DynamicCache's torch.cat per token, in units of one read of the cache (hf at 128k)
HOST_FLOOR_S_PER_LAYER = 0.6e-3
PREFILL_SPREAD = 0.15
DECODE_LOW, DECODE_HIGH = 0.15, 1.10


def matmul_params(config) -> int:
    """Parameters multiplied per prompt token: every decoder layer's linear weights."""
    d, inter = config.hidden_size, config.intermediate_size
    layers, kv_heads, head_dim = families.kv_geometry_of_config(config)
    q_width = config.num_attention_heads * head_dim
    attention = d * q_width + 2 * d * kv_heads * head_dim + q_width * d
    return layers * (attention + 3 * d * inter)


def prefill_seconds(config, context: int, batch: int, card: GPU) -> tuple[float, str]:
    """(seconds, what bounds it) of a prefill of `context` tokens."""
    layers, _, head_dim = families.kv_geometry_of_config(config)
    linear = 2 * matmul_params(config) * context * batch
    attention = 2 * context * context * config.num_attention_heads * head_dim * layers * batch
    seconds = linear / (card.bf16_flops * MATMUL_SHARE) + attention / (card.bf16_flops * ATTENTION_SHARE)
    return seconds, f"compute-bound: {(linear + attention) / 1e15:.1f} PFLOP at {card.bf16_flops / 1e12:.0f} TFLOP/s peak"


def decode_seconds(weights: int, kv_device: int, kv_streamed: int, kv_reloaded: int, copies_cache: bool,
                   layers: int, steps: int, card: GPU) -> tuple[float, str]:
    """(mean seconds per decode token, what bounds it)."""
    device = weights / (card.hbm_bytes_per_s * WEIGHTS_HBM_SHARE)
    device += kv_device * (1 + (CAT_TRAFFIC if copies_cache else 0)) / (card.hbm_bytes_per_s * KV_HBM_SHARE)
    link = kv_streamed / card.host_link_bytes_per_s
    floor = HOST_FLOOR_S_PER_LAYER * layers
    step = max(device, link, floor)
    reload = kv_reloaded / card.host_link_bytes_per_s / max(steps, 1)
    bound = {device: "HBM-bound", link: "host-link-bound (streamed K/V)", floor: "host-bound (kernel launches)"}[step]
    return step + reload, bound + (f", plus the first step's reload over {steps} steps" if kv_reloaded else "")


def fill(result, config, mom_config: MomConfig, card: GPU, batch: int) -> None:
    """Set TTFT, decode rate, their ranges and notes on a Prediction from its memory events."""
    if result.oom:
        return
    ttft, why = prefill_seconds(config, result.context, batch, card)
    result.ttft_s = ttft
    result.ttft_range_s = (ttft * (1 - PREFILL_SPREAD), ttft * (1 + PREFILL_SPREAD))
    result.speed_notes = [f"prefill {why}"]
    steps = result.new_tokens - 1
    if steps < 1:
        return
    kv_device, kv_host, reloaded = _decode_kv(result)
    streamed = kv_host if mom_config.offload in ("stream", "auto") else 0
    layers = config.num_hidden_layers
    seconds, bound = decode_seconds(result.weights_bytes, kv_device, streamed, reloaded,
                                    mom_config.offload == "none", layers, steps, card)
    result.decode_tokens_per_s = batch / seconds
    result.decode_s_per_token_range = (seconds * (1 - DECODE_LOW), seconds * (1 + DECODE_HIGH))
    result.speed_notes.append(f"decode {bound}")


def _decode_kv(result) -> tuple[int, int, int]:
    """(device, host, reloaded) K/V bytes of decode, from the events: on the device and on the host
    at the last decode event, and what came to the device from the host after prefill."""
    prefill = [e for e in result.events if e.phase == "prefill"]
    decode = [e for e in result.events if e.phase == "decode"]
    if not decode:
        return 0, 0, 0
    after_prefill = prefill[-1].kv_gpu_bytes if prefill else 0
    last = decode[-1]
    return last.kv_gpu_bytes, last.kv_host_bytes, max(0, last.kv_gpu_bytes - after_prefill)
