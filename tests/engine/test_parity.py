"""Exactness: every mom transformation computes the unpatched model's function (fp32, CPU).

Three levels, after Liger-Kernel: last-position logits, full logits, greedy token ids.
"""

from __future__ import annotations

import pytest
import torch

import mom
from tests.conftest import assert_close, prompt

SEQ = 40
CONFIGS = [
    mom.MomConfig(mini_sequences=1),
    mom.MomConfig(mini_sequences=2),
    mom.MomConfig(mini_sequences=3),
    mom.MomConfig(mini_sequences=7),
    mom.MomConfig(mini_sequences=SEQ),
    mom.MomConfig(mini_sequences=SEQ + 13),
    mom.MomConfig(mini_sequence_size=8),  # divides SEQ
    mom.MomConfig(mini_sequence_size=11),  # does not
    mom.MomConfig(trim_last_layer=True),
    mom.MomConfig(mini_sequences=3, trim_last_layer=False),
]


def _generate(model, ids, **kwargs):
    kwargs.setdefault("max_new_tokens", 32)
    return model.generate(ids, do_sample=False, min_new_tokens=kwargs["max_new_tokens"], pad_token_id=0, **kwargs)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.describe())
@torch.no_grad()
def test_last_position_logits_and_greedy_tokens(tiny_model, cfg):
    ids = prompt(length=SEQ)
    expected_logits = tiny_model(ids, logits_to_keep=1).logits
    expected_tokens = _generate(tiny_model, ids)
    with mom.enable(tiny_model, cfg):
        logits = tiny_model(ids, logits_to_keep=1).logits
        tokens = _generate(tiny_model, ids)
    assert_close(logits, expected_logits, 1e-5, f"{tiny_model.config.model_type} {cfg.describe()} logits")
    assert torch.equal(tokens, expected_tokens)


@pytest.mark.parametrize("cfg", [mom.MomConfig(mini_sequences=3), mom.MomConfig(mini_sequence_size=11)],
                         ids=lambda c: c.describe())
@torch.no_grad()
def test_all_logits_when_all_are_asked_for(tiny_model, cfg):
    ids = prompt(batch=2, length=SEQ, seed=3)
    expected = tiny_model(ids).logits
    with mom.enable(tiny_model, cfg):
        actual = tiny_model(ids).logits
    assert actual.shape == (2, SEQ, tiny_model.config.vocab_size)
    assert_close(actual, expected, 1e-5, "all logits")


@torch.no_grad()
def test_batch_two_with_left_padding(tiny_model):
    ids = prompt(batch=2, length=SEQ, seed=5)
    mask = torch.ones_like(ids)
    ids[1, :9] = 0
    mask[1, :9] = 0
    expected = _generate(tiny_model, ids, attention_mask=mask)
    expected_logits = tiny_model(ids, attention_mask=mask, logits_to_keep=1).logits
    with mom.enable(tiny_model, mom.MomConfig(mini_sequences=3)):
        actual = _generate(tiny_model, ids, attention_mask=mask)
        logits = tiny_model(ids, attention_mask=mask, logits_to_keep=1).logits
    assert torch.equal(actual, expected)
    assert_close(logits, expected_logits, 1e-5, "padded batch logits")


@torch.no_grad()
def test_sampling_matches_with_the_same_seed(tiny_model):
    ids = prompt(length=SEQ, seed=7)
    torch.manual_seed(11)
    expected = tiny_model.generate(ids, do_sample=True, top_k=50, max_new_tokens=16, min_new_tokens=16, pad_token_id=0)
    with mom.enable(tiny_model, mom.MomConfig(mini_sequences=4)):
        torch.manual_seed(11)
        actual = tiny_model.generate(ids, do_sample=True, top_k=50, max_new_tokens=16, min_new_tokens=16, pad_token_id=0)
    assert torch.equal(actual, expected)
