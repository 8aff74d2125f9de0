"""What enable() really does: pieces run, the last layer trims, decode takes the plain path."""

from __future__ import annotations

import pytest
import torch

import mom
from mom.engine import families
from mom.engine.minisequence import piece_bounds, run_in_pieces
from tests.conftest import prompt


def _input_lengths(module, store):
    return module.register_forward_hook(lambda m, args, out: store.append(args[0].shape[-2]))


def test_piece_bounds_cover_the_sequence_once():
    assert piece_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert piece_bounds(3, 5) == [(0, 3)]


def test_run_in_pieces_writes_every_position():
    x = torch.randn(2, 13, 6)
    weight = torch.randn(6, 9)
    out = run_in_pieces(lambda t: t @ weight, x, piece_size=4)
    torch.testing.assert_close(out, x @ weight)


@torch.no_grad()
def test_mlp_runs_in_pieces_and_decode_takes_the_plain_path(tiny_models):
    model = tiny_models["tiny-llama"]
    seen: list[int] = []
    mlp = families.decoder_layers(model)[0].mlp
    handle_ = _input_lengths(mlp, seen)
    try:
        with mom.enable(model, mom.MomConfig(mini_sequences=4, trim_last_layer=False)):
            model.generate(prompt(length=40), max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=0)
    finally:
        handle_.remove()
    # the hook sees the patched forward's input: the whole prompt once, then one token per step
    assert seen == [40, 1, 1]


@torch.no_grad()
def test_piece_hooks_see_each_piece(tiny_models):
    model = tiny_models["tiny-qwen2"]
    events = []
    with mom.enable(model, mom.MomConfig(mini_sequence_size=16)) as handle:
        handle.piece_hooks.append(lambda *e: events.append(e))
        model(prompt(length=40), logits_to_keep=1)
    layers = model.config.num_hidden_layers
    mlp = [e for e in events if len(e) == 4]
    # 3 MLP pieces (16+16+8) in every layer but the trimmed last one, a start and an end each
    assert len(mlp) == (layers - 1) * 3 * 2
    assert mlp[0] == (0, 0, 3, "start") and mlp[-1] == (layers - 2, 2, 3, "end")
    attention = [e for e in events if len(e) == 5]
    # the q/k/v pass in every layer, the o_proj pass in all but the trimmed last one
    assert sum(e[4] == "attention" for e in attention) == layers * 3 * 2
    assert sum(e[4] == "attention_out" for e in attention) == (layers - 1) * 3 * 2


@torch.no_grad()
def test_last_layer_runs_its_mlp_for_the_last_position_only(tiny_models):
    model = tiny_models["tiny-phi3"]
    last_mlp = families.decoder_layers(model)[-1].mlp
    head_inputs: list[int] = []
    seen: list[int] = []
    hooks = [_input_lengths(last_mlp, seen), _input_lengths(model.lm_head, head_inputs)]
    try:
        with mom.enable(model, mom.MomConfig(trim_last_layer=True)):
            model.generate(prompt(length=30), max_new_tokens=2, min_new_tokens=2, do_sample=False, pad_token_id=0)
            out = model(prompt(length=30))  # all logits asked for: no trim
    finally:
        for h in hooks:
            h.remove()
    assert seen == [1, 1, 30]
    assert head_inputs == [1, 1, 30]
    assert out.logits.shape[1] == 30


@torch.no_grad()
def test_trim_keeps_every_position_in_the_cache(tiny_models):
    model = tiny_models["tiny-qwen3"]
    with mom.enable(model, mom.MomConfig(trim_last_layer=True)):
        out = model(prompt(length=25), logits_to_keep=1, use_cache=True)
    cache = out.past_key_values if hasattr(out, "past_key_values") else out.cache
    assert cache.get_seq_length() == 25
    for layer in range(model.config.num_hidden_layers):
        assert cache.layers[layer].keys.shape[-2] == 25


@torch.no_grad()
def test_no_trim_when_hidden_states_are_asked_for(tiny_models):
    model = tiny_models["tiny-llama"]
    ids = prompt(length=20)
    expected = model(ids, logits_to_keep=1, output_hidden_states=True).hidden_states
    with mom.enable(model, mom.MomConfig(mini_sequences=3)):
        actual = model(ids, logits_to_keep=1, output_hidden_states=True).hidden_states
    assert [h.shape for h in actual] == [h.shape for h in expected]


def test_kv_bytes_per_token_llama_3_1_8b():
    model = mom.load("llama-3.1-8b", device="meta", dtype=torch.bfloat16)
    assert families.kv_bytes_per_token(model) == 128 * 1024


def test_sliding_window_warns_only_when_the_mask_would_be_dense(tiny_models, monkeypatch):
    from mom.engine import patch

    model = tiny_models["tiny-mistral"]  # window 24
    monkeypatch.setattr(patch, "MASK_WARN_BYTES", 1)
    with mom.enable(model, mom.MomConfig(mini_sequences=2)):
        with pytest.warns(UserWarning, match="flash_attention_2"):
            model(prompt(length=30), logits_to_keep=1)
    import warnings

    with mom.enable(model, mom.MomConfig(mini_sequences=2)), warnings.catch_warnings():
        warnings.simplefilter("error")
        model(prompt(length=20), logits_to_keep=1)  # window exceeds the prompt: no mask, no warning


def test_window_longer_than_prompt_keeps_sdpa_mask_free(tiny_models):
    """Hugging Face's causal fast path (no dense mask) survives mom when the window exceeds the prompt."""
    model = tiny_models["tiny-mistral"]
    masks = []
    hooks = [layer.register_forward_pre_hook(lambda m, a, kw: masks.append(kw.get("attention_mask")), with_kwargs=True)
             for layer in families.decoder_layers(model)]
    try:
        with torch.no_grad(), mom.enable(model, mom.MomConfig(mini_sequences=2)):
            model(prompt(length=20), logits_to_keep=1)
            assert masks and all(m is None for m in masks)
            masks.clear()
            model(prompt(length=30), logits_to_keep=1)  # window 24 < 30: a real mask is needed
            assert masks and all(m is not None for m in masks)
    finally:
        for hook in hooks:
            hook.remove()


@torch.no_grad()
def test_attention_runs_in_pieces_and_the_trimmed_layer_queries_once(tiny_models):
    model = tiny_models["tiny-qwen3"]
    layers = families.decoder_layers(model)
    first, last = [], []
    hooks = [_input_lengths(layers[0].self_attn.o_proj, first), _input_lengths(layers[-1].self_attn.o_proj, last)]
    try:
        with mom.enable(model, mom.MomConfig(mini_sequences=4)):
            model(prompt(length=40), logits_to_keep=1)
    finally:
        for hook in hooks:
            hook.remove()
    assert first == [10, 10, 10, 10]  # o_proj sees one piece of queries at a time
    assert last == [1]  # the trimmed last layer computes the last query only
