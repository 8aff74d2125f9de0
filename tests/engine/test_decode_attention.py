"""Decode steps leave sdpa's cuDNN backend out (engine/decode_attention.py): only during a decode
step of a mom config on a GPU model, with the caller's setting put back, across threads too.

Without a GPU the switch is exercised by turning it on for a CPU model's handle: sdpa on a CPU
ignores the cuDNN flag, so the function computed is the same, and the flag seen at each layer's
query projection (right before its attention) shows which steps ran without it."""

from __future__ import annotations

import threading

import pytest
import torch

import mom
from mom.engine import decode_attention
from mom.engine.patch import handle_of
from tests.conftest import prompt


@pytest.fixture
def cudnn_on():
    before = torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(True)
    yield
    torch.backends.cuda.enable_cudnn_sdp(before)


def test_the_callers_setting_comes_back(cudnn_on):
    with decode_attention.without_cudnn_sdpa():
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        with decode_attention.without_cudnn_sdpa():
            assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert not torch.backends.cuda.cudnn_sdp_enabled()
    assert torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(False)
    with decode_attention.without_cudnn_sdpa():
        pass
    assert not torch.backends.cuda.cudnn_sdp_enabled(), "a caller's False must stay False"


def test_an_exception_inside_still_restores(cudnn_on):
    with pytest.raises(RuntimeError), decode_attention.without_cudnn_sdpa():
        raise RuntimeError("out of memory")
    assert torch.backends.cuda.cudnn_sdp_enabled()


def test_overlapping_threads_leave_the_flag_as_they_found_it(cudnn_on):
    inside, leave = threading.Barrier(2), threading.Event()

    def step(first: bool):
        with decode_attention.without_cudnn_sdpa():
            inside.wait()
            if first:
                leave.wait()
            else:
                leave.set()

    threads = [threading.Thread(target=step, args=(i == 0,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert torch.backends.cuda.cudnn_sdp_enabled()


def test_only_decode_steps_that_apply_switch(cudnn_on):
    for seq_len, applies, expected in [(1, True, False), (7, True, True), (1, False, True)]:
        with decode_attention.for_step(seq_len, applies):
            assert torch.backends.cuda.cudnn_sdp_enabled() is expected, (seq_len, applies)


def _flags_seen_by_attention(model, ids, config, force: bool) -> tuple[list[tuple[int, bool]], torch.Tensor]:
    """(new tokens of the model call, cuDNN flag) at each call of every layer's query projection,
    which prefill (whole, in pieces or trimmed) and decode call right before their attention;
    and generate()'s tokens."""
    seen, call = [], {}

    def model_call(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        call["tokens"] = ids.shape[-1]

    hooks = [model.register_forward_pre_hook(model_call, with_kwargs=True)]
    hooks += [layer.self_attn.q_proj.register_forward_pre_hook(
        lambda _module, args: seen.append((call["tokens"], torch.backends.cuda.cudnn_sdp_enabled())))
        for layer in model.model.layers]
    try:
        with mom.enable(model, config) as handle:
            if force:
                handle.decode_without_cudnn = True  # as on a GPU model
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, min_new_tokens=4,
                                 do_sample=False, pad_token_id=0)
    finally:
        for hook in hooks:
            hook.remove()
    assert handle_of(model) is None
    return seen, out


@pytest.mark.parametrize("config", [mom.MomConfig(mini_sequences=4), mom.MomConfig(offload="auto")],
                         ids=["mini-sequences", "offload-auto"])
def test_generate_decodes_without_cudnn_and_computes_the_same(tiny_models, cudnn_on, config):
    model = tiny_models["tiny-llama"]
    ids = prompt(length=48)
    expected = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, min_new_tokens=4,
                              do_sample=False, pad_token_id=0)
    seen, out = _flags_seen_by_attention(model, ids, config, force=True)
    assert torch.equal(out, expected)
    decode = [flag for q_len, flag in seen if q_len == 1]
    prefill = [flag for q_len, flag in seen if q_len > 1]
    assert decode and not any(decode), "every decode step's attention ran without cuDNN"
    assert prefill and all(prefill), "prefill keeps sdpa's own order"
    assert torch.backends.cuda.cudnn_sdp_enabled()


def test_the_baseline_config_and_cpu_models_keep_cudnn(tiny_models, cudnn_on):
    model = tiny_models["tiny-llama"]
    ids = prompt(length=32)
    for config in (mom.MomConfig(), mom.MomConfig(mini_sequences=4)):
        with mom.enable(model, config) as handle:
            assert handle.decode_without_cudnn is False  # MomConfig() is plain transformers; a CPU model has no cuDNN
    seen, _ = _flags_seen_by_attention(model, ids, mom.MomConfig(mini_sequences=4), force=False)
    assert seen and all(flag for _, flag in seen)


@pytest.mark.gpu
def test_a_gpu_model_decodes_without_cudnn_and_matches_the_unpatched_tokens():
    """On a GPU the switch is on for a mom config; fp32 greedy tokens stay those of the unpatched model."""
    model = mom.load("tiny-llama", device="cuda", dtype=torch.float32)
    ids = prompt(length=300).cuda()
    expected = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, min_new_tokens=4,
                              do_sample=False, pad_token_id=0)
    before = torch.backends.cuda.cudnn_sdp_enabled()
    seen, out = _flags_seen_by_attention(model, ids, mom.MomConfig(mini_sequences=4, offload="auto"), force=False)
    assert torch.equal(out, expected)
    assert not any(flag for tokens, flag in seen if tokens == 1)
    assert torch.backends.cuda.cudnn_sdp_enabled() is before
