"""engine/placement.py: what "auto" sets aside before prefill, checked on the real engine code run
on fake tensors (mom.predict) at the size where it matters: an 8B model on an H100 at ~1M tokens."""

import pytest
import torch

import mom
from mom import MomConfig
from mom.engine import placement
from mom.simulate.fake import model_config

HOST = 125 << 30  # the H100 machine's host RAM


def test_a_fixed_piece_count_reserves_its_pieces_intermediates():
    config, _ = model_config("llama-3.1-8b")

    def transient(piece):
        return placement.prefill_transient_bytes(config, torch.bfloat16, 1, 1_097_728, piece)

    per_piece_token = 3 * config.intermediate_size + 2 * config.hidden_size
    assert transient(68_608) - transient(4096) == (68_608 - 4096) * per_piece_token * 2
    assert transient(2_000_000) == transient(1_097_728)  # a piece is never longer than the prompt


@pytest.mark.parametrize("context", [1_081_344, 1_097_728])
def test_auto_with_16_pieces_never_runs_prefill_out_of_gpu_memory(context):
    """16 pieces of ~68k tokens: each piece's MLP intermediates (5.5 GiB) strand blocks the next
    full-length tensor cannot use. Without the piece term "auto" kept a layer too many on the card
    and prefill ran out of GPU memory at 1,097,728 (predicted) while 1,089,536 and 1,114,112
    passed. Now the longer prompt passes or is refused by the host-RAM rule before anything runs."""
    prediction = mom.predict("llama-3.1-8b", MomConfig(mini_sequences=16, offload="auto"), context=context,
                             gpu="H100-80GB", host_bytes=HOST)
    if context == 1_081_344:
        assert not prediction.oom, prediction.error
    else:
        assert prediction.oom_kind != "device", prediction.error
