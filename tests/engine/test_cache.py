"""MomCache on CPU: the tier logic (host, reload, stream) is exact and accounts its bytes.

Without CUDA the same code runs with synchronous copies; the GPU tests (test_gpu.py) check the
streams and pinned memory on a real card.
"""

from __future__ import annotations

import pytest
import torch

import mom
from mom.engine import cache as cache_module
from mom.engine import host_guard
from mom.engine.cache import HostMemoryError, MomCache, MomLayer
from tests.conftest import assert_close, prompt

OFFLOAD_FAMILIES = ["tiny-llama", "tiny-qwen2", "tiny-qwen3", "tiny-phi3"]


def _generate(model, ids, mask=None, new=12):
    return model.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                          pad_token_id=0, output_logits=True, return_dict_in_generate=True)


def _cache(out):
    return out.cache if "cache" in out else out.past_key_values


def _padded_batch():
    ids = prompt(batch=2, length=36, seed=9)
    mask = torch.ones_like(ids)
    ids[0, :5], mask[0, :5] = 0, 0
    return ids, mask


@pytest.mark.parametrize("name", OFFLOAD_FAMILIES)
@pytest.mark.parametrize("mode, budget", [("prefill", None), ("stream", None), ("auto", None), ("auto", 0),
                                          ("auto", "one-layer")])
@pytest.mark.parametrize("batch", [1, 2])
@torch.no_grad()
def test_offload_modes_are_exact(tiny_models, name, mode, budget, batch):
    model = tiny_models[name]
    ids, mask = _padded_batch() if batch == 2 else (prompt(length=36, seed=2), None)
    if budget == "one-layer":  # K and V of one layer, with growth room, and a bit
        _, heads, dim = mom.engine.families.kv_geometry(model)
        budget = 2 * batch * heads * dim * 4 * (36 + cache_module.growth(36)) + 10
    expected = _generate(model, ids, mask)
    with mom.enable(model, mom.MomConfig(mini_sequences=2, offload=mode, kv_gpu_budget=budget)):
        actual = _generate(model, ids, mask)
    assert torch.equal(actual.sequences, expected.sequences)
    for step, (a, e) in enumerate(zip(actual.logits, expected.logits)):
        assert_close(a, e, 1e-5, f"{name} {mode} step {step} logits")
    cache = _cache(actual)
    assert isinstance(cache, MomCache) and cache.get_seq_length() == 36 + 11
    tiers = [layer.tier for layer in cache.mom_layers()]
    expected_tiers = {"prefill": ["device"] * 3, "stream": ["stream"] * 3}.get(mode)
    if mode == "auto":
        expected_tiers = {None: ["device"] * 3, 0: ["stream"] * 3}.get(budget, ["device", "stream", "stream"])
    assert tiers == expected_tiers


@torch.no_grad()
def test_bytes_by_layer_follow_the_tiers(tiny_models):
    model = tiny_models["tiny-llama"]
    with mom.enable(model, mom.MomConfig(offload="stream")):
        cache = _cache(_generate(model, prompt(length=30), new=3))
    per_layer = cache.bytes_by_layer()
    assert all(device == 0 and host > 0 for device, host in per_layer)
    layer = cache.mom_layers()[0]
    _, heads, dim = mom.engine.families.kv_geometry(model)
    assert per_layer[0][1] == 2 * heads * dim * 4 * layer.host_kv[0].shape[-2]
    assert cache.slot_bytes > 0  # the two shared GPU slots
    with mom.enable(model, mom.MomConfig(offload="prefill")):
        cache = _cache(_generate(model, prompt(length=30), new=3))
    assert all(device > 0 and host == 0 for device, host in cache.bytes_by_layer())


@torch.no_grad()
def test_host_buffers_are_not_reallocated_per_token(tiny_models, monkeypatch):
    model = tiny_models["tiny-qwen3"]
    taken = []
    real_lend = cache_module.HostPool.lend
    monkeypatch.setattr(cache_module.HostPool, "lend", lambda self, *a, **k: taken.append(a) or real_lend(self, *a, **k))
    with mom.enable(model, mom.MomConfig(offload="stream")):
        _generate(model, prompt(length=20), new=40)
    assert len(taken) == 2 * model.config.num_hidden_layers  # K and V once per layer, at prefill


@torch.no_grad()
def test_host_buffers_grow_rarely_when_decoding_long(tiny_models):
    model = tiny_models["tiny-phi3"]
    ids = prompt(length=10)
    expected = _generate(model, ids, new=300)
    with mom.enable(model, mom.MomConfig(offload="stream")):
        actual = _generate(model, ids, new=300)  # past the 256 spare tokens: one regrowth
    assert torch.equal(actual.sequences, expected.sequences)


@torch.no_grad()
def test_sliding_window_layers_stay_transformers_layers(tiny_models):
    model = tiny_models["tiny-mistral"]
    with mom.enable(model, mom.MomConfig(offload="stream")):
        cache = _cache(_generate(model, prompt(length=30), new=3))
    assert cache.mom_layers() == []


def test_host_ram_guard_fails_before_allocating(tiny_models, monkeypatch):
    model = tiny_models["tiny-llama"]

    class Tiny:
        available = 1000

    monkeypatch.setattr(host_guard.psutil, "virtual_memory", lambda: Tiny)
    allocations = []
    monkeypatch.setattr(cache_module.HostPool, "lend", lambda self, *a, **k: allocations.append(a))
    with mom.enable(model, mom.MomConfig(offload="stream")):
        with pytest.raises(HostMemoryError, match="host RAM"):
            model.generate(prompt(length=30), max_new_tokens=2, pad_token_id=0)
    assert allocations == []


def test_beam_search_is_refused_clearly(tiny_models):
    model = tiny_models["tiny-llama"]
    with mom.enable(model, mom.MomConfig(offload="stream")), pytest.raises(NotImplementedError, match="beam"):
        model.generate(prompt(length=12), max_new_tokens=3, num_beams=2, do_sample=False, pad_token_id=0)


def test_mom_layer_is_a_transformers_cache_layer():
    from transformers.cache_utils import Cache, CacheLayerMixin

    assert issubclass(MomCache, Cache) and issubclass(MomLayer, CacheLayerMixin)


@torch.no_grad()
def test_restore_releases_pinned_pool(tiny_models):
    model = tiny_models["tiny-llama"]
    handle = mom.enable(model, mom.MomConfig(offload="stream"))
    _generate(model, prompt(length=20), new=2)
    pool = handle.host_pool
    assert pool.held_bytes > 0
    handle.restore()
    assert pool.held_bytes == 0 and handle.host_pool is None


@torch.no_grad()
def test_pinned_buffers_are_reused_by_the_next_run(tiny_models):
    import gc

    model = tiny_models["tiny-qwen2"]
    with mom.enable(model, mom.MomConfig(offload="stream")) as handle:
        _generate(model, prompt(length=20), new=2)
        gc.collect()
        held = handle.host_pool.held_bytes
        assert handle.host_pool.free_bytes == held > 0  # the dropped cache gave everything back
        for _ in range(3):
            _generate(model, prompt(length=20), new=2)
            gc.collect()
        assert handle.host_pool.held_bytes == held


@torch.no_grad()
def test_a_reload_that_does_not_fit_streams_instead(tiny_models, monkeypatch):
    model = tiny_models["tiny-llama"]
    ids = prompt(length=30, seed=4)
    expected = _generate(model, ids, new=6)
    real = cache_module.device_buffers
    calls = {"n": 0}

    def second_reload_fails(like, needed, device):
        calls["n"] += 1
        if like.device.type == "cpu" and calls["n"] == 2:  # layer 1's reload
            raise torch.OutOfMemoryError("pretend the budget was optimistic")
        return real(like, needed, device)

    monkeypatch.setattr(cache_module, "device_buffers", second_reload_fails)
    with mom.enable(model, mom.MomConfig(offload="prefill")):  # every layer reloads after prefill
        actual = _generate(model, ids, new=6)
    assert torch.equal(actual.sequences, expected.sequences)
    assert [layer.tier for layer in _cache(actual).mom_layers()] == ["device", "stream", "device"]


@torch.no_grad()
def test_auto_places_resident_layers_before_prefill_and_never_on_the_host(tiny_models, monkeypatch):
    model = tiny_models["tiny-llama"]
    ids = prompt(length=36, seed=2)
    _, heads, dim = mom.engine.families.kv_geometry(model)
    one_layer = 2 * heads * dim * 4 * (36 + cache_module.growth(36))
    lent = []
    real_lend = cache_module.HostPool.lend
    monkeypatch.setattr(cache_module.HostPool, "lend", lambda self, *a, **k: lent.append(a) or real_lend(self, *a, **k))
    guarded = []
    real_guard = host_guard.check_host_memory
    monkeypatch.setattr(host_guard, "check_host_memory", lambda needed, *a: guarded.append(needed) or real_guard(needed, *a))
    expected = _generate(model, ids)
    with mom.enable(model, mom.MomConfig(offload="auto", kv_gpu_budget=2 * one_layer)):
        actual = _generate(model, ids)
    assert torch.equal(actual.sequences, expected.sequences)
    cache = _cache(actual)
    assert [layer.placement for layer in cache.mom_layers()] == ["device", "device", "host"]
    assert [layer.tier for layer in cache.mom_layers()] == ["device", "device", "stream"]
    assert len(lent) == 2  # K and V of the one host layer, nothing for the resident ones
    assert guarded == [one_layer]  # the host-RAM guard counts only what goes to the host


@torch.no_grad()
def test_a_resident_placement_that_does_not_fit_goes_to_the_host(tiny_models, monkeypatch):
    from mom.engine import kv_layer

    model = tiny_models["tiny-llama"]
    ids = prompt(length=30, seed=4)
    expected = _generate(model, ids, new=6)
    real = kv_layer.device_buffers
    calls = {"n": 0}

    def second_placement_fails(like, needed, device):
        calls["n"] += 1
        if calls["n"] == 2:  # layer 1's K/V, allocated at placement before prefill
            raise torch.OutOfMemoryError("pretend the placement was optimistic")
        return real(like, needed, device)

    monkeypatch.setattr(kv_layer, "device_buffers", second_placement_fails)
    with mom.enable(model, mom.MomConfig(offload="auto")):
        actual = _generate(model, ids, new=6)
    assert torch.equal(actual.sequences, expected.sequences)
    # the layers after the one that did not fit go to the host too (placement allocates in order)
    assert [layer.placement for layer in _cache(actual).mom_layers()] == ["device", "host", "host"]
