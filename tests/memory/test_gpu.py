"""GPU checks of the measurement layer (marker `gpu`; skipped without CUDA). Sized for an H100.

- CUDA allocator statistics and the tensor tracker agree on per-layer peaks (llama-3.2-1b, 16k).
- A recorded run's peak is the unrecorded run's torch.cuda.max_memory_allocated.
- find_max_context under torch.cuda.set_per_process_memory_fraction: the maximum passes and
  one step up fails, also when run again on its own.
- A CUDA OOM ends the events with the failing attempt (parsed request, bytes in use), and
  the process-wide peak from before mom measured survives mom's resets.
- Recording costs under 2% of a 64k prefill of llama-3.1-8b (slow; also prints the numbers).
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import time

import pytest
import torch

import mom
from mom.memory.events import GiB
from mom.memory.probes import TensorTracker
from mom.memory.profile import find_max_context, profile, weight_bytes
from mom.memory.recorder import MemoryRecorder

pytestmark = pytest.mark.gpu


def _free():
    gc.collect()
    torch.cuda.empty_cache()


def _ids(seq: int, vocab: int = 128000) -> torch.Tensor:
    return torch.randint(0, vocab, (1, seq), device="cuda", generator=torch.Generator("cuda").manual_seed(0))


@pytest.fixture(scope="module")
def llama1b():
    model = mom.load("llama-3.2-1b", device="cuda")
    yield model
    del model
    _free()


def test_cuda_and_tracker_agree_on_layer_peaks(llama1b):
    config = mom.MomConfig()
    cuda = profile(llama1b, config, context=16384, new_tokens=2)
    tracked = profile(llama1b, config, context=16384, new_tokens=2, probe=TensorTracker(llama1b))
    assert (cuda.backend, tracked.backend) == ("cuda", "tracker") and not (cuda.oom or tracked.oom)
    a, b = cuda.layer_table(), tracked.layer_table()
    relative = ((a["peak_bytes"] - b["peak_bytes"]).abs() / a["peak_bytes"]).max()
    unseen = int(a["bytes_before"].iloc[0] - b["bytes_before"].iloc[0])  # what the tracker cannot see at layer 0
    print(f"CUDA - tracker at layer 0: {unseen / 2**20:.1f} MiB (cuBLAS workspaces, earlier tests' leftovers)")
    assert relative < 0.05, f"per-layer peaks differ by {relative:.2%} ({unseen / 2**20:.1f} MiB more on CUDA " \
                            f"before layer 0):\n{a}\n{b}"
    # and the activation part alone (no weights) is close too
    net_a, net_b = a["peak_bytes"] - cuda.start_bytes, b["peak_bytes"] - tracked.start_bytes
    assert ((net_a - net_b).abs() / net_a).max() < 0.10


def test_recorded_peak_is_the_unrecorded_peak(llama1b):
    ids = _ids(16384)
    kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=4, min_new_tokens=4, do_sample=False,
                  pad_token_id=0)
    _free()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    llama1b.generate(ids, **kwargs)
    torch.cuda.synchronize()
    unrecorded = torch.cuda.max_memory_allocated()
    _free()
    with MemoryRecorder(llama1b) as rec:
        llama1b.generate(ids, **kwargs)
    assert abs(rec.peak_bytes - unrecorded) <= 0.01 * unrecorded, (rec.peak_bytes, unrecorded)
    assert max(e.peak_bytes for e in rec.events) <= rec.peak_bytes


@pytest.mark.skip(reason="made the GPU machine fail three times on 2026-11-28 (H100, torch 2.11; the last time run "
                         "alone): the call broke with no output. Investigate (run it in a subprocess with a log) "
                         "before re-enabling; benchmarks/NOTES.md")
def test_find_max_context_under_a_memory_fraction(llama1b):
    total = torch.cuda.get_device_properties(0).total_memory
    budget = torch.cuda.memory_allocated() + 4 * GiB
    config, resolution = mom.MomConfig(), 8192
    torch.cuda.set_per_process_memory_fraction(budget / total)
    try:
        result = find_max_context(llama1b, config, new_tokens=4, resolution=resolution, high=131072,
                                  record=False, progress=False)
        assert result.maximum is not None
        tried = {p.context: p.oom for p in result.tries}
        assert tried[result.maximum] is False and tried[result.maximum + resolution] is True
        again_up = profile(llama1b, config, result.maximum + resolution, new_tokens=4, record=False)
        again = profile(llama1b, config, result.maximum, new_tokens=4, record=False)
        assert again_up.oom and not again.oom
        assert torch.cuda.memory_allocated() == again.start_bytes  # nothing leaked by the OOMs
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        _free()


def test_a_cuda_oom_is_drawn_and_the_process_peak_survives_mom_resets(llama1b):
    from mom.memory.probes import max_memory_allocated

    _free()
    users = torch.empty(6 * GiB, dtype=torch.uint8, device="cuda")  # the user's own peak, before mom measures
    del users
    user_peak = torch.cuda.max_memory_allocated()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_allocated() + 2 * GiB) / total)
    try:
        p = profile(llama1b, mom.MomConfig(), context=65536, new_tokens=2)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        _free()
    assert p.oom and p.oom_kind == "device"
    wall = p.events[-1]
    assert wall.kind == "oom" and wall.requested_bytes and wall.bytes_after >= p.weights_bytes, wall
    assert sum(e.kind == "oom" for e in p.events) == 1
    assert max_memory_allocated() >= user_peak > p.peak_gpu_bytes


def _prefill_seconds(model, ids) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        out = model(ids, logits_to_keep=1, use_cache=True)
    torch.cuda.synchronize()
    del out
    return time.perf_counter() - start


@pytest.mark.slow
def test_recorder_overhead_on_llama8b_64k_prefill():
    """Recorded vs unrecorded 64k prefill of llama-3.1-8b: within 2% (medians of 3, alternated)."""
    if torch.cuda.get_device_properties(0).total_memory < 70 * GiB:
        pytest.skip("needs an 80 GB card")
    _free()
    model = mom.load("llama-3.1-8b", device="cuda")
    try:
        ids = _ids(65536)
        _prefill_seconds(model, ids)  # warm-up
        plain, recorded, events = [], [], 0
        for _ in range(3):
            _free()
            plain.append(_prefill_seconds(model, ids))
            _free()
            with MemoryRecorder(model) as rec:
                recorded.append(_prefill_seconds(model, ids))
            events = len(rec.events)
        overhead = statistics.median(recorded) / statistics.median(plain) - 1
        result = {
            "card": torch.cuda.get_device_name(), "total_memory_gib": torch.cuda.get_device_properties(0).total_memory / GiB,
            "torch": torch.__version__, "model": "llama-3.1-8b", "context": 65536, "weights_gib": weight_bytes(model) / GiB,
            "plain_s": plain, "recorded_s": recorded, "events_per_prefill": events, "overhead": overhead,
            "peak_gib": rec.peak_bytes / GiB,
        }
        print(json.dumps(result))
        if os.environ.get("MOM_BENCH_OUT"):
            with open(os.environ["MOM_BENCH_OUT"], "w") as f:
                json.dump(result, f, indent=1)
        assert overhead < 0.02, result
    finally:
        del model
        _free()
