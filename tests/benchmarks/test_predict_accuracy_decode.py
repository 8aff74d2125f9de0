"""predict_accuracy.py's decode record: measured rounds against the prediction, on CPU (no GPU run)."""

from __future__ import annotations

import predict_accuracy

from mom.simulate import GPUS


def test_decode_record_compares_the_median_of_round_medians():
    record = predict_accuracy._decode_record("llama-3.1-8b", "hf", 4096, 32, GPUS["H100-80GB"], [0.025, 0.1, 0.026])
    assert record["measured_median_s"] == 0.026
    assert record["predicted_path"].startswith("eager") and record["calibration"]["path"] == "hf"
    assert record["within_15_pct"] and record["in_range"]
    assert abs(record["error_pct"] - 100 * (record["predicted_s"] / 0.026 - 1)) < 1e-9


def test_decode_record_without_a_measurement_keeps_the_prediction():
    record = predict_accuracy._decode_record("llama-3.1-8b", "mom-auto", 4096, 32, GPUS["H100-80GB"], [])
    assert "measured_median_s" not in record and record["predicted_path"].startswith("graph")
