"""The exactness yardsticks (mom/exactness.py) on CPU: they pass for mom and fail when error grows."""

from __future__ import annotations

import copy

import pytest
import torch

import mom
from mom.exactness import (
    bf16_verdict,
    configs_under_test,
    fp32_mismatch,
    greedy_continuation,
    teacher_forced_logits,
)
from tests.conftest import prompt


@pytest.fixture(scope="module")
def bf16_pair():
    low = mom.load("tiny-llama", device="cpu", dtype=torch.bfloat16)
    return low, copy.deepcopy(low).float()


@pytest.fixture(scope="module")
def forced(bf16_pair):
    low, high = bf16_pair
    ids = prompt(length=48, seed=11)
    continuation = greedy_continuation(high, ids, 12)
    reference = teacher_forced_logits(high, ids, continuation)
    baseline = teacher_forced_logits(low, ids, continuation)
    return ids, continuation, reference, baseline


@pytest.mark.parametrize("config", list(configs_under_test()), ids=lambda c: c.describe())
def test_mom_in_bf16_errs_no_more_than_the_baseline(bf16_pair, forced, config):
    low, _ = bf16_pair
    ids, continuation, reference, baseline = forced
    with mom.enable(low, config):
        actual = teacher_forced_logits(low, ids, continuation)
    verdict = bf16_verdict(reference, baseline, actual)
    assert verdict.passed, verdict.summary()


def test_the_bf16_criterion_fails_when_the_error_grows(forced):
    _, _, reference, baseline = forced
    worst = max((b - r).abs().max().item() for b, r in zip(baseline, reference))
    noisy = baseline.clone()
    noisy[5, 0, 7] += 3 * worst + 1.0  # one step, one logit, clearly worse than bf16 rounding
    verdict = bf16_verdict(reference, baseline, noisy)
    assert not verdict.passed and verdict.failing_steps == [5]


def test_fp32_identity_catches_a_small_logit_change(bf16_pair):
    _, high = bf16_pair
    ids = prompt(length=40, seed=2)
    continuation = greedy_continuation(high, ids, 6)
    expected = teacher_forced_logits(high, ids, continuation)
    with mom.enable(high, mom.MomConfig(mini_sequences=3, offload="auto")):
        actual = teacher_forced_logits(high, ids, continuation)
    assert fp32_mismatch(actual, expected) is None
    nudged = actual.clone()
    nudged[3] *= 1 + 1e-4
    assert "step 3" in fp32_mismatch(nudged, expected)
