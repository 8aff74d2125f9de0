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
  The H100 data say max: `mom-eager`'s step at 128k is within a few ms of its step at 4k
  although its GPU time grows from 8.4 to 13.7 ms, and a sum fitted at 4k overshoots 128k by
  more than 15% (tests/simulate/test_decode_speed.py).
  host = the calibrated seconds per decoder layer of that path ("hf" or "mom";
  calibration.host_cost: median of the 4k runs of benchmarks/results/2026-11-28_h100_decode_repeats.json)
  x layers, plus, for transformers' own path (`MomConfig()`) on a card whose sdpa tries cuDNN
  first, cuDNN's plan for each key length new to the process (calibration.cold_cost: 40.6 ms a
  step on an H100; every step of a user's generate() is such a length; mom's eager paths run
  decode without cuDNN's sdpa and do not pay it).
- graph (a mom cache with every layer resident; engine/graph_decode.py): one graph launch per
  step, so step = weights and K/V read at the rates measured in the H100 decode_speed run, plus
  an overhead: generate()'s and mom's Python and the graph's launch, which add because
  generate() waits for each token (per step), and the graph's kernels (per layer, from the
  replay timed alone): calibration.graph_cost, fitted on llama at 4k and 128k, checked on qwen and nemo
  (tests/simulate/test_decode_speed.py).

The eager device term, from the GPU's busy time per step (torch.profiler) in the H100
decode_split runs (calibration.eager_device_rates): the weights once at 54% of the card's HBM
bandwidth (batch-one GEMVs and a thousand small kernels), the device-resident K/V once at 94%,
and transformers' DynamicCache also copies its whole cache each step (torch.cat), 2.14 more
reads of the cache. Streamed K/V cross the host link at the card's pinned bandwidth (`stream`
at 128k: 0.97-1.04x of that bound), and the first step's reload of an offloaded cache is spread
over the steps. (Until 2026-12-07 the device term was fitted on `hf`'s 60 ms step at 128k, which
was mostly cuDNN's plan cost: K/V at 35% of HBM and 2.7 reads for the copy.)

Ranges: +-15% around the central value for prefill; for a head size other than 128 (the only one
any calibration run had), the top also lets attention take 1.5x as long (UNSEEN_HEAD_DIM_ATTENTION).
Eager decode: the calibration runs' own spread (the fastest and slowest run's cost per layer over the median: one H100 round in three
ran 2-3x slower) applied to the step, never narrower than -15% / +15%; with the cold term, the
low end is the step without it (lengths decoded before in the process) and the high end adds
its slowest measurement. Graph decode: the
calibration rounds' spread of the fixed cost, never narrower than -15%, up to the eager step
(replaying the kernels should not be slower than launching them one by one). The range's top
holds the slower hosts: two H100 hosts measured 17.1 and 17.85 ms at 128k at commit 2522520,
where the fused run's host took 13.3 (benchmarks/NOTES.md, 2026-12-07).
"""

from __future__ import annotations

from ..config import MomConfig
from ..engine import families
from . import calibration
from .gpus import GPU

MATMUL_SHARE = 0.61
ATTENTION_SHARE = 0.525
# transformers' chunked prefill (generate(prefill_chunk_size=...)) attends each chunk to the whole
# cache through sdpa with an explicit mask, not the causal flash kernel: its attention rate, fitted
# on hf-chunked at 144,000 tokens in 8,192-token chunks (26.32 s TTFT, the linear part at
# MATMUL_SHARE; CHUNKED_SOURCE; tests/simulate/test_accuracy_h100_f1ac027.py refits it)
CHUNKED_ATTENTION_SHARE = 0.2391
CHUNKED_SOURCE = "benchmarks/results/2026-12-07_h100_paper_tables_round1.json @ f1ac027"
WEIGHTS_HBM_SHARE = 0.54  # calibration.eager_device_rates, kept equal by tests/simulate/test_decode_speed.py
KV_HBM_SHARE = 0.94
CAT_TRAFFIC = 2.14  # DynamicCache's torch.cat per token, in reads of the cache
PREFILL_SPREAD = 0.15
# Every prefill the shares were fitted or checked on ran head_dim 128 (llama-3.1-8b, qwen2.5-7b,
# mistral-nemo-12b). Flash attention runs smaller heads at a lower rate per FLOP, by how much on this
# card is not measured yet (stage predict_presets: llama-3.2-1b and 3b, head_dim 64): the central
# value keeps the fitted share, and the range's top lets attention take this much longer.
CALIBRATED_HEAD_DIM = 128
UNSEEN_HEAD_DIM_ATTENTION = 1.5
DEVICE_SPREAD = 0.15


def matmul_params(config) -> int:
    """Parameters multiplied per prompt token: every decoder layer's linear weights."""
    d, inter = config.hidden_size, config.intermediate_size
    layers, kv_heads, head_dim = families.kv_geometry_of_config(config)
    q_width = config.num_attention_heads * head_dim
    attention = d * q_width + 2 * d * kv_heads * head_dim + q_width * d
    return layers * (attention + 3 * d * inter)


def prefill_flops(config, context: int, batch: int, logits_to_keep: int = 1) -> tuple[int, int]:
    """(linear, attention) FLOPs of a prefill of `context` tokens that keeps the logits of its last
    `logits_to_keep` positions (0: every position's)."""
    layers, _, head_dim = families.kv_geometry_of_config(config)
    positions = context if logits_to_keep == 0 else min(logits_to_keep, context)
    linear = 2 * (matmul_params(config) * context + config.hidden_size * config.vocab_size * positions) * batch
    attention = 2 * context * context * config.num_attention_heads * head_dim * layers * batch
    return linear, attention


def prefill_seconds(config, context: int, batch: int, card: GPU, logits_to_keep: int = 1,
                    chunk: int | None = None) -> tuple[float, str]:
    """(seconds, what bounds it) of a prefill (prefill_flops), in calls of `chunk` tokens (None: one)."""
    linear, attention = prefill_flops(config, context, batch, logits_to_keep)
    chunked, share = attention_share(context, chunk)
    seconds = linear / (card.bf16_flops * MATMUL_SHARE) + attention / (card.bf16_flops * share)
    why = f"compute-bound: {(linear + attention) / 1e15:.1f} PFLOP at {card.bf16_flops / 1e12:.0f} TFLOP/s peak"
    if chunked:
        why += f"; attention in {chunk:,}-token chunks through a masked kernel, at {share:.0%} ({CHUNKED_SOURCE})"
    return seconds, why


def attention_share(context: int, chunk: int | None) -> tuple[bool, float]:
    """(chunked, the share of the bf16 peak attention runs at) of a prefill in calls of `chunk` tokens."""
    chunked = chunk is not None and chunk < context
    return chunked, CHUNKED_ATTENTION_SHARE if chunked else ATTENTION_SHARE


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


def eager_step(device: float, link: float, cost: calibration.HostCost, layers: int,
               cold: calibration.ColdCost | None = None) -> tuple[float, tuple, str]:
    """(seconds, (low, high), what bounds it) of an eager step: max(device, link, host), the host
    term with cuDNN's plan per new key length where `cold` is given."""
    host = cost.seconds_per_layer * layers
    plans = cold.seconds if cold else 0.0
    step, warm = max(device, link, host + plans), max(device, link, host)
    low = warm * min(1 - DEVICE_SPREAD, cost.low_per_layer / cost.seconds_per_layer)
    high = warm * max(1 + DEVICE_SPREAD, cost.high_per_layer / cost.seconds_per_layer) + (cold.high_s if cold else 0.0)
    launches = (f"host-bound: {cost.seconds_per_layer * 1e3:.2f} ms/layer x {layers} layers ({cost.path}'s eager "
                f"decode, median of {cost.runs} runs at {cost.context:,} tokens on {cost.card}, "
                f"{cost.source} @ {cost.commit[:7]})")
    if cold:
        launches += (f" + {plans * 1e3:.1f} ms of cuDNN's sdpa plan per key length new to the process (median of "
                     f"{cold.runs} on {cold.card}, {cold.source} @ {cold.commit[:7]})")
    bound = {device: "HBM-bound", link: "host-link-bound (streamed K/V)", host + plans: launches}[step]
    return step, (low, high), bound


def pays_cudnn_plans(mom_config: MomConfig, card: GPU) -> bool:
    """Whether eager decode meets cuDNN's plan per new key length: transformers' own path
    (`MomConfig()`: mom's patched decode turns cuDNN's sdpa off) on a card whose sdpa tries it first."""
    return mom_config.is_baseline and card.cudnn_sdpa_first


def graph_step(weights: int, kv_device: int, card: GPU, cost: calibration.GraphCost,
               eager: tuple[float, tuple, str], layers: int) -> tuple[float, tuple, str]:
    """(seconds, (low, high), what bounds it) of a replayed step of a model of `layers` decoder
    layers: the calibrated graph step (`cost`: reads at measured rates plus the overhead, its
    kernels' part scaled by the layers), at worst eager."""
    step = cost.step_seconds(weights, kv_device, card.hbm_bytes_per_s, layers)
    overhead = cost.overhead_for(layers)
    low = min(step - cost.overhead_s + cost.low_s, step * (1 - DEVICE_SPREAD))  # never narrower than -15%
    high = max(step - cost.overhead_s + cost.high_s, step * (1 + DEVICE_SPREAD))
    per_layer = f", {cost.per_layer_s * 1e6:.0f} us of it per layer" if cost.per_layer_s else ""
    bound = (f"HBM-bound, one CUDA graph per step (+{overhead * 1e3:.1f} ms per step{per_layer}; "
             f"median of {cost.runs} runs at {cost.context:,} tokens on {cost.card}, {cost.source} @ {cost.commit[:7]})")
    return step, (low, max(high, eager[1][1])), bound  # at worst as slow as the eager step


def fill(result, config, mom_config: MomConfig, card: GPU, batch: int) -> None:
    """Set TTFT, decode rate, their ranges, the decode path and notes on a Prediction from its memory events."""
    if result.oom:
        return
    ttft, why = prefill_seconds(config, result.context, batch, card, result.logits_to_keep, result.prefill_chunk_size)
    result.ttft_s = ttft
    result.ttft_range_s = (ttft * (1 - PREFILL_SPREAD), ttft * (1 + PREFILL_SPREAD))
    result.speed_notes = [f"prefill {why}"]
    _widen_for_an_unseen_head_dim(result, config, batch, card)
    if result.new_tokens > 1:
        _fill_decode(result, config, mom_config, card, batch)


def _widen_for_an_unseen_head_dim(result, config, batch: int, card: GPU) -> None:
    """The TTFT range's top where the attention kernel runs a head size no run calibrated."""
    head_dim = families.kv_geometry_of_config(config)[2]
    if head_dim == CALIBRATED_HEAD_DIM:
        return
    _, attention = prefill_flops(config, result.context, batch, result.logits_to_keep)
    _, share = attention_share(result.context, result.prefill_chunk_size)
    extra = attention / (card.bf16_flops * share) * (UNSEEN_HEAD_DIM_ATTENTION - 1)
    low, high = result.ttft_range_s
    result.ttft_range_s = (low, high + extra)
    result.speed_notes.append(f"attention at head_dim {head_dim}: its rate is calibrated at head_dim "
                              f"{CALIBRATED_HEAD_DIM} only, so the TTFT range's top lets it take "
                              f"{UNSEEN_HEAD_DIM_ATTENTION:g}x as long (+{extra:.2f} s)")


def _fill_decode(result, config, mom_config: MomConfig, card: GPU, batch: int) -> None:
    steps = result.new_tokens - 1
    kv_device, kv_host, reloaded = _decode_kv(result)
    reloaded = reloaded if mom_config.offload != "none" else 0  # transformers' cache only grows
    link = (kv_host if mom_config.offload in ("stream", "auto") else 0) / card.host_link_bytes_per_s
    device = device_seconds(result.weights_bytes, kv_device, mom_config.offload == "none", card)
    cost = calibration.host_cost(eager_host(mom_config))
    cold = calibration.cold_cost() if pays_cudnn_plans(mom_config, card) else None
    eager = eager_step(device, link, cost, config.num_hidden_layers, cold)
    path, why = decode_path(mom_config, config, kv_host)
    if path == "graph":
        graph = calibration.graph_cost()
        step, (low, high), bound = graph_step(result.weights_bytes, kv_device, card, graph, eager,
                                              config.num_hidden_layers)
    else:
        step, (low, high), bound = eager
    result.decode_step_s, result.decode_reload_s = step, reloaded / card.host_link_bytes_per_s
    reload = result.decode_reload_s / steps  # the first step's, spread over the steps
    result.decode_tokens_per_s = batch / (step + reload)
    result.decode_s_per_token_range = (low + reload, high + reload)
    result.decode_path = f"{path} (predicted: {why})"
    result.calibration = {**result.calibration, "decode_host": cost.describe()}
    if cold and path == "eager":
        result.calibration["decode_cold_length"] = cold.describe()
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
