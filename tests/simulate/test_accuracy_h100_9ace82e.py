"""mom.predict against the eleventh session's H100 run (commit 9ace82e), on a CPU: `mom`
(C=4096, trim, offload="auto") at 917,504 tokens with 32 greedy tokens, the first try of a
maximum-context search cut off by the lease (…_max_context_mom_cut.json). A context seven times
the longest the calibration saw (128k-256k): peak within 3%, TTFT and decode within 15%
(issue 13's bars), the peak on the card's exact memory with 4 GiB of it left.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

import mom
from mom.simulate import GPUS

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
GiB = 1 << 30
REPORT = json.loads((RESULTS / "2026-12-07_h100_max_context_mom_cut.json").read_text())
sys.path.insert(0, str(RESULTS.parent))
from generate_clock import mom_configs  # noqa: E402  (the configs the runs measured)


@pytest.fixture(scope="module")
def run_and_prediction():
    run = next(r for r in REPORT["runs"] if r["context"] == 917_504)
    provenance = REPORT["provenance"]
    card = dataclasses.replace(GPUS["H100-80GB"], total_bytes=provenance["device_total_bytes"])
    predicted = mom.predict(REPORT["model"], mom_configs(REPORT["args"]["piece"])["mom"], context=run["context"],
                            new_tokens=run["new_tokens"], gpu=card, host_bytes=provenance["host_ram_bytes"])
    return run, predicted


def test_the_file_is_the_eleventh_sessions_run():
    assert REPORT["provenance"]["commit"] == "9ace82eadb5f984962dabc09af9923e387656764"
    assert REPORT["provenance"]["device"] == "NVIDIA H100 80GB HBM3" and REPORT["model"] == "llama-3.1-8b"


def test_917504_tokens_peak_ttft_and_decode(run_and_prediction):
    run, predicted = run_and_prediction
    assert not run["oom"] and not predicted.oom
    assert predicted.peak_gpu_bytes / GiB == pytest.approx(run["peak_gib"], rel=0.03)
    assert predicted.ttft_s == pytest.approx(run["ttft_s"], rel=0.15)
    assert predicted.decode_tokens_per_s == pytest.approx(run["decode_tokens_per_s"], rel=0.15)
    lo, hi = predicted.ttft_range_s
    assert lo <= run["ttft_s"] <= hi
