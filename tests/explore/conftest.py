"""Fixtures of the explore tests: one tiny model and two of its real runs, shared per session."""

from __future__ import annotations

import pytest

import mom
from mom.memory.profile import profile

CONTEXT = 1024


@pytest.fixture(scope="session")
def tiny_llama():
    return mom.load("tiny-llama", device="cpu")


@pytest.fixture(scope="session")
def real_runs(tiny_llama):
    """(baseline, mom) Profiles of tiny-llama at 1024 tokens, 3 new tokens, measured by the tracker."""
    base = profile(tiny_llama, mom.MomConfig(), CONTEXT, new_tokens=3)
    run = profile(tiny_llama, mom.MomConfig(mini_sequences=4, offload="stream"), CONTEXT, new_tokens=3)
    return base, run
