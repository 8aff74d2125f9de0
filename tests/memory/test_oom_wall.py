"""The OOM wall is drawn: the failing attempt is an event at the module where it failed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import mom
from mom.engine import families
from mom.memory.events import MiB
from mom.memory.probes import TensorTracker
from mom.memory.profile import find_max_context, profile, weight_bytes


@pytest.fixture
def llama(tiny_models):
    return tiny_models["tiny-llama"]


def test_the_failing_allocation_is_an_oom_event_at_its_layer(llama):
    limit = weight_bytes(llama) + 3 * MiB
    seen = []
    p = profile(llama, mom.MomConfig(), context=1024, new_tokens=2,
                probe=TensorTracker(llama, limit_bytes=limit), listeners=[seen.append])
    assert p.oom and p.oom_kind == "device"
    walls = [e for e in p.events if e.kind == "oom"]
    assert len(walls) == 1 and seen[-1] is walls[0]  # listeners see it too, as it happens
    wall = walls[0]
    assert wall.requested_bytes > 0 and wall.bytes_after <= limit < wall.bytes_after + wall.requested_bytes
    assert wall.attempted_bytes == wall.bytes_after + wall.requested_bytes
    assert wall.layer is not None and wall.module in ("attention", "mlp", "layer", "attention_piece", "mlp_piece")
    finished = {e.layer for e in p.events if e.kind == "call" and e.module == "layer"}
    assert wall.layer not in finished and all(layer < wall.layer for layer in finished)
    assert all(e.kind == "call" for e in p.events[:-1])


def test_a_cuda_style_oom_is_parsed_for_the_request(llama):
    def out_of_memory(*_):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a total capacity ...")

    tracker = TensorTracker(llama)
    hook = families.decoder_layers(llama)[1].mlp.register_forward_pre_hook(out_of_memory)
    try:
        p = profile(llama, mom.MomConfig(), context=128, new_tokens=2, probe=tracker)
    finally:
        hook.remove()
    wall = p.events[-1]
    assert p.oom and wall.kind == "oom" and (wall.layer, wall.module) == (1, "layer")
    assert wall.requested_bytes == int(2.5 * (1 << 30)) and wall.bytes_after >= tracker.weights_bytes


def _host_ram(monkeypatch, available: int) -> None:
    """Pretend the host has `available` bytes of free RAM (the host-RAM guard asks psutil)."""
    import psutil

    fake = SimpleNamespace(available=available, total=available, percent=0.0, used=0, free=available)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: fake)


def test_the_host_wall_is_a_result_with_its_own_kind(llama, monkeypatch):
    # enough for the prompt and its K/V (the argument checks), not for the guard's growth margin
    _host_ram(monkeypatch, 300 * families.kv_bytes_per_token(llama))
    p = profile(llama, mom.MomConfig(offload="stream"), context=128, new_tokens=1)
    assert p.oom and p.oom_kind == "host" and "host RAM" in p.error
    assert not any(e.kind == "oom" for e in p.events)  # the device limit was not what failed


def test_find_max_context_returns_its_answer_at_the_host_wall(llama, monkeypatch):
    per_token = families.kv_bytes_per_token(llama)
    # the guard budgets (context + max(256, context // 16)) tokens within 90% of what is free:
    # 256 tokens need 512 tokens' worth, 320 need 576
    _host_ram(monkeypatch, int(544 * per_token / 0.9))
    result = find_max_context(llama, mom.MomConfig(offload="stream"), new_tokens=1, resolution=64, high=1024,
                              progress=False, record=False)
    assert result.maximum == 256 and result.limit_reached
    wall = result.first_failure_above
    assert wall.context == 320 and wall.oom_kind == "host" and result.wall == "host"


def test_the_search_says_whether_a_limit_was_reached(llama):
    seen = []
    roomy = find_max_context(llama, mom.MomConfig(), new_tokens=1, resolution=64, high=256,
                             progress=False, record=False, on_try=seen.append)
    assert roomy.maximum == 256 and not roomy.limit_reached and roomy.wall is None and roomy.high == 256
    assert seen == roomy.tries and roomy.to_dict()["limit_reached"] is False
    tight = TensorTracker(llama, limit_bytes=weight_bytes(llama) + 2 * MiB)
    walled = find_max_context(llama, mom.MomConfig(), new_tokens=1, resolution=64, high=4096,
                              probe=tight, progress=False, record=False)
    assert walled.limit_reached and walled.wall == "device" and walled.maximum < 4096
