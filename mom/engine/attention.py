"""Attention over mini-sequences: the attention-side transients of prefill, cut to one piece.

With the MLP in pieces, prefill still holds about 59 KiB per token of attention-side tensors
on Llama-3.1-8B: RoPE temporaries of full q and k, the attention output, its transposed
contiguous copy, the o_proj input and output. Here the token-wise parts run over pieces:
q, k, v projections, per-head norms and RoPE write into one Q buffer and the layer's K/V
buffers (K/V go to the cache anyway), and o_proj reads the attention output piece by piece,
transposing one piece at a time.

Attention itself is one call over the whole prompt, exactly the call transformers makes
(sdpa with is_causal and GQA, or the configured implementation with its mask): splitting the
queries too would save the Q buffer, but bottom-right-causal pieces ran at 0.57x the speed of
one causal flash call on an H100 (benchmarks/NOTES.md), so they are not worth it.

Used for a fresh prefill (empty cache for this layer) without gradients; anything else takes
the family's own forward. When only the last position is wanted (trim), only the last query
row is projected and attended, after every key and value.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn.functional import scaled_dot_product_attention

from . import families
from .minisequence import piece_bounds


def can_run_in_pieces(attention, hidden_states: torch.Tensor, kwargs: dict) -> bool:
    cache = families.cache_argument(kwargs)
    mask = kwargs.get("attention_mask")
    return (
        not torch.is_grad_enabled()
        and not kwargs.get("output_attentions")
        and (mask is None or isinstance(mask, torch.Tensor))
        and (cache is None or cache.get_seq_length(attention.layer_idx) == 0)
    )


def attention_in_pieces(
    family: families.Family,
    attention,
    hidden_states: torch.Tensor,
    piece_size: int,
    last_position_only: bool = False,
    on_piece: Callable[[str, int, int, str], None] | None = None,
    input_norm: Callable[[torch.Tensor], torch.Tensor] | None = None,
    **kwargs,
):
    """The family's attention forward, exact, with its token-wise parts over pieces.

    hidden_states: [B, S, D] (already normed) -> ([B, S, D] or [B, 1, D], None).
    With `input_norm` (the fused prefill of engine/patch.py), hidden_states is the layer's
    residual stream instead: each piece is normed as it is projected, and the o_proj output is
    added into hidden_states in place, which is returned: the layer's attention half, with no
    normed copy and no o_proj output buffer at full length.
    on_piece(block, piece, count, "start" | "end") brackets each piece of the q/k/v pass
    (block "attention") and of the o_proj pass ("attention_out"), for memory hooks.
    """
    on_piece = on_piece or _no_hook
    cos, sin = kwargs.pop("position_embeddings")
    mask = kwargs.pop("attention_mask", None)
    cache = families.cache_argument(kwargs)
    for name in families.CACHE_KEYWORDS:
        kwargs.pop(name, None)
    rope, attend = families.rotary(attention), _attend_function(attention, mask, kwargs)
    queries, keys, values = _project_in_pieces(family, attention, hidden_states, piece_size, cos, sin,
                                               not last_position_only, on_piece, input_norm)
    if cache is not None:
        keys, values = cache.update(keys, values, attention.layer_idx)
    batch, seq_len, _ = hidden_states.shape
    if last_position_only:
        q, _, _ = families.project_qkv(family, attention, hidden_states[:, -1:])
        q = rope(q, q, cos[:, -1:], sin[:, -1:])[0]
        out = attend(q, keys, values, _last_query_row(mask))
        return attention.o_proj(out.reshape(batch, 1, -1)), None
    out = attend(queries, keys, values, mask)  # [B, S, H, hd] (a transposed view for sdpa)
    del queries, keys, values
    output = hidden_states if input_norm is not None else None
    bounds = piece_bounds(seq_len, piece_size)
    for index, (start, end) in enumerate(bounds):
        on_piece("attention_out", index, len(bounds), "start")
        projected = attention.o_proj(out[:, start:end].reshape(batch, end - start, -1))
        if input_norm is not None:
            output[:, start:end] += projected  # the residual add, in place
        else:
            if output is None:
                output = projected.new_empty(batch, seq_len, projected.shape[-1])
            output[:, start:end] = projected
        del projected
        on_piece("attention_out", index, len(bounds), "end")
    return output, None


def _no_hook(*_args) -> None:
    return None


def _last_query_row(mask: torch.Tensor | None) -> torch.Tensor | None:
    """The mask for the last query only: a 4-D [B, 1, q, k] mask keeps its last row; a 2-D
    [B, k] padding mask (FlashAttention-2's) is per key, so it applies to that query as is."""
    if mask is None or mask.dim() != 4:
        return mask
    return mask[:, :, -1:, :]


def _project_in_pieces(family, attention, hidden_states, piece_size, cos, sin, with_query: bool, on_piece,
                       input_norm=None):
    """Q [B, H, S, hd] (None without query), K and V [B, H_kv, S, hd], RoPE applied; each piece
    normed first when `input_norm` is given."""
    rope = families.rotary(attention)
    seq_len = hidden_states.shape[1]
    buffers = None
    bounds = piece_bounds(seq_len, piece_size)
    for index, (start, end) in enumerate(bounds):
        on_piece("attention", index, len(bounds), "start")
        piece = hidden_states[:, start:end]
        if input_norm is not None:
            piece = input_norm(piece)
        q, k, v = families.project_qkv(family, attention, piece, with_query)
        del piece
        if q is None:
            k = rope(k, k, cos[:, start:end], sin[:, start:end])[1]
        else:
            q, k = rope(q, k, cos[:, start:end], sin[:, start:end])
        pieces = (q, k, v)
        if buffers is None:
            buffers = [t.new_empty(*t.shape[:2], seq_len, t.shape[-1]) if t is not None else None for t in pieces]
        for buffer, piece in zip(buffers, pieces):
            if buffer is not None:
                buffer[:, :, start:end] = piece
        del q, k, v, pieces
        on_piece("attention", index, len(bounds), "end")
    return buffers


def _attend_function(attention, mask, kwargs) -> Callable:
    """attend(q, k, v, mask) -> [B, q_len, H, hd], the call the family's forward makes."""
    if mask is None and attention.config._attn_implementation == "sdpa":
        return lambda q, k, v, _mask: _sdpa_causal(attention, q, k, v)
    interface, extra = families.attention_function(attention), families.attention_extra_kwargs(attention)

    def attend(q, k, v, mask_rows):
        out, _ = interface(attention, q, k, v, mask_rows, dropout=0.0, scaling=attention.scaling, **extra, **kwargs)
        return out

    return attend


def _sdpa_causal(attention, q, k, v) -> torch.Tensor:
    # q: [B, H, s, hd]; k, v: [B, H_kv, S, hd] -> [B, s, H, hd], transposed lazily (no copy)
    causal = q.shape[-2] > 1
    gqa = q.shape[1] != k.shape[1]
    out = scaled_dot_product_attention(q, k, v, is_causal=causal, scale=attention.scaling, enable_gqa=gqa)
    return out.transpose(1, 2)
