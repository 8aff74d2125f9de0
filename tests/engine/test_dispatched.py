"""mom on models placed by a device map: Accelerate hooks, per-layer devices, per-device lanes.

A CPU has one device, so the device map here sends every entry to "cpu" (with Accelerate's
hooks forced on, as `dispatch_model` installs them across GPUs) or offloads the weights
(`cpu_offload`: parameters on the meta device until each module's hook brings them). Several
devices are imitated by giving layers the devices "cpu:0" and "cpu:1" (torch allocates both on
the host), which exercises one side stream, one pool, two stream slots and one budget per device.
"""

from __future__ import annotations

import copy

import pytest
import torch
from accelerate import cpu_offload, dispatch_model

import mom
from mom.engine import devices, families, placement
from mom.engine.kv_layer import kv_buffer_bytes
from tests.conftest import assert_close, prompt

MODES = ("none", "prefill", "stream", "auto")
CONFIGS = [mom.MomConfig(mini_sequences=3, offload=mode) for mode in MODES] + [
    mom.MomConfig(trim_last_layer=True), mom.MomConfig(offload="stream"), mom.MomConfig(mini_sequence_size=11)]
NEW_TOKENS = 12


def _device_map(model) -> dict[str, str]:
    layers = {f"model.layers.{i}": "cpu" for i in range(model.config.num_hidden_layers)}
    return {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", **layers, "model.norm": "cpu", "lm_head": "cpu"}


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-phi3"])
def dispatched(request, tiny_models):
    """A copy of a tiny model dispatched layer by layer, with Accelerate's AlignDevicesHooks."""
    model = copy.deepcopy(tiny_models[request.param])
    return dispatch_model(model, _device_map(model), force_hooks=True)


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-phi3"])
def offloaded(request, tiny_models):
    """A copy of a tiny model whose weights live in Accelerate's offload map (meta parameters)."""
    model = copy.deepcopy(tiny_models[request.param])
    cpu_offload(model, execution_device="cpu")
    return model


def _greedy(model, ids):
    return model.generate(ids, do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, pad_token_id=0)


def _check_exact(model, cfg):
    ids = prompt(length=40, seed=2)
    expected_logits = model(ids, logits_to_keep=1).logits
    expected = _greedy(model, ids)
    with mom.enable(model, cfg):
        logits = model(ids, logits_to_keep=1).logits
        tokens = _greedy(model, ids)
    assert_close(logits, expected_logits, 1e-5, f"{cfg.describe()} logits")
    assert torch.equal(tokens, expected), f"{cfg.describe()}: greedy tokens differ"


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.describe())
@torch.no_grad()
def test_dispatched_model_stays_exact(dispatched, cfg):
    assert hasattr(dispatched.model.layers[0], "_hf_hook")
    _check_exact(dispatched, cfg)


@pytest.mark.parametrize("cfg", CONFIGS[1:5], ids=lambda c: c.describe())
@torch.no_grad()
def test_offloaded_weights_stay_exact(offloaded, cfg):
    assert offloaded.model.layers[0].mlp.down_proj.weight.device.type == "meta"
    _check_exact(offloaded, cfg)


@torch.no_grad()
def test_restore_leaves_the_dispatched_model_exact_and_hooked(dispatched):
    ids = prompt(length=33, seed=4)
    expected = dispatched(ids).logits
    layer = dispatched.model.layers[1]
    before = dict(layer.__dict__)
    with mom.enable(dispatched, mom.MomConfig(mini_sequences=4, offload="auto")):
        assert layer.__dict__["_old_forward"] is not before["_old_forward"]  # mom runs inside the hook
        assert layer.__dict__["forward"] is before["forward"]  # Accelerate's wrapper is untouched
    assert layer.__dict__["_old_forward"] is before["_old_forward"]
    assert layer.__dict__["forward"] is before["forward"]
    assert torch.equal(dispatched(ids).logits, expected)


@torch.no_grad()
def test_every_layer_hook_runs_under_mom(dispatched):
    """mom's fused and trimmed layer paths call submodules directly; they must still run inside
    each layer's Accelerate hook, which moves the inputs to that layer's device on real GPUs."""
    calls = []
    for index, layer in enumerate(dispatched.model.layers):
        hook = layer._hf_hook
        hook.pre_forward = (lambda original, i: lambda module, *a, **k: (calls.append(i), original(module, *a, **k))[1])(
            hook.pre_forward, index)
    try:
        with mom.enable(dispatched, mom.MomConfig(mini_sequences=3)):
            dispatched(prompt(length=40), logits_to_keep=1)
    finally:
        for layer in dispatched.model.layers:
            del layer._hf_hook.pre_forward
    assert calls == list(range(dispatched.config.num_hidden_layers))


def test_layer_devices_read_hooks_before_parameters(offloaded, dispatched):
    assert devices.layer_devices(offloaded) == [torch.device("cpu")] * offloaded.config.num_hidden_layers
    assert devices.layer_devices(dispatched) == [torch.device("cpu")] * dispatched.config.num_hidden_layers
    assert devices.is_dispatched(dispatched)


# -- several devices, imitated -------------------------------------------------------------------
TWO = [torch.device("cpu", 0), torch.device("cpu", 1), torch.device("cpu", 1)]


@pytest.fixture
def two_devices(monkeypatch):
    """Layers 0 on "cpu:0", 1 and 2 on "cpu:1" (tiny presets have three layers)."""
    monkeypatch.setattr(devices, "layer_devices", lambda model: list(TWO))


def _cache(output):
    return output["cache"] if "cache" in output else output.past_key_values


def _free_memory(handle, free_by_device: dict) -> None:
    for lane in handle.offload.lanes:
        lane.copier.free_device_bytes = lambda free=free_by_device[lane.device]: free


@pytest.mark.parametrize("mode", MODES[1:])
@torch.no_grad()
def test_two_devices_have_a_lane_each_and_stay_exact(tiny_models, two_devices, mode):
    model = tiny_models["tiny-llama"]
    ids = prompt(length=40, seed=6)
    expected = _greedy(model, ids)
    with mom.enable(model, mom.MomConfig(mini_sequences=3, offload=mode)) as handle:
        lanes = handle.offload.lanes
        assert [lane.device for lane in lanes] == TWO[:2]
        assert lanes.of_layer(1) is lanes.of_layer(2) is not lanes.of_layer(0)
        assert len({id(lane.pool) for lane in lanes}) == len({id(lane.copier) for lane in lanes}) == 2
        out = model(ids, logits_to_keep=1, use_cache=True)
        cache = _cache(out)
        model(out.logits.argmax(-1), use_cache=True, **{families.cache_in_call(model, {})[0]: cache})
        if mode == "stream":  # each device streams its own layers through its own two slots
            assert set(cache.device_slots) == set(TWO[:2])
            assert cache._stream_positions == {0: 0, 1: 0, 2: 1}
            assert all(cache.device_slots[d][0] is not None for d in TWO[:2])
        assert _greedy(model, ids).tolist() == expected.tolist()
        shares = [lane.pool.held_bytes for lane in lanes]
    if mode != "auto":  # every layer passed through the host: device 1 holds two layers, device 0 one
        assert shares[1] >= 2 * shares[0] > 0


@torch.no_grad()
def test_auto_plans_each_device_from_its_own_free_memory(tiny_models, two_devices):
    model = tiny_models["tiny-llama"]
    ids = prompt(length=40, seed=8)
    expected = _greedy(model, ids)
    with mom.enable(model, mom.MomConfig(mini_sequences=3, offload="auto")) as handle:
        _free_memory(handle, {TWO[0]: 64 << 30, TWO[1]: 0})  # device 1 is full
        out = model(ids, logits_to_keep=1, use_cache=True)
        cache = _cache(out)
        assert [layer.placement for layer in cache.mom_layers()] == ["device", "host", "host"]
        assert cache.placed_bytes_by_device[TWO[1]] == 0 < cache.placed_bytes_by_device[TWO[0]]
        model(out.logits.argmax(-1), use_cache=True, **{families.cache_in_call(model, {})[0]: cache})
        assert [layer.tier for layer in cache.mom_layers()] == ["device", "stream", "stream"]
        assert torch.equal(_greedy(model, ids), expected)


@torch.no_grad()
def test_kv_gpu_budget_applies_to_each_device(tiny_models, two_devices):
    model = tiny_models["tiny-llama"]
    ids = prompt(length=40, seed=9)
    per_layer = 2 * kv_buffer_bytes(model.config, model.dtype, 1, ids.shape[1])
    with mom.enable(model, mom.MomConfig(offload="auto", kv_gpu_budget=per_layer)):
        cache = _cache(model(ids, logits_to_keep=1, use_cache=True))
        # one layer's worth on each device: layer 0 (device 0) and layer 1 (first of device 1)
        assert [layer.placement for layer in cache.mom_layers()] == ["device", "device", "host"]


def test_budget_arithmetic_per_device():
    gib = 1 << 30
    free = {"cuda:0": 10 * gib, "cuda:1": 3 * gib, "cuda:2": gib // 2}
    per_layer, transients = gib // 4, gib
    budgets = {d: placement.kv_budget(f, transients + 2 * per_layer) for d, f in free.items()}
    assert budgets["cuda:2"] == 0  # less free than the working set: nothing resident
    assert budgets["cuda:0"] == int((10 * gib - transients - 2 * per_layer - placement.DECODE_WORKING_SET)
                                    * placement.BUDGET_SHARE)
    layers = {d: placement.layers_that_fit(40, per_layer, b) for d, b in budgets.items()}
    assert layers == {"cuda:0": 27, "cuda:1": 1, "cuda:2": 0}
    assert placement.layers_that_fit(3, per_layer, 100 * gib) == 3  # never more than the device's layers
