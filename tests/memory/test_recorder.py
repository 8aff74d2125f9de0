"""MemoryRecorder on tiny CPU models: every module, hand-computed bytes, clean hooks."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

import mom
from mom.engine import families
from mom.memory.events import EVENT_COLUMNS
from mom.memory.jsonl import read_jsonl
from mom.memory.probes import TensorTracker
from mom.memory.recorder import MemoryRecorder
from tests.conftest import prompt

S = 256  # prompt tokens: divisible by the piece counts used below


@pytest.fixture
def llama(tiny_models):
    return tiny_models["tiny-llama"]


def _generate(model, length=S, new_tokens=3):
    with torch.no_grad():
        ids = prompt(length=length)
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)


def _hooks_left(model) -> int:
    """Hooks of the memory layer still on the model (transformers may keep hooks of its own)."""
    hooks = [h for m in model.modules() for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())]
    return sum(getattr(h, "__module__", "").startswith("mom.memory") for h in hooks)


def _only(events, **match):
    found = [e for e in events if all(getattr(e, k) == v for k, v in match.items())]
    assert len(found) == 1, f"{len(found)} events match {match}"
    return found[0]


def test_every_module_of_every_forward_is_recorded_in_order(llama):
    with MemoryRecorder(llama) as rec:
        _generate(llama, new_tokens=3)
    layers = llama.config.num_hidden_layers
    per_forward = Counter((e.phase, e.step) for e in rec.events)
    assert per_forward == {("prefill", 0): 3 * layers + 3, ("decode", 1): 3 * layers + 3, ("decode", 2): 3 * layers + 3}
    first = [(e.module, e.layer) for e in rec.events[: 3 * layers + 3]]
    assert first[:4] == [("embedding", None), ("attention", 0), ("mlp", 0), ("layer", 0)]
    assert first[-2:] == [("norm", None), ("lm_head", None)]
    assert all(a.elapsed_s <= b.elapsed_s for a, b in zip(rec.events, rec.events[1:]))


def test_mlp_intermediates_match_the_hand_count_and_shrink_by_m(llama):
    """LlamaMLP holds act(gate(x)), up(x) and their product at once: 3 x S x I floats."""
    width, hidden, fp32 = llama.config.intermediate_size, llama.config.hidden_size, 4
    with MemoryRecorder(llama) as rec:
        _generate(llama, new_tokens=1)
    mlp = _only(rec.events, phase="prefill", module="mlp", layer=0)
    assert mlp.peak_bytes - mlp.bytes_before == 3 * S * width * fp32
    assert mlp.bytes_after - mlp.bytes_before == S * hidden * fp32  # only its output survives

    pieces = 4
    with mom.enable(llama, mom.MomConfig(mini_sequences=pieces)), MemoryRecorder(llama) as rec:
        _generate(llama, new_tokens=1)
    piece_events = [e for e in rec.events if e.module == "mlp_piece" and e.layer == 0]
    assert [e.piece for e in piece_events] == list(range(pieces))
    # the fused prefill layer (engine/patch.py) norms each piece inside the MLP call and adds the
    # output into the residual stream in place: one piece's normed input and intermediates
    one_piece = (S // pieces) * (hidden + 3 * width) * fp32
    for e in piece_events:
        assert e.peak_bytes - e.bytes_before == one_piece
    mlp = _only(rec.events, phase="prefill", module="mlp", layer=0)
    assert mlp.peak_bytes - mlp.bytes_before == one_piece  # no output buffer at full length
    assert mlp.bytes_after == mlp.bytes_before


def test_kv_bytes_follow_the_cache(llama):
    per_token = families.kv_bytes_per_token(llama)
    per_layer = per_token // llama.config.num_hidden_layers
    with MemoryRecorder(llama) as rec:
        _generate(llama, new_tokens=3)
    assert _only(rec.events, phase="prefill", module="attention", layer=0).kv_gpu_bytes == S * per_layer
    assert _only(rec.events, phase="prefill", module="lm_head").kv_gpu_bytes == S * per_token
    assert _only(rec.events, phase="decode", step=2, module="layer", layer=2).kv_gpu_bytes == (S + 2) * per_token
    assert all(e.kv_host_bytes == 0 for e in rec.events)


def test_module_peaks_nest_inside_the_run_peak(llama):
    with mom.enable(llama, mom.MomConfig(mini_sequences=4)), MemoryRecorder(llama) as rec:
        _generate(llama)
    assert rec.peak_bytes == max(e.peak_bytes for e in rec.events)
    for e in rec.events:
        assert max(e.bytes_before, e.bytes_after) <= e.peak_bytes <= rec.peak_bytes
    for layer in range(llama.config.num_hidden_layers):
        whole = _only(rec.events, phase="prefill", module="layer", layer=layer)
        for part in ("attention", "mlp"):
            assert _only(rec.events, phase="prefill", module=part, layer=layer).peak_bytes <= whole.peak_bytes


def test_recorded_peak_equals_the_unrecorded_peak(llama):
    with TensorTracker(llama) as tracker:
        watch = tracker.watch()
        _generate(llama)
        unrecorded = watch.close()
        with MemoryRecorder(llama, probe=tracker) as rec:
            _generate(llama)
    assert rec.peak_bytes == unrecorded


def test_recording_twice_gives_the_same_numbers(llama):
    rec = MemoryRecorder(llama)
    frames = []
    for _ in range(2):
        with rec:
            _generate(llama)
        frames.append(rec.to_frame().drop(columns=["elapsed_s", "duration_s"]))
    assert rec.run_index == 2
    assert frames[0].equals(frames[1])
    assert _hooks_left(llama) == 0


@pytest.mark.parametrize("enable_first", [True, False])
def test_recording_under_mom_enable_sees_the_pieces(llama, enable_first):
    config = mom.MomConfig(mini_sequences=2)
    rec = MemoryRecorder(llama)
    if enable_first:
        with mom.enable(llama, config) as handle, rec:
            _generate(llama)
    else:
        with rec, mom.enable(llama, config) as handle:
            _generate(llama)
    pieces = [e for e in rec.events if e.module == "mlp_piece"]
    # every layer but the trimmed last one, prefill only
    assert len(pieces) == 2 * (llama.config.num_hidden_layers - 1)
    assert handle.piece_hooks == [] and _hooks_left(llama) == 0


def test_hooks_are_removed_on_error(llama):
    mlp = families.decoder_layers(llama)[1].mlp

    def boom(*_):
        raise ValueError("boom")

    rec = MemoryRecorder(llama)
    handle = mlp.register_forward_pre_hook(boom)
    try:
        with pytest.raises(ValueError, match="boom"), mom.enable(llama, mom.MomConfig(mini_sequences=2)), rec:
            _generate(llama)
    finally:
        handle.remove()
    assert _hooks_left(llama) == 0 and not rec.recording
    assert rec.probe._watches == [] and mom.engine.patch.handle_of(llama) is None


def test_an_error_caught_inside_the_recording_leaves_it_consistent(llama):
    layer = families.decoder_layers(llama)[0]
    calls = []

    def fail_once(*_):
        if not calls:
            calls.append(1)
            raise ValueError("once")

    hook = layer.mlp.register_forward_pre_hook(fail_once)
    try:
        with MemoryRecorder(llama) as rec:
            with pytest.raises(ValueError):
                _generate(llama)
            _generate(llama)
    finally:
        hook.remove()
    assert rec.probe._watches == []
    assert Counter(e.module for e in rec.events if e.phase == "prefill")["layer"] == llama.config.num_hidden_layers


def test_listeners_and_jsonl_see_events_as_they_happen(llama, tmp_path):
    path = tmp_path / "events.jsonl"
    seen, lines_when_seen = [], []
    rec = MemoryRecorder(llama, tags={"label": "tiny"}).save(path)

    @rec.add_listener
    def listen(event):
        seen.append(event)
        lines_when_seen.append(len(path.read_text().splitlines()))

    for _ in range(2):
        with rec:
            _generate(llama, new_tokens=2)
    assert seen[-len(rec.events):] == rec.events
    first = len(seen) - len(rec.events)  # one header line per run, then its events
    expected = [i + 2 for i in range(first)] + [i + 3 for i in range(first, len(seen))]
    assert lines_when_seen == expected  # written before listeners are called
    read = read_jsonl(path)
    rows = read.events
    assert read.torn == 0 and len(rows) == len(seen) and {r["run"] for r in rows} == {1, 2}
    assert rows[0]["label"] == "tiny" and set(EVENT_COLUMNS) <= set(rows[0])
    assert [r["run"] for r in read.runs] == [1, 2] and all(r["label"] == "tiny" for r in read.runs)
    assert len(read.runs[0]["provenance"]["commit"]) in (40, len("unknown"))


def test_two_recorders_at_once_agree(llama):
    with TensorTracker(llama) as tracker, MemoryRecorder(llama, probe=tracker) as a, MemoryRecorder(llama) as b:
        _generate(llama)
    assert b.probe is tracker  # the active tracker is found
    assert a.peak_bytes == b.peak_bytes and len(a.events) == len(b.events)
    assert [e.peak_bytes for e in a.events] == [e.peak_bytes for e in b.events]


def test_frame_and_guard(llama):
    rec = MemoryRecorder(llama)
    assert list(rec.to_frame().columns) == list(EVENT_COLUMNS)
    with rec:
        with pytest.raises(RuntimeError, match="already recording"):
            rec.__enter__()
        _generate(llama, new_tokens=1)
    frame = rec.to_frame()
    assert len(frame) == len(rec.events) and str(frame["layer"].dtype) == "Int64"


def test_every_tiny_family_records(tiny_model):
    with mom.enable(tiny_model, mom.MomConfig(mini_sequences=2)), MemoryRecorder(tiny_model) as rec:
        _generate(tiny_model, length=64, new_tokens=2)
    modules = Counter(e.module for e in rec.events)
    layers = tiny_model.config.num_hidden_layers
    assert modules["layer"] == modules["attention"] == modules["mlp"] == 2 * layers
    assert modules["mlp_piece"] == 2 * (layers - 1) and modules["lm_head"] == 2
