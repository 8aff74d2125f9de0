"""profile() and find_max_context() on tiny CPU models under a tracker limit."""

from __future__ import annotations

import json

import pytest
import torch

import mom
from mom.engine import families
from mom.engine.patch import handle_of
from mom.memory.events import LAYER_COLUMNS, MiB, Profile
from mom.memory.jsonl import read_jsonl
from mom.memory.probes import TensorTracker
from mom.memory.profile import find_max_context, profile, profile_table, save_json, weight_bytes
from mom.memory.search import _next_try, _predict


@pytest.fixture
def llama(tiny_models):
    return tiny_models["tiny-llama"]


def _hooks_left(model) -> int:
    """Hooks of the memory layer still on the model (transformers may keep hooks of its own)."""
    hooks = [h for m in model.modules() for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())]
    return sum(getattr(h, "__module__", "").startswith("mom.memory") for h in hooks)


def test_a_profile_fills_every_field(llama):
    p = profile(llama, mom.MomConfig(mini_sequences=4), context=512, new_tokens=4, seed=3)
    assert not p.oom and p.error is None
    assert (p.context, p.new_tokens, p.batch, p.seed, p.backend) == (512, 4, 1, 3, "tracker")
    assert p.config["mini_sequences"] == 4 and p.label == "M=4, trim"
    assert p.weights_bytes == weight_bytes(llama) and sum(p.layer_weight_bytes) < p.weights_bytes
    assert p.weights_bytes <= p.start_bytes < p.prefill_peak_bytes <= p.peak_gpu_bytes
    assert p.peak_gpu_bytes == max(e.peak_bytes for e in p.events)
    assert p.ttft_s > 0 and p.decode_tokens_per_s > 0
    assert p.device_name and p.model_name == "tiny-llama" and p.device_limit_bytes is None
    table = p.layer_table()
    assert list(table.columns) == list(LAYER_COLUMNS) and len(table) == llama.config.num_hidden_layers
    assert (table["activation_peak_bytes"] > 0).all() and (table["peak_bytes"] <= p.peak_gpu_bytes).all()
    assert len(p.layer_table("decode")) == llama.config.num_hidden_layers
    json.dumps(p.to_dict())
    assert handle_of(llama) is None and _hooks_left(llama) == 0


def test_mini_sequences_lower_the_recorded_peak(llama):
    base = profile(llama, mom.MomConfig(), context=1024, new_tokens=2)
    mini = profile(llama, mom.MomConfig(mini_sequences=8, trim_last_layer=False), context=1024, new_tokens=2)
    assert mini.peak_gpu_bytes < base.peak_gpu_bytes
    assert mini.layer_table()["mlp_peak_bytes"].max() < base.layer_table()["mlp_peak_bytes"].max()


def test_record_false_measures_the_same_peak(llama):
    tracker = TensorTracker(llama)
    recorded = profile(llama, mom.MomConfig(), context=256, new_tokens=2, probe=tracker)
    assert tracker.allocated() == recorded.start_bytes == tracker.weights_bytes  # all given back
    bare = profile(llama, mom.MomConfig(), context=256, new_tokens=2, record=False)
    assert bare.events == [] and bare.peak_gpu_bytes == recorded.peak_gpu_bytes
    assert bare.prefill_peak_bytes == recorded.prefill_peak_bytes


def test_an_oom_is_a_result_and_leaks_nothing(llama):
    tracker = TensorTracker(llama, limit_bytes=weight_bytes(llama) + 1 * MiB)
    before = tracker.allocated()
    p = profile(llama, mom.MomConfig(mini_sequences=2), context=2048, new_tokens=2, probe=tracker)
    assert p.oom and "out of memory" in p.error and p.device_limit_bytes == tracker.limit
    assert tracker.allocated() == before and tracker.host_allocated() == 0
    assert p.events and p.peak_gpu_bytes <= tracker.limit
    assert handle_of(llama) is None and _hooks_left(llama) == 0
    assert not profile(llama, mom.MomConfig(), context=64, new_tokens=2, probe=tracker).oom  # keeps going


def test_an_injected_oom_is_reported_and_leaks_nothing(llama):
    def out_of_memory(*_):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")

    tracker = TensorTracker(llama)
    before = tracker.allocated()
    hook = families.decoder_layers(llama)[1].mlp.register_forward_pre_hook(out_of_memory)
    try:
        p = profile(llama, mom.MomConfig(mini_sequences=2), context=512, new_tokens=2, probe=tracker)
    finally:
        hook.remove()
    assert p.oom and "injected" in p.error and p.ttft_s is None
    assert tracker.allocated() == before
    assert {e.layer for e in p.events if e.module == "layer" and e.kind == "call"} == {0}  # up to the failure
    assert (p.events[-1].kind, p.events[-1].layer, p.oom_kind) == ("oom", 1, "device")
    assert handle_of(llama) is None and _hooks_left(llama) == 0


def test_other_errors_are_raised(llama):
    def broken(*_):
        raise ValueError("not an OOM")

    hook = llama.lm_head.register_forward_pre_hook(broken)
    try:
        with pytest.raises(ValueError, match="not an OOM"):
            profile(llama, mom.MomConfig(), context=32, new_tokens=1)
    finally:
        hook.remove()
    assert handle_of(llama) is None and _hooks_left(llama) == 0


def test_config_none_profiles_the_model_as_it_is(llama):
    with mom.enable(llama, mom.MomConfig(mini_sequences=2)):
        p = profile(llama, None, context=128, new_tokens=1)
        with pytest.raises(mom.AlreadyEnabledError):
            profile(llama, mom.MomConfig(), context=128, new_tokens=1)
    assert p.label == "M=2, trim" and any(e.module == "mlp_piece" for e in p.events)


def test_jsonl_and_listeners(llama, tmp_path):
    seen = []
    path = tmp_path / "sweep.jsonl"
    for context in (64, 128):
        profile(llama, mom.MomConfig(), context=context, new_tokens=1, listeners=[seen.append], jsonl=path)
    read = read_jsonl(path)
    assert len(read.events) == len(seen) and {r["context"] for r in read.events} == {64, 128}
    assert [r["context"] for r in read.runs] == [64, 128]


def _limited(llama):
    return TensorTracker(llama, limit_bytes=weight_bytes(llama) + 4 * MiB)


def test_find_max_context_matches_a_linear_scan(llama, tmp_path):
    config, resolution = mom.MomConfig(mini_sequences=2), 128
    linear = None
    for context in range(resolution, 4096 + 1, resolution):
        if profile(llama, config, context, new_tokens=2, probe=_limited(llama), record=False).oom:
            break
        linear = context
    result = find_max_context(llama, config, new_tokens=2, resolution=resolution, high=4096,
                              probe=_limited(llama), progress=False)
    assert linear is not None and result.maximum == linear
    tried = {p.context: p.oom for p in result.tries}
    assert tried[linear] is False and tried[linear + resolution] is True
    assert result.first_failure_above.context == linear + resolution
    assert len(result.tries) < linear // resolution
    save_json(result, tmp_path / "max.json")
    saved = json.loads((tmp_path / "max.json").read_text())
    assert saved["maximum"] == linear and len(saved["tries"]) == len(result.tries)


def test_find_max_context_edges(llama):
    tiny_limit = TensorTracker(llama, limit_bytes=weight_bytes(llama) + 1024)
    assert find_max_context(llama, mom.MomConfig(), new_tokens=1, resolution=64, high=512,
                            probe=tiny_limit, progress=False).maximum is None
    roomy = find_max_context(llama, mom.MomConfig(), new_tokens=1, resolution=64, low=100, high=300,
                             progress=False, record=False)
    assert roomy.maximum == 256 and [p.context for p in roomy.tries] == [128, 256]
    with pytest.raises(ValueError, match="above high"):
        find_max_context(llama, resolution=64, low=512, high=256, progress=False)


def _passing(context, peak):
    return Profile("m", {}, context, 1, peak_gpu_bytes=peak)


def test_the_next_try_aims_at_the_limit_then_bisects():
    tries = [_passing(1000, 1000 + 10 * 1000), _passing(2000, 1000 + 10 * 2000)]
    assert _predict(tries, limit=1000 + 10 * 5500) == 5500
    assert _next_try(2000, 8000, tries, 1000 + 10 * 5500, 500, streak=0) == (5500, True)
    assert _next_try(2000, 8000, tries, 1000 + 10 * 5500, 500, streak=2) == (5000, False)
    assert _next_try(2000, 8000, tries, None, 500, streak=0) == (5000, False)
    assert _next_try(2000, 3000, tries, 10**12, 500, streak=0) == (2500, True)  # clamped inside


def test_profile_table():
    rows = profile_table([_passing(1024, 3 * MiB), Profile("m", {"label": "M=4"}, 2048, 1, oom=True)])
    lines = rows.splitlines()
    assert len(lines) == 4 and "3.00 MiB" in lines[2] and lines[3].startswith("M=4") and "OOM" in lines[3]


def test_offloaded_kv_shows_as_host_bytes(llama):
    per_token = families.kv_bytes_per_token(llama)
    p = profile(llama, mom.MomConfig(mini_sequences=2, offload="stream"), context=512, new_tokens=3)
    last = p.events[-1]
    assert last.phase == "decode" and last.kv_gpu_bytes == 0 and last.kv_host_bytes >= (512 + 2) * per_token
    assert p.peak_host_bytes >= last.kv_host_bytes


def test_offloaded_kv_leaves_the_tracked_device_when_the_engine_marks_its_host_tier(llama):
    from mom.engine import cache

    if not hasattr(cache, "HOST_TIER_CONTEXTS"):
        pytest.skip("mom.engine.cache has no HOST_TIER_CONTEXTS hook yet (host blocks count as device)")
    on_device = profile(llama, mom.MomConfig(mini_sequences=2), context=1024, new_tokens=2)
    offloaded = profile(llama, mom.MomConfig(mini_sequences=2, offload="prefill"), context=1024, new_tokens=2)
    assert offloaded.peak_gpu_bytes < on_device.peak_gpu_bytes
    assert offloaded.peak_host_bytes >= 1024 * families.kv_bytes_per_token(llama)
