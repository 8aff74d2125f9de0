"""Where prefill memory goes: docs/design.md's formulas next to what the recorder measured.

Notebook 02 explains the method by putting, for one model and prompt length S, each memory
term's formula, its predicted bytes, and the bytes the recorder saw side by side. The
formulas are the design's (b = bytes per element, d = hidden size, I = MLP width, V = vocab,
L = layers, h_kv x d_h = key/value width):

- weights: b x (V d (twice if untied) + L (d (d + 2 h_kv d_h) + d^2 + 3 d I + 2 d) + d), no biases
- KV cache, all layers: S x 2 L h_kv d_h b
- MLP intermediates, one layer: 3 S I b (gate, up, their product)
- attention-side transients, one layer: about S b (3 d + 4 h_kv d_h) (q, the attention output,
  its projection; K and V with their rotated copies)
- logits: S V b when every position is projected (a plain forward), V b when only the last is
  (generate, and mom's trim)

Measured values come from events (peak minus bytes before the call, the largest in prefill),
so they include what a kernel's outputs hold and nothing a kernel hides in its workspace.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from ..engine import families
from ..memory.events import MemoryEvent, Profile, format_bytes
from . import plots


def formulas(model: nn.Module, context: int, batch: int = 1) -> pd.DataFrame:
    """Each term's formula and predicted bytes for `context` prompt tokens.

    Returns:
        A DataFrame indexed by term with columns formula and predicted (bytes).
    """
    c = model.config
    layers, kv_heads, head_dim = families.kv_geometry(model)
    b = next(model.parameters()).element_size()
    d, inner, vocab = c.hidden_size, c.intermediate_size, c.vocab_size
    kv = kv_heads * head_dim
    s = batch * context
    heads = 1 if getattr(c, "tie_word_embeddings", False) else 2
    per_layer = d * (d + 2 * kv) + d * d + 3 * d * inner + 2 * d
    rows = {
        "weights": (f"b (V d x {heads} + L (d (d + 2 h_kv d_h) + d^2 + 3 d I + 2 d) + d)",
                    b * (vocab * d * heads + layers * per_layer + d)),
        "KV cache (all layers)": ("S 2 L h_kv d_h b", s * 2 * layers * kv * b),
        "MLP intermediates (one layer)": ("3 S I b", 3 * s * inner * b),
        "attention transients (one layer)": ("S b (3 d + 4 h_kv d_h)", s * b * (3 * d + 4 * kv)),
        "logits, every position": ("S V b", s * vocab * b),
        "logits, last position": ("V b", batch * vocab * b),
    }
    return pd.DataFrame([(k, f, p) for k, (f, p) in rows.items()], columns=["term", "formula", "predicted"]).set_index("term")


def measured(standard: list[MemoryEvent], generate: Profile) -> pd.Series:
    """Bytes measured for each term: from a plain forward's events and a generate() Profile.

    Args:
        standard: events of one plain forward over the prompt (every position's logits).
        generate: a Profile of the same prompt under `MomConfig()` (last position's logits).
    """
    prefill = [e for e in generate.events if e.phase == "prefill"]
    return pd.Series({
        "weights": generate.weights_bytes,
        "KV cache (all layers)": max((e.kv_gpu_bytes + e.kv_host_bytes for e in prefill), default=0),
        "MLP intermediates (one layer)": _largest(prefill, "mlp"),
        "attention transients (one layer)": _largest(prefill, "attention"),
        "logits, every position": _largest(standard, "lm_head"),
        "logits, last position": _largest(prefill, "lm_head"),
    })


def _largest(events: list[MemoryEvent], module: str) -> int:
    return max((e.peak_bytes - e.bytes_before for e in events if e.module == module), default=0)


def terms_table(model: nn.Module, context: int, standard: list[MemoryEvent], generate: Profile) -> pd.DataFrame:
    """Formula, predicted and measured bytes of every term, formatted, with measured / predicted."""
    table = formulas(model, context, generate.batch)
    table["measured"] = measured(standard, generate)
    table["measured / predicted"] = [f"{m / p:.2f}" if p else "-" for m, p in zip(table["measured"], table["predicted"], strict=True)]
    for column in ("predicted", "measured"):
        table[column] = [format_bytes(v) for v in table[column]]
    return table


def plain_forward_events(model: nn.Module, context: int, seed: int = 0) -> list[MemoryEvent]:
    """Record one plain forward over a seeded random prompt: the paper's "Standard" prefill."""
    from ..memory.recorder import MemoryRecorder

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, model.config.vocab_size, (1, context), generator=generator).to(model.device)
    recorder = MemoryRecorder(model)
    with recorder, torch.no_grad():
        model(ids, use_cache=True)
    return recorder.events


def layer_table(profile: Profile) -> pd.DataFrame:
    """Per decoder layer in prefill: weights, bytes entering, peaks, KV after it; formatted."""
    table = profile.layer_table().drop(columns=["duration_s"]).set_index("layer")
    return table.apply(lambda column: [format_bytes(v) for v in column])


def breakdown(profile: Profile, weights_by_layer: dict[str, int]) -> pd.DataFrame:
    """The layer figure's numbers as a formatted table (see plots.layer_breakdown)."""
    return plots.layer_breakdown(profile, weights_by_layer).apply(lambda column: [format_bytes(v) for v in column])
