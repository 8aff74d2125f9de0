"""Running a token-wise block over the prompt in mini-sequences, into one output buffer.

A token-wise block (the MLP) maps each position independently, so running it over pieces of
the sequence and writing each piece's output into one preallocated buffer computes the same
function while holding the block's intermediates (3 x S x I for a gated MLP) for one piece
only. The output buffer is allocated once, after the first piece tells its dtype and width.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

import torch

PieceListener = Callable[[int, int, str], None]  # (piece index, piece count, "start" | "end")

# The simulator's seam (mom/simulate/seams.py, searches only): on tensors without data every full
# piece of a loop issues the same ops on the same shapes and leaves the allocator as it found it,
# so a maximum-context search may run a sample of the pieces. Never set around real tensors.
PIECE_SAMPLE: ContextVar[Callable[[list], list] | None] = ContextVar("mom_piece_sample", default=None)


def piece_bounds(seq_len: int, piece_size: int) -> list[tuple[int, int]]:
    """[start, end) of each piece; the last one may be shorter."""
    bounds = [(start, min(start + piece_size, seq_len)) for start in range(0, seq_len, piece_size)]
    sample = PIECE_SAMPLE.get()
    return bounds if sample is None else sample(bounds)


def run_in_pieces(
    block: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    piece_size: int,
    on_piece: PieceListener | None = None,
) -> torch.Tensor:
    """Apply `block` to `x` piece by piece along the sequence dimension.

    Args:
        block: token-wise function, [..., s, D] -> [..., s, D_out].
        x: [B, S, D].
        piece_size: tokens per piece; S <= piece_size runs `block` once, untouched.
        on_piece: called before and after each piece (memory hooks use it).

    Returns:
        [B, S, D_out], equal to block(x).
    """
    seq_len = x.shape[-2]
    if seq_len <= piece_size:
        return block(x)
    bounds = piece_bounds(seq_len, piece_size)
    out = None
    for index, (start, end) in enumerate(bounds):
        if on_piece is not None:
            on_piece(index, len(bounds), "start")
        piece = block(x[..., start:end, :])
        if out is None:
            out = piece.new_empty(*x.shape[:-1], piece.shape[-1])
        out[..., start:end, :] = piece
        del piece
        if on_piece is not None:
            on_piece(index, len(bounds), "end")
    return out


def add_in_pieces(
    block: Callable[[torch.Tensor], torch.Tensor],
    norm: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    piece_size: int,
    on_piece: PieceListener | None = None,
) -> torch.Tensor:
    """x += block(norm(x)), piece by piece and in place: a pre-norm residual sub-block.

    Only `x` exists at full length; the norm's output and the block's intermediates exist for
    one piece at a time. The same elementwise add as `x + block(norm(x))`, so the same values.
    x: [B, S, D] (overwritten and returned).
    """
    bounds = piece_bounds(x.shape[-2], piece_size)
    for index, (start, end) in enumerate(bounds):
        if on_piece is not None:
            on_piece(index, len(bounds), "start")
        piece = x[..., start:end, :]
        piece += block(norm(piece))
        if on_piece is not None:
            on_piece(index, len(bounds), "end")
    return x
