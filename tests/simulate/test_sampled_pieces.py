"""A search's predictions run a sample of each mini-sequence loop's pieces (the first three and
the last: mom.simulate.seams.sample_pieces): the same peaks, allocator reserve, OOM verdict and
speed as with every piece, and the engine's piece loops untouched outside them."""

from __future__ import annotations

import pytest

import mom
from mom.engine.minisequence import PIECE_SAMPLE, piece_bounds
from mom.simulate.seams import sample_pieces

C = 4096
CASES = [  # (model, config, context, gpu, gpus): every offload mode, a fused prefill, an OOM, two cards
    ("llama-3.1-8b", mom.MomConfig(mini_sequence_size=C, offload="auto"), 98_304, "H100-80GB", None),
    ("llama-3.1-8b", mom.MomConfig(mini_sequence_size=C, offload="stream"), 81_920, "H100-80GB", None),
    ("llama-3.1-8b", mom.MomConfig(mini_sequences=16, offload="prefill"), 65_536, "H100-80GB", None),
    ("qwen2.5-7b", mom.MomConfig(mini_sequence_size=C), 73_728, "custom-20GiB", None),  # runs out
    ("mistral-nemo-12b", mom.MomConfig(mini_sequence_size=C, offload="auto"), 49_152, "L40S-48GB", None),
    ("qwen3-8b", mom.MomConfig(mini_sequence_size=C, offload="auto"), 57_344, "RTX-4090-24GB", 2),
]


@pytest.mark.parametrize("model,config,context,gpu,gpus", CASES, ids=lambda v: v if isinstance(v, str) else None)
def test_a_sampled_prediction_answers_as_every_piece_does(model, config, context, gpu, gpus):
    full = mom.predict(model, config, context=context, gpu=gpu, gpus=gpus, host_bytes=64 << 30)
    fast = mom.predict(model, config, context=context, gpu=gpu, gpus=gpus, host_bytes=64 << 30, every_piece=False)
    assert context // C > 4  # the loops have pieces to leave out
    assert fast.pieces_sampled and not full.pieces_sampled
    for name in ("oom", "oom_kind", "peak_gpu_bytes", "peak_reserved_bytes", "prefill_peak_bytes", "peak_host_bytes",
                 "peak_by_device", "ttft_s", "decode_tokens_per_s", "decode_path"):
        assert getattr(fast, name) == getattr(full, name), name
    pieces = [e for e in full.events if e.piece is not None]
    sampled = [e for e in fast.events if e.piece is not None]
    assert 0 < len(sampled) < len(pieces)


def test_the_sample_is_the_first_three_pieces_and_the_last():
    bounds = piece_bounds(10 * C + 5, C)
    assert sample_pieces(bounds) == [bounds[0], bounds[1], bounds[2], bounds[-1]] and bounds[-1][1] - bounds[-1][0] == 5
    assert sample_pieces(bounds[:4]) == bounds[:4]


def test_the_engine_runs_every_piece_outside_a_sampled_prediction():
    """The seam is a context variable, set only inside predict(every_piece=False), and reset after
    it, also when it fails."""
    mom.predict("llama-3.1-8b", mom.MomConfig(mini_sequence_size=C), context=40_960, every_piece=False)
    assert PIECE_SAMPLE.get() is None and len(piece_bounds(40_960, C)) == 10

    def fails(event):
        if event.piece == 1:
            raise RuntimeError("a listener failing mid-prefill")

    with pytest.raises(RuntimeError, match="mid-prefill"):
        mom.predict("llama-3.1-8b", mom.MomConfig(mini_sequence_size=C), context=40_960, every_piece=False,
                    listeners=(fails,))
    assert PIECE_SAMPLE.get() is None


def test_searches_and_plans_sample_and_a_prediction_to_draw_does_not():
    from mom.simulate import find_max_context

    result = find_max_context("llama-3.2-1b", mom.MomConfig(mini_sequence_size=C), gpu="custom-8GiB",
                              resolution=C, high=16 * C)
    assert result.tries and all(t.pieces_sampled for t in result.tries)
    assert not mom.predict("llama-3.2-1b", mom.MomConfig(mini_sequence_size=C), context=16 * C).pieces_sampled
