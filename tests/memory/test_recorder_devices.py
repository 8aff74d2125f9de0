"""The recorder on a model spread over several devices: each call measured on its own device."""

from __future__ import annotations

import torch

import mom
from mom.engine import devices
from mom.memory.peaks import Probe
from tests.conftest import prompt


class _FixedProbe(Probe):
    """A second device whose counters say `allocated`, with a high-water mark of `peak`."""

    def __init__(self, device, allocated: int, peak: int):
        super().__init__(device)
        self._allocated, self._peak = allocated, peak

    def allocated(self) -> int:
        return self._allocated

    def _raw_peak(self) -> int:
        return self._peak

    def _raw_reset(self) -> None:
        return None


@torch.no_grad()
def test_each_call_is_measured_on_its_layers_device(tiny_models, monkeypatch):
    model = tiny_models["tiny-llama"]
    first, second = torch.device("cpu", 0), torch.device("cpu", 1)
    monkeypatch.setattr(devices, "layer_devices", lambda m: [first, second, second])
    tracker = mom.TensorTracker(model)
    other = _FixedProbe(second, allocated=1000, peak=5000)
    recorder = mom.MemoryRecorder(model, device_probes={first: tracker, second: other})
    with mom.enable(model, mom.MomConfig(mini_sequences=2)), recorder:
        model(prompt(length=24), logits_to_keep=1)
    frame = recorder.to_frame()
    layers = frame[frame["layer"].notna()]
    assert set(layers[layers["layer"] == 0]["device"]) == {"cpu:0"}
    assert set(layers[layers["layer"] > 0]["device"]) == {"cpu:1"}
    assert set(layers[layers["layer"] > 0]["bytes_before"]) == {1000}  # the second device's counters
    assert (layers[layers["layer"] == 0]["bytes_before"] >= tracker.weights_bytes).all()
    assert set(frame[frame["module"] == "mlp_piece"]["device"]) == {"cpu:0", "cpu:1"}
    peaks = recorder.peaks_by_device
    assert peaks["cpu:1"] == 5000 and peaks["cpu:0"] > tracker.weights_bytes
    assert recorder.peak_bytes == max(peaks.values())


@torch.no_grad()
def test_one_device_keeps_the_plain_recorder(tiny_models):
    model = tiny_models["tiny-llama"]
    with mom.MemoryRecorder(model) as recorder:
        model(prompt(length=8), logits_to_keep=1)
    assert recorder.peaks_by_device == {} and recorder.peak_bytes > 0
    assert recorder.to_frame()["device"].isna().all()
