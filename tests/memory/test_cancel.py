"""A Stop button: a Cancel token ends a run between hooked calls and leaves the model exact."""

from __future__ import annotations

import threading

import pytest
import torch

import mom
from mom.engine.patch import handle_of
from mom.memory import Cancel, RunCancelled
from mom.memory.profile import find_max_context, profile
from tests.conftest import assert_close, prompt


@pytest.fixture
def llama(tiny_models):
    return tiny_models["tiny-llama"]


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(prompt(length=24)).logits


def test_a_token_raises_once_cancelled_and_can_be_reused():
    token = Cancel()
    token.check()
    assert not token.cancelled
    token.cancel()
    with pytest.raises(RunCancelled):
        token.check()
    token.reset()
    token.check()


def _cancel_at(token: Cancel, layer: int, step: int):
    """A listener that presses Stop when a given layer of a given decode step ends."""
    def listener(event):
        if event.module == "layer" and event.layer == layer and event.step == step:
            token.cancel()
    return listener


@pytest.mark.parametrize("offload", ["none", "stream"])
def test_a_cancelled_run_is_a_result_and_the_model_is_exact(llama, offload):
    reference, hooks = _logits(llama), _hooks(llama)
    token = Cancel()
    config = mom.MomConfig(mini_sequences=2, offload=offload)
    p = profile(llama, config, context=256, new_tokens=8, cancel=token, listeners=[_cancel_at(token, 0, 2)])
    assert p.cancelled and not p.oom and p.error and "cancel" in p.error
    last = p.events[-1]
    assert (last.phase, last.step) == ("decode", 2) and last.layer in (0, None)  # stopped at the next hooked call
    assert not any(e.phase == "decode" and e.step > 2 for e in p.events)
    assert handle_of(llama) is None and _hooks(llama) == hooks
    assert_close(_logits(llama), reference, rtol=0, what="logits after a cancelled run")


def test_cancel_from_another_thread_stops_a_run_in_a_background_thread(llama):
    token, started, results = Cancel(), threading.Event(), []

    def on_event(event):
        started.set()
        if token.cancelled:  # keep the run going until the Stop arrives
            return

    def run():
        results.append(profile(llama, mom.MomConfig(mini_sequences=2), context=128, new_tokens=10_000,
                               cancel=token, listeners=[on_event]))

    worker = threading.Thread(target=run)
    worker.start()
    assert started.wait(60)
    token.cancel()
    worker.join(60)
    assert not worker.is_alive() and results[0].cancelled
    assert results[0].events[-1].step < 10_000 - 1


def test_record_false_is_cancellable_too(llama):
    token = Cancel()
    token.cancel()
    p = profile(llama, mom.MomConfig(), context=64, new_tokens=2, record=False, cancel=token)
    assert p.cancelled and p.ttft_s is None and p.events == []


def test_a_cancelled_search_stops_and_says_so(llama):
    token, seen = Cancel(), []

    def on_try(run):
        seen.append(run.context)
        if len(seen) == 2:
            token.cancel()

    result = find_max_context(llama, mom.MomConfig(), new_tokens=1, resolution=64, high=1024,
                              progress=False, record=False, cancel=token, on_try=on_try)
    assert result.cancelled and len(result.tries) == 3 and result.tries[-1].cancelled
    assert result.maximum == 128 and not result.limit_reached
    assert seen == [p.context for p in result.tries]
