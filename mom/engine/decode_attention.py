"""Decode steps run sdpa without its cuDNN backend.

Why: on Hopper and Blackwell datacenter cards with a recent cuDNN, torch's sdpa tries cuDNN
first, and cuDNN builds an execution plan for every new problem, keyed among other things by the
key length (aten/src/ATen/native/cudnn/MHA.cpp, `MHAParams`). Decode changes the key length at
every step, so every step at a length the process has not decoded before pays for a plan. On an
H100 that was 27-37 ms more per step: `hf` decoded at 54-65 ms/token on new lengths and 26-28
ms on lengths it had decoded before, `mom-eager` likewise (benchmarks/results/
2026-12-07_h100_decode_split_{a,b}.json; benchmarks/NOTES.md, fourth session). A user's
generate() always decodes new lengths. Flash attention (no mask) and memory-efficient
attention (a padding mask) read the same K/V with no plan to build. Prefill builds one plan per
prompt length, nothing beside its seconds of compute, so it keeps sdpa's own order.

Only the cuDNN flag moves, only during a decode step of a mom config (not the `MomConfig()`
baseline), and only for a model on a GPU: the other backends stay as the caller set them (inside `torch.nn.attention.sdpa_kernel`, say). The
flag is process-wide, so concurrent decode steps share one switch, counted under a lock: the
first to enter saves the caller's setting, the last to leave puts it back.
"""

from __future__ import annotations

import contextlib
import threading

import torch

_LOCK = threading.Lock()
_state = {"depth": 0, "saved": True}


@contextlib.contextmanager
def without_cudnn_sdpa():
    """sdpa without the cuDNN backend inside the block; the caller's setting comes back after."""
    with _LOCK:
        if _state["depth"] == 0:
            _state["saved"] = torch.backends.cuda.cudnn_sdp_enabled()
            torch.backends.cuda.enable_cudnn_sdp(False)
        _state["depth"] += 1
    try:
        yield
    finally:
        with _LOCK:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                torch.backends.cuda.enable_cudnn_sdp(_state["saved"])


def for_step(seq_len: int, applies: bool):
    """The context a forward call of `seq_len` new tokens runs in: without cuDNN's sdpa for a
    decode step where `applies` (a mom config on a GPU model; `MomConfig()` stays plain
    transformers), else nothing."""
    return without_cudnn_sdpa() if seq_len == 1 and applies else contextlib.nullcontext()
