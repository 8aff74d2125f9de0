"""The tensor tracker counts what a GPU allocator would: storages once, freed when freed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mom.engine import cache as engine_cache
from mom.memory.probes import Probe, TensorTracker, active_tracker, default_probe
from mom.memory.profile import weight_bytes


def test_a_tensor_is_counted_while_it_lives():
    with TensorTracker() as tracker:
        x = torch.empty(1000)
        assert tracker.allocated() == 4000
        y = x * 2
        assert tracker.allocated() == 8000
        del x
        assert tracker.allocated() == 4000
    del y  # frees are seen after the tracker is left too
    assert tracker.allocated() == 0
    assert tracker.peak() == 8000


def test_views_and_in_place_ops_allocate_nothing():
    with TensorTracker() as tracker:
        x = torch.zeros(10, 100)
        views = [x[2:], x.view(1000), x.t(), x.unsqueeze(0), x.reshape(100, 10), x.detach()]
        x.add_(1).mul_(2)
        torch.add(x, 1, out=x)
        assert tracker.allocated() == 4000
        del x
        assert tracker.allocated() == 4000  # the views keep the storage alive
        views.clear()
        assert tracker.allocated() == 0


def test_tensors_made_before_tracking_are_not_counted_through_their_views():
    before = torch.randn(8, 8)
    with TensorTracker() as tracker:
        parts = [before[1:], before.view(64), torch.ops.aten._unsafe_view(before, (4, 16)), before.add_(1)]
        assert tracker.allocated() == 0
        fresh = before + 1
        assert tracker.allocated() == 256
    del parts, fresh


def test_python_literals_and_resizes_are_counted():
    with TensorTracker() as tracker:
        literal = torch.tensor([1.0, 2.0, 3.0])
        assert tracker.allocated() == 12
        grown = torch.empty(2)
        grown.resize_(100)
        assert tracker.allocated() == 12 + 400
    del literal, grown
    assert tracker.allocated() == 0


def test_weights_are_the_baseline_and_tied_weights_count_once():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False))
    model[1].weight = model[0].weight  # tied, as in many LM heads
    model.register_buffer("scale", torch.ones(3))
    tracker = TensorTracker(model)
    assert tracker.weights_bytes == tracker.allocated() == 10 * 4 * 4 + 3 * 4 == weight_bytes(model)


def test_the_limit_raises_the_oom_a_gpu_would_and_counts_nothing():
    with TensorTracker(limit_bytes=10_000) as tracker:
        keep = torch.empty(2000)
        with pytest.raises(torch.OutOfMemoryError, match="out of memory.*Tried to allocate 7.81 KiB"):
            torch.empty(2000)
        assert tracker.allocated() == 8000
        small = torch.empty(100)  # still usable after an OOM
        assert tracker.allocated() == 8400
    del keep, small


def test_host_tier_counts_apart_from_the_device_and_its_limit():
    with TensorTracker(limit_bytes=1000) as tracker:
        with tracker.host_tier():
            host = torch.empty(1000)
        device = torch.empty(100)
        assert (tracker.allocated(), tracker.host_allocated()) == (400, 4000)
        tracker.mark_host(device)
        assert (tracker.allocated(), tracker.host_allocated()) == (0, 4400)
        del host
        assert tracker.host_allocated() == 400
        assert tracker.host_peak() == 4400
        tracker.reset_host_peak()
        assert tracker.host_peak() == 400
    del device


def test_the_kv_cache_reaches_the_host_tier_through_the_optional_engine_hook(monkeypatch):
    monkeypatch.setattr(engine_cache, "HOST_TIER_CONTEXTS", [], raising=False)
    with TensorTracker() as tracker:
        assert engine_cache.HOST_TIER_CONTEXTS == [tracker.host_tier]
        with engine_cache.HOST_TIER_CONTEXTS[-1]():
            kv = torch.empty(10)
        assert tracker.host_allocated() == 40
    assert engine_cache.HOST_TIER_CONTEXTS == []
    del kv


def test_activation_is_reentrant_and_leaves_no_mode_behind():
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    tracker = TensorTracker()
    with tracker, tracker:
        assert active_tracker() is tracker
        x = torch.empty(10)
        assert tracker.allocated() == 40
    assert _get_current_dispatch_mode() is None and active_tracker() is None
    del x


def test_nested_watches_keep_every_peak():
    with TensorTracker() as tracker:
        outer = tracker.watch()
        big = torch.empty(1000)
        del big
        inner = tracker.watch()  # resets the device peak: outer must not lose the 4000
        small = torch.empty(10)
        assert inner.close() == 40
        assert outer.peak == 4000
        del small
        assert outer.close() == 4000
    assert tracker._watches == []


class FakeProbe(Probe):
    """Counters set by hand, to test the peak bookkeeping alone."""

    def __init__(self):
        super().__init__("cpu")
        self.now = self.high = 0

    def allocated(self):
        return self.now

    def set(self, value):
        self.now, self.high = value, max(self.high, value)

    def _raw_peak(self):
        return self.high

    def _raw_reset(self):
        self.high = self.now


def test_watches_fold_on_every_reset_even_from_another_watcher():
    probe = FakeProbe()
    run_a, run_b = probe.watch(), probe.watch()  # two recorders on one probe
    probe.set(50)
    probe.set(10)
    layer = probe.watch()
    probe.set(30)
    assert layer.close() == 30
    assert run_a.peak == run_b.peak == 50


def test_default_probe_on_cpu_is_a_limited_tracker():
    probe = default_probe(nn.Linear(2, 2), limit_bytes=123)
    assert isinstance(probe, TensorTracker) and probe.limit == 123 and probe.backend == "tracker"


def test_another_threads_host_tier_does_not_reclassify_this_threads_tensors():
    """The pinning thread holds host_tier() while the main thread computes: issue 9, item 8."""
    import threading

    entered, release = threading.Event(), threading.Event()
    tracker = TensorTracker()

    def pinning_thread():
        with tracker.host_tier():
            entered.set()
            release.wait(10)

    worker = threading.Thread(target=pinning_thread)
    worker.start()
    try:
        assert entered.wait(10)
        with tracker:
            activation = torch.empty(1000)
        assert (tracker.allocated(), tracker.host_allocated()) == (4000, 0)
    finally:
        release.set()
        worker.join(10)
    del activation


class FakeCuda:
    """The CUDA allocator's counters on a machine without a GPU (issue 9, item 13)."""

    def __init__(self, monkeypatch):
        from mom.memory import cuda as probes

        self.now = self.high = 0
        self.resets = 0
        monkeypatch.setattr(probes, "_nested_cuda_stats", lambda device: self.stats())
        monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", self.reset)
        monkeypatch.setattr(probes, "_HIGH_WATER", {}, raising=False)

    def stats(self) -> dict:
        return {"allocated_bytes": {"all": {"current": self.now, "peak": self.high}},
                "reserved_bytes": {"all": {"current": self.high, "peak": self.high}}}

    def set(self, value: int) -> None:
        self.now, self.high = value, max(self.high, value)

    def reset(self, device=None) -> None:
        self.resets += 1
        self.high = self.now


def test_the_cuda_probe_keeps_the_process_high_water_mark(monkeypatch):
    from mom.memory.probes import CudaProbe, max_memory_allocated

    cuda = FakeCuda(monkeypatch)
    cuda.set(10_000)  # the user's own run, before mom measures anything
    cuda.set(2_000)
    probe = CudaProbe("cuda:0")
    run = probe.watch()
    layer = probe.watch()
    cuda.set(3_000)
    cuda.set(2_500)
    assert layer.close() == 3_000 and run.close() == 3_000
    assert max_memory_allocated("cuda:0") == 10_000  # what torch.cuda.max_memory_allocated said before
    cuda.set(12_000)
    assert max_memory_allocated("cuda:0") == 12_000


def test_a_run_without_nested_watches_resets_the_peak_once(monkeypatch):
    from mom.memory.probes import CudaProbe

    cuda = FakeCuda(monkeypatch)
    probe = CudaProbe("cuda:0")
    run = probe.watch()
    for value in (100, 400, 200):
        cuda.set(value)
        assert run.peak == 400 or value == 100
    assert run.close() == 400 and cuda.resets == 1
