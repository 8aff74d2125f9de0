"""A prediction equals a real run of the same engine code: the meta-device run, the fast shapes,
the fused-attention stand-in and the offload substitutions allocate what the real tensors do.

The real run is mom.profile on CPU with the tensor tracker (exact live bytes of real tensors);
the prediction is made without the calibrated allowance, on a card too large to matter. Unlike
the H100 comparison (test_accuracy.py), this follows every change of the engine.
"""

from __future__ import annotations

import pytest
import torch

import mom
from mom.simulate import calibration

SHAPE = dict(hidden_size=256, intermediate_size=704, num_hidden_layers=4, vocab_size=2048)
BASELINE, STREAM = mom.MomConfig(), mom.MomConfig(mini_sequences=4, offload="stream")
CASES = [(name, cfg) for name in mom.TINY_PRESETS for cfg in (BASELINE, STREAM)] + [
    ("tiny-llama", mom.MomConfig(mini_sequences=4)),
    ("tiny-llama", mom.MomConfig(mini_sequences=4, offload="auto", kv_gpu_budget=1 << 20)),
]


@pytest.fixture(scope="module")
def models():
    return {}


@pytest.mark.parametrize("name, cfg", CASES, ids=lambda x: x if isinstance(x, str) else x.describe())
def test_predicted_bytes_are_the_real_runs(name, cfg, models, monkeypatch):
    """Every family (tiny-mistral's sliding window: a dense mask and its additive copy included)."""
    monkeypatch.setattr(calibration, "UNSEEN_BYTES", 0)
    if name not in models:
        models[name] = mom.load(name, device="cpu", **SHAPE)
    model = models[name]
    real = mom.profile(model, cfg, context=2048, new_tokens=3, record=False)
    predicted = mom.predict(model.config, cfg, context=2048, new_tokens=3, dtype=torch.float32, gpu="custom-64GiB")
    # the allocator model rounds to 512 B blocks and counts unsplit blocks whole: a little above
    assert predicted.peak_gpu_bytes == pytest.approx(real.peak_gpu_bytes, rel=0.03)
    assert predicted.prefill_peak_bytes == pytest.approx(real.prefill_peak_bytes, rel=0.03)
    assert predicted.peak_host_bytes == real.peak_host_bytes
