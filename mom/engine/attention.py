"""Attention over mini-sequences: the attention-side transients of prefill, cut to one piece.

With the MLP in pieces, prefill still holds about 59 KiB per token of attention-side tensors
on Llama-3.1-8B (full q, RoPE temporaries, the attention output and its transposed copy, the
o_proj input and output). Causality makes pieces exact: the queries of piece [s, e) only see
keys [0, e), which are all computed by then. So one pass over the pieces computes q, k, v of
the piece, writes k, v into the layer's full K/V buffers (they go to the cache anyway), runs
attention of the piece's queries against keys [0, e) and writes o_proj of the result into the
output. Only K/V and the output span the whole prompt.

Causal alignment of a piece is bottom-right (query i of [s, e) sees keys <= s + i): sdpa gets
`causal_lower_right`, flash attention aligns that way by itself, and a mask built by
transformers (padding, sliding window, eager) is sliced to the piece's rows.

Used for a fresh prefill (empty cache for this layer) without gradients; anything else takes
the family's own forward. When only the last position is wanted (trim), only the last query
row is computed, after every key and value.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch.nn.attention.bias import causal_lower_right
from torch.nn.functional import scaled_dot_product_attention

from . import families
from .minisequence import piece_bounds


def attention_piece_size(piece_size: int) -> int:
    """Query pieces are at least this long: short pieces starve flash attention (measured)."""
    return max(piece_size, int(os.environ.get("MOM_MIN_ATTENTION_PIECE", "1")))


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
    **kwargs,
):
    """The family's attention forward, exact, over pieces of `piece_size` tokens.

    hidden_states: [B, S, D] (already normed) -> ([B, S, D] or [B, 1, D], None).
    """
    cos, sin = kwargs.pop("position_embeddings")
    mask = kwargs.pop("attention_mask", None)
    cache = families.cache_argument(kwargs)
    for name in families.CACHE_KEYWORDS:
        kwargs.pop(name, None)
    rope, attend = families.rotary(attention), _attend_function(attention, mask)
    batch, seq_len, _ = hidden_states.shape
    piece_size = attention_piece_size(piece_size)
    keys = values = output = None
    for start, end in piece_bounds(seq_len, piece_size):
        x = hidden_states[:, start:end]
        q, k, v = families.project_qkv(family, attention, x, with_query=not last_position_only)
        if q is None:
            k = rope(k, k, cos[:, start:end], sin[:, start:end])[1]
        else:
            q, k = rope(q, k, cos[:, start:end], sin[:, start:end])
        if keys is None:  # [B, H_kv, S, hd]
            keys = k.new_empty(*k.shape[:2], seq_len, k.shape[-1])
            values = v.new_empty(*v.shape[:2], seq_len, v.shape[-1])
        keys[:, :, start:end], values[:, :, start:end] = k, v
        del k, v
        if q is None:
            continue
        piece_out = attend(q, keys[:, :, :end], values[:, :, :end], _rows(mask, start, end, end), kwargs)
        del q
        projected = attention.o_proj(piece_out.reshape(batch, end - start, -1))
        if output is None:
            output = projected.new_empty(batch, seq_len, projected.shape[-1])
        output[:, start:end] = projected
    if cache is not None:
        keys, values = cache.update(keys, values, attention.layer_idx)
    if last_position_only:
        output = _last_position(family, attention, hidden_states, keys, values, cos, sin, mask, attend, kwargs)
    return output, None


def _last_position(family, attention, hidden_states, keys, values, cos, sin, mask, attend, kwargs):
    q, _, _ = families.project_qkv(family, attention, hidden_states[:, -1:])
    q = families.rotary(attention)(q, q, cos[:, -1:], sin[:, -1:])[0]
    seq_len = keys.shape[-2]
    out = attend(q, keys, values, _rows(mask, seq_len - 1, seq_len, seq_len), kwargs)
    return attention.o_proj(out.reshape(hidden_states.shape[0], 1, -1))


def _rows(mask: torch.Tensor | None, start: int, end: int, kv_end: int) -> torch.Tensor | None:
    # a transformers mask is [B, 1, q, kv] with kv = cached + new tokens (cache empty here)
    return None if mask is None else mask[:, :, start:end, :kv_end]


def _attend_function(attention, mask) -> Callable:
    """attend(q, k, v, mask rows, kwargs) -> [B, q_len, H, hd] for one piece of queries."""
    implementation = attention.config._attn_implementation
    if mask is None and implementation == "sdpa":
        return lambda q, k, v, _mask, _kwargs: _sdpa_lower_right(attention, q, k, v)
    interface, extra = families.attention_function(attention), families.attention_extra_kwargs(attention)

    def attend(q, k, v, mask_rows, kwargs):
        out, _ = interface(attention, q, k, v, mask_rows, dropout=0.0, scaling=attention.scaling, **extra, **kwargs)
        return out

    return attend


def _sdpa_lower_right(attention, q, k, v) -> torch.Tensor:
    # q: [B, H, s, hd]; k, v: [B, H_kv, e, hd] -> [B, s, H, hd] as transformers' sdpa returns it
    q_len, kv_len = q.shape[-2], k.shape[-2]
    gqa = q.shape[1] != k.shape[1]
    if q_len == kv_len:
        out = scaled_dot_product_attention(q, k, v, is_causal=True, scale=attention.scaling, enable_gqa=gqa)
    elif q_len == 1:
        out = scaled_dot_product_attention(q, k, v, scale=attention.scaling, enable_gqa=gqa)
    else:
        bias = causal_lower_right(q_len, kv_len)
        out = scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=attention.scaling, enable_gqa=gqa)
    return out.transpose(1, 2)
