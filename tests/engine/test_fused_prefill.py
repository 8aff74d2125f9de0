"""The fused prefill layer (issue 14): only the residual stream at full length, same values.

Exactness over every family and piece count is in test_parity.py (the fused path is what a
mini-sequence prefill runs now); here: that it runs, that it saves what it should, and that
it stays out of the way where changing a layer's input in place would be visible.
"""

from __future__ import annotations

import torch

import mom
from mom.engine import minisequence, patch
from tests.conftest import assert_close, prompt


def _count_fused(monkeypatch) -> dict:
    calls = {"n": 0}
    real = minisequence.add_in_pieces

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(patch, "add_in_pieces", counting)
    return calls


@torch.no_grad()
def test_a_mini_sequence_prefill_runs_every_layer_fused(tiny_models, monkeypatch):
    model = tiny_models["tiny-qwen3"]
    calls = _count_fused(monkeypatch)
    ids = prompt(length=40)
    expected = model(ids, logits_to_keep=1).logits
    with mom.enable(model, mom.MomConfig(mini_sequences=4, trim_last_layer=False)):
        actual = model(ids, logits_to_keep=1).logits
    assert calls["n"] == model.config.num_hidden_layers
    assert_close(actual, expected, what="fused prefill logits")


@torch.no_grad()
def test_the_fused_prefill_holds_one_hidden_copy_less(tiny_models, monkeypatch):
    model = tiny_models["tiny-llama"]
    config, context = mom.MomConfig(mini_sequences=16), 8192
    fused = mom.profile(model, config, context=context, new_tokens=2)
    monkeypatch.setattr(patch, "_may_update_hidden_states_in_place", lambda *_a: False)
    unfused = mom.profile(model, config, context=context, new_tokens=2)
    hidden_copy = context * model.config.hidden_size * 4  # one [S, D] fp32 tensor
    assert fused.peak_gpu_bytes <= unfused.peak_gpu_bytes - hidden_copy


@torch.no_grad()
def test_embeddings_passed_by_the_caller_are_left_unchanged(tiny_models, monkeypatch):
    model = tiny_models["tiny-llama"]
    calls = _count_fused(monkeypatch)
    embeds = model.model.embed_tokens(prompt(length=40))
    before = embeds.clone()
    expected = model(inputs_embeds=embeds, logits_to_keep=1).logits
    with mom.enable(model, mom.MomConfig(mini_sequences=4)):
        actual = model(inputs_embeds=embeds, logits_to_keep=1).logits
    assert torch.equal(embeds, before) and calls["n"] == 0
    assert_close(actual, expected, what="logits from caller's embeddings")


@torch.no_grad()
def test_collected_hidden_states_are_not_overwritten(tiny_models, monkeypatch):
    model = tiny_models["tiny-phi3"]
    calls = _count_fused(monkeypatch)
    ids = prompt(length=40)
    expected = model(ids, output_hidden_states=True).hidden_states
    with mom.enable(model, mom.MomConfig(mini_sequences=4)):
        actual = model(ids, output_hidden_states=True).hidden_states
    assert calls["n"] == 0
    for index, (a, e) in enumerate(zip(actual, expected)):
        assert_close(a, e, what=f"hidden state {index}")


@torch.no_grad()
def test_a_fused_piece_is_normed_once_not_split_again(tiny_models, monkeypatch):
    model = tiny_models["tiny-llama"]
    norm_class = type(model.model.layers[0].input_layernorm)
    real, lengths = norm_class.forward, []

    def counting(self, x):
        lengths.append(x.shape[-2])
        return real(self, x)

    monkeypatch.setattr(norm_class, "forward", counting)  # before enable, so mom wraps this one
    with mom.enable(model, mom.MomConfig(mini_sequences=4, trim_last_layer=False)):
        model(prompt(length=40), logits_to_keep=1)
    # 3 layers x 2 norms x 4 pieces of 10 tokens (never sub-pieces of 3), and the final norm
    # (not mom's) once over all 40
    assert lengths.count(10) == 24 and sorted(set(lengths)) == [10, 40], lengths
