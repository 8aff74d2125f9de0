"""Rough GPU wall time of a planned run, so GPU commands can be planned within 10 minutes.

A plan, not a measurement: constants from the H100 80GB runs logged in NOTES.md and the
independent measurements quoted in issue 12. Prefill = FLOPs / 500 TFLOP/s, FLOPs =
2 x params x S (linear layers) + 2 x S^2 x heads x head_dim x layers (causal attention): 13 s at 128k and 294 s at 720,896 for
llama-3.1-8b (measured 11.7 s and 295 s). fp32 prefill (the exactness reference) at 50 TFLOP/s.
Decode through generate(): Hugging Face's eager step is host-bound, about 0.065 s/token (0.056-0.066
measured at 4k and 128k, results/2026-12-07_h100_decode_speed_fused.json); mom's captured step
about 0.015 (7.7-13.3 ms measured there);
transformers' offloaded cache copies the whole cache each step (5.0 s/token at 128k on
16 GiB on one host: about 3.4 GB/s; 2.62 s/token on another, results/2026-12-07_h100_peers_128k.json); mom streams what the GPU cannot keep at about 50 GB/s. Loading a
preset's random weights: about 1 minute (a guess; the scripts log the real figure).
"""

from __future__ import annotations

import mom

TFLOPS = {"bf16": 500e12, "fp32": 50e12}
DECODE_S = 0.065  # Hugging Face's eager step
GRAPH_DECODE_S = 0.015  # mom's captured step, layers resident
LOAD_S = 60.0
SETTLE_S = 1.0
OFFLOADED_BYTES_PER_S = 3.4e9
STREAM_BYTES_PER_S = 50e9
GPU_BYTES = 80e9


def shape(model_name: str) -> dict:
    """Parameter count, attention width, layers and K/V bytes per token (bf16) of a preset."""
    model = mom.load(model_name, device="meta")
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    layers = config.num_hidden_layers
    return dict(params=sum(p.numel() for p in model.parameters()), attention=config.num_attention_heads * head_dim,
                layers=layers, kv_per_token=2 * 2 * layers * config.num_key_value_heads * head_dim)


def prefill_s(s: dict, context: int, dtype: str = "bf16") -> float:
    flops = 2 * s["params"] * context + 2 * context**2 * s["attention"] * s["layers"]
    return flops / TFLOPS[dtype]


def decode_s_per_token(s: dict, variant: str, context: int) -> float:
    kv = s["kv_per_token"] * context
    if variant == "hf-offload":
        return kv / OFFLOADED_BYTES_PER_S
    if variant.startswith("mom"):
        room = GPU_BYTES - 2 * s["params"] - 10e9
        streamed = max(0.0, kv - room)
        if streamed:  # the eager step, waiting on the streamed layers
            return DECODE_S + streamed / STREAM_BYTES_PER_S
        return GRAPH_DECODE_S
    return DECODE_S


def run_s(s: dict, variant: str, context: int, new_tokens: int) -> float:
    """One generate() run: prefill, new_tokens - 1 decode steps, the settle between runs."""
    return prefill_s(s, context) + (new_tokens - 1) * decode_s_per_token(s, variant, context) + SETTLE_S


def lines(title: str, seconds: float, limit_s: float = 540) -> list[str]:
    """The estimate as printed by the scripts, with the number of 9-minute polls it needs."""
    polls = int(seconds // limit_s) + 1
    text = f"estimated GPU wall time of {title}: {seconds / 60:.1f} min (H100 80GB, model load included)"
    if seconds > limit_s:
        text += f"; longer than one command: run with --detach, then --poll --wait {int(limit_s)} about {polls} times"
    return [text]


def guessed_maximum(variant: str) -> int:
    """Where a search is expected to stop, for planning only (never reported): the paper's
    maxima (anchors) for its methods, 200k for hf (128k passed, 256k ran out of memory on an
    H100), mom.predict's 1,114,112 for mom on a 125 GiB host (NOTES.md), and for hf-offload 458,752,
    mom.predict's maximum for its nearest analogue (offload="stream" without mini-sequences or trim)."""
    import json
    from pathlib import Path

    paper = json.loads((Path(__file__).resolve().parent / "anchors" / "mom_paper.json").read_text())
    named = {"standard": "standard", "hf-chunked": "chunked_prefill", "mom-paper": "mom"}
    if variant in named:
        return paper["max_context_tokens"][named[variant]]
    return {"hf": 200_000, "mom": 1_114_112, "hf-offload": 458_752}.get(variant, 200_000)


def failing_s(s: dict, variant: str, context: int) -> float:
    """A try that fails: the host guard refuses mom at once; transformers' offloaded cache runs out
    in the first layer's MLP (every layer's transients are the same, and its K/V leaves the card);
    another GPU OOM costs up to a prefill."""
    if variant == "mom":
        return 0.0
    return prefill_s(s, context) / (s["layers"] if variant == "hf-offload" else 1)
