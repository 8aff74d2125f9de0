"""Speed from a roofline of the GPU table, calibrated on the committed H100 runs.

Prefill (TTFT) is compute-bound: 2 x (matmul parameters) FLOPs per token for the projections
and MLPs, plus causal attention's 2 x S^2 x (heads x head_dim) per layer. Each term runs at its
own share of the card's bf16 peak: 61% for matmuls and 52.5% for attention, the two shares
that fit llama-3.1-8b's TTFT on the H100 at 128k (11.70 s) and 256k (40.74 s) exactly; at 704k
the fit predicts 279 s against 290 s measured (-4%). Other cards keep the shares. Offload adds
nothing while the device-to-host copy of a layer's K/V (on a side stream) is shorter than the
layer's compute, and is the bound otherwise.

Decode takes one of two paths (`decode_path`: the engine's own rule, read off the prediction):

- eager (transformers' cache, or any layer streamed): Python launches about a thousand kernels
  per step and the host sets the pace. step = max(device, link, host): the GPU runs each kernel
  while the host launches later ones, so a step costs the slower of the two, not their sum.
  The H100 data say max: mom-auto's median step at 128k is within its own rounds' spread of the
  one at 4k although it reads 32x the K/V (a sum with the device term below would predict 42 ms
  against 31 ms measured, +36%), while hf at 128k takes 2.6x its 4k step: device-bound by its cache copies.
  host = the calibrated seconds per decoder layer of that path ("hf" or "mom";
  calibration.host_cost: median of the 4k runs of benchmarks/results/2026-11-28_h100_decode_repeats.json)
  x layers. The 128k runs are not in the fit; tests/simulate/test_decode_speed.py checks them.
- graph (a mom cache with every layer resident; engine/graph_decode.py): one graph launch per
  step, so step = weights and K/V read at the rates measured in the H100 decode_speed run, plus
  a fixed cost per step (generate()'s and mom's Python, which adds because generate() waits for
  each token, and the graph's per-kernel costs): calibration.graph_cost, fitted at 4k (7.4 ms
  on that host), checked at 128k (+3-5%, tests/simulate/test_decode_speed.py).

The device term: the weights read once (at 80% of HBM bandwidth), the device-resident K/V once
at an attention share of HBM bandwidth (calibrated on `auto` at 128k: 0.0198 s/token once the
first step's reload is taken out), and transformers' DynamicCache also copies its whole cache
each step (torch.cat: read + write; 2.7 cache reads worth, fitted on `hf` at 128k: 0.060
s/token; benchmarks/results/history/2026-11-26_h100_offload_128k_final.json). Streamed K/V
cross the host link at the card's pinned bandwidth (`stream` at 128k: 1.04x of that bound), and
the first step's reload of an offloaded cache is spread over the steps.

Ranges: +-15% around the central value for prefill. Eager decode: the calibration runs' own
spread (the fastest and slowest run's cost per layer over the median: one H100 round in three
ran 2-3x slower) applied to the step, never narrower than -15% / +15%. Graph decode: the
calibration rounds' spread of the fixed cost, never narrower than -15%, up to the eager step
(replaying the kernels should not be slower than launching them one by one). The -15% floor
matters at long contexts: the fixed cost fitted at 4k is about 2 ms high at 128k, where two H100
hosts measured 17.1 and 17.85 ms against 19.3 predicted (benchmarks/NOTES.md, 2026-12-07).
"""

from __future__ import annotations

from ..config import MomConfig
from ..engine import families
from . import calibration
from .gpus import GPU

MATMUL_SHARE = 0.61
ATTENTION_SHARE = 0.525
WEIGHTS_HBM_SHARE = 0.80
KV_HBM_SHARE = 0.35
CAT_TRAFFIC = 2.7  # DynamicCache's torch.cat per token, in units of one read of the cache (hf at 128k)
PREFILL_SPREAD = 0.15
DEVICE_SPREAD = 0.15


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


def device_seconds(weights: int, kv_device: int, copies_cache: bool, card: GPU) -> float:
    """Seconds the GPU needs per decode step: the weights and the resident K/V read from HBM,
    plus DynamicCache's per-step copy of its whole cache when `copies_cache`."""
    seconds = weights / (card.hbm_bytes_per_s * WEIGHTS_HBM_SHARE)
    return seconds + kv_device * (1 + (CAT_TRAFFIC if copies_cache else 0)) / (card.hbm_bytes_per_s * KV_HBM_SHARE)


def decode_path(mom_config: MomConfig, config, kv_host: int) -> tuple[str, str]:
    """("graph" or "eager", why): graph_decode's rule on the prediction's own cache state.
    A prediction's prompt is never padded, so that condition always holds."""
    if mom_config.offload == "none":
        return "eager", "no mom cache (offload='none' keeps transformers' own cache)"
    if not mom_config.graph_decode_on("cuda"):
        return "eager", "decode_graph off (MomConfig(decode_graph=False))"
    if kv_host:
        return "eager", "some layers are not resident on the GPU (streamed)"
    if len(families.offloadable_layers(config)) != config.num_hidden_layers:
        return "eager", "sliding-window layers"
    if any(kind in _rope_type(config) for kind in ("dynamic", "longrope")):
        return "eager", "RoPE rescaled on the host as the context grows"
    return "graph", "every layer's K/V resident on the GPU"


def eager_host(mom_config: MomConfig) -> str:
    """Which calibrated eager path runs: "hf" when the config patches nothing, else "mom"."""
    patches = mom_config.uses_mini_sequences or mom_config.trims_last_layer or mom_config.offload != "none"
    return "mom" if patches else "hf"


def eager_step(device: float, link: float, cost: calibration.HostCost, layers: int) -> tuple[float, tuple, str]:
    """(seconds, (low, high), what bounds it) of an eager step: max(device, link, host)."""
    host = cost.seconds_per_layer * layers
    step = max(device, link, host)
    low = step * min(1 - DEVICE_SPREAD, cost.low_per_layer / cost.seconds_per_layer)
    high = step * max(1 + DEVICE_SPREAD, cost.high_per_layer / cost.seconds_per_layer)
    launches = (f"host-bound: {cost.seconds_per_layer * 1e3:.2f} ms/layer x {layers} layers ({cost.path}'s eager "
                f"decode, median of {cost.runs} runs at {cost.context:,} tokens on {cost.card}, "
                f"{cost.source} @ {cost.commit[:7]})")
    bound = {device: "HBM-bound", link: "host-link-bound (streamed K/V)", host: launches}[step]
    return step, (low, high), bound


def graph_step(weights: int, kv_device: int, card: GPU, cost: calibration.GraphCost,
               eager: tuple[float, tuple, str]) -> tuple[float, tuple, str]:
    """(seconds, (low, high), what bounds it) of a replayed step: the calibrated graph step
    (`cost`: reads at measured rates plus the per-step overhead), at worst eager."""
    step = cost.step_seconds(weights, kv_device, card.hbm_bytes_per_s)
    low = min(step - cost.overhead_s + cost.low_s, step * (1 - DEVICE_SPREAD))  # never narrower than -15%
    high = max(step - cost.overhead_s + cost.high_s, step * (1 + DEVICE_SPREAD))
    bound = (f"HBM-bound, one CUDA graph per step (+{cost.overhead_s * 1e3:.1f} ms fixed per step; "
             f"median of {cost.runs} runs at {cost.context:,} tokens on {cost.card}, {cost.source} @ {cost.commit[:7]})")
    return step, (low, max(high, eager[1][1])), bound  # at worst as slow as the eager step


def fill(result, config, mom_config: MomConfig, card: GPU, batch: int) -> None:
    """Set TTFT, decode rate, their ranges, the decode path and notes on a Prediction from its memory events."""
    if result.oom:
        return
    ttft, why = prefill_seconds(config, result.context, batch, card)
    result.ttft_s = ttft
    result.ttft_range_s = (ttft * (1 - PREFILL_SPREAD), ttft * (1 + PREFILL_SPREAD))
    result.speed_notes = [f"prefill {why}"]
    if result.new_tokens > 1:
        _fill_decode(result, config, mom_config, card, batch)


def _fill_decode(result, config, mom_config: MomConfig, card: GPU, batch: int) -> None:
    steps = result.new_tokens - 1
    kv_device, kv_host, reloaded = _decode_kv(result)
    reloaded = reloaded if mom_config.offload != "none" else 0  # transformers' cache only grows
    link = (kv_host if mom_config.offload in ("stream", "auto") else 0) / card.host_link_bytes_per_s
    device = device_seconds(result.weights_bytes, kv_device, mom_config.offload == "none", card)
    cost = calibration.host_cost(eager_host(mom_config))
    eager = eager_step(device, link, cost, config.num_hidden_layers)
    path, why = decode_path(mom_config, config, kv_host)
    if path == "graph":
        graph = calibration.graph_cost()
        step, (low, high), bound = graph_step(result.weights_bytes, kv_device, card, graph, eager)
    else:
        step, (low, high), bound = eager
    reload = reloaded / card.host_link_bytes_per_s / steps  # the first step's, spread over the steps
    result.decode_tokens_per_s = batch / (step + reload)
    result.decode_s_per_token_range = (low + reload, high + reload)
    result.decode_path = f"{path} (predicted: {why})"
    result.calibration = {**result.calibration, "decode_host": cost.describe()}
    if path == "graph":
        result.calibration["decode_graph"] = graph.describe()
    result.speed_notes.append(f"decode {path}, {bound}" + (f", plus the first step's reload over {steps} steps"
                                                            if reloaded else ""))


def _rope_type(config) -> str:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return str(params.get("rope_type", params.get("type", "default")))


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
