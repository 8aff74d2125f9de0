"""mom.predict against the tenth session's H100 runs (commit cd6f000), on a CPU.

- Two families the calibration never saw (…_predict_accuracy_qwen_fresh.json and
  …_predict_accuracy_nemo.json: qwen2.5-7b and mistral-nemo-12b at 32k and 128k, `hf`,
  `mom-auto` and `mom-paper`): peaks within 3%, OOM agreement, and at 128k TTFT and the mean
  decode step (the profile's, first-step reload included) within 15%: issue 13's bars.
- Two more maxima (…_max_context_std_chunked.json: `standard` and `hf-chunked`): the prediction
  the search started from, reproduced here, within one step of the measured maximum (`standard`
  one step low, `hf-chunked` one step high: 15.46 GiB stranded by DynamicCache at the wall).
The graph decode's streamer medians of the same files are checked in test_decode_speed.py.
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
COMMIT = "cd6f0009aca5dee5628f32f553335160b8c597ce"
FAMILIES = {name: json.loads((RESULTS / f"2026-12-07_h100_predict_accuracy_{name}.json").read_text())
            for name in ("qwen_fresh", "nemo")}
sys.path.insert(0, str(RESULTS.parent))
from predict_accuracy import VARIANTS as CONFIGS  # noqa: E402  (the configs the runs measured)

MAXIMA = json.loads((RESULTS / "2026-12-07_h100_max_context_std_chunked.json").read_text())


def test_the_files_are_the_tenth_sessions_runs():
    assert {report["commit"] for report in FAMILIES.values()} == {MAXIMA["provenance"]["commit"]} == {COMMIT}
    assert {report["model"] for report in FAMILIES.values()} == {"qwen2.5-7b", "mistral-nemo-12b"}
    assert all(len(report["runs"]) == 6 for report in FAMILIES.values())


@pytest.mark.parametrize("name,run", [(name, run) for name, report in FAMILIES.items() for run in report["runs"]],
                         ids=lambda v: v if isinstance(v, str) else f"{v['variant']}-{v['context']}")
def test_families_never_fitted_peak_oom_ttft_and_decode(name, run):
    report, measured = FAMILIES[name], run["measured"]
    card = dataclasses.replace(GPUS["H100-80GB"], total_bytes=int(report["environment"]["gpu_total_gib"] * GiB))
    now = mom.predict(report["model"], CONFIGS[run["variant"]], context=run["context"], new_tokens=32, gpu=card)
    assert now.oom == measured["oom"] == run["predicted"]["oom"]
    assert now.peak_gpu_bytes / GiB == pytest.approx(measured["peak_gib"], rel=0.03)
    if run["context"] == 131072:
        assert now.ttft_s == pytest.approx(measured["ttft_s"], rel=0.15)
        assert 1 / now.decode_tokens_per_s == pytest.approx(measured["decode_s_per_token"], rel=0.15)


@pytest.mark.parametrize("variant,options", [("standard", dict(logits_to_keep=0)),
                                             ("hf-chunked", dict(prefill_chunk_size=8192))])
def test_maximum_context_within_one_step(variant, options):
    """The prediction the search started from is reproduced by its bracket (a pass there, a failure
    one step up: two predictions, where the search takes a dozen), and is within one step."""
    search, args = MAXIMA["searches"][variant], MAXIMA["args"]
    assert search["done"] and search["wall"] == "gpu" and search["failing_above"] - search["maximum"] == search["resolution"]
    card = dataclasses.replace(GPUS["H100-80GB"], total_bytes=MAXIMA["provenance"]["device_total_bytes"])
    step = args["coarse"] if search["predicted"] >= args["switch"] else args["fine"]

    def predicted_oom(context: int) -> bool:
        return mom.predict("llama-3.1-8b", mom.MomConfig(), context=context, new_tokens=32, gpu=card,
                           host_bytes=MAXIMA["provenance"]["host_ram_bytes"], **options).oom

    assert not predicted_oom(search["predicted"]) and predicted_oom(search["predicted"] + step)
    assert abs(search["predicted"] - search["maximum"]) <= search["resolution"]
