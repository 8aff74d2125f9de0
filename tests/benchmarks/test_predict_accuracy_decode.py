"""predict_accuracy.py's decode record: measured rounds against the prediction, on CPU (no GPU run)."""

from __future__ import annotations

import predict_accuracy
import pytest

from mom.simulate import GPUS


def test_decode_record_compares_the_median_of_round_medians():
    """Rounds at never-decoded lengths (hf on an H100 pays cuDNN's plan per length: ~60-66 ms)."""
    record = predict_accuracy._decode_record("llama-3.1-8b", "hf", 4096, 32, GPUS["H100-80GB"], [0.0585, 0.2, 0.062])
    assert record["measured_median_s"] == 0.062
    assert record["predicted_path"].startswith("eager") and record["calibration"]["path"] == "hf"
    assert record["within_15_pct"] and record["in_range"]
    assert abs(record["error_pct"] - 100 * (record["predicted_s"] / 0.062 - 1)) < 1e-9
    far = predict_accuracy._decode_record("llama-3.1-8b", "hf", 4096, 32, GPUS["H100-80GB"], [0.02, 0.02, 0.02])
    assert not far["within_15_pct"]


def test_decode_record_without_a_measurement_keeps_the_prediction():
    record = predict_accuracy._decode_record("llama-3.1-8b", "mom-auto", 4096, 32, GPUS["H100-80GB"], [])
    assert "measured_median_s" not in record and record["predicted_path"].startswith("graph")


def test_decode_record_compares_a_median_with_the_steady_step():
    """The paper's config reloads its offloaded cache on the first step: a streamer's median step
    has no reload, so it is judged against the steady step; the mean is kept beside it."""
    record = predict_accuracy._decode_record("llama-3.1-8b", "mom-paper", 131072, 32, GPUS["H100-80GB"], [0.0175])
    assert record["predicted_reload_s"] > 0 and record["predicted_mean_s"] > record["predicted_s"]
    assert record["predicted_mean_s"] - record["predicted_s"] == pytest.approx(record["predicted_reload_s"] / 31)
    low, high = record["predicted_range_s"]
    assert low <= record["predicted_s"] <= high
    assert record["error_pct"] == pytest.approx(100 * (record["predicted_s"] / 0.0175 - 1))
