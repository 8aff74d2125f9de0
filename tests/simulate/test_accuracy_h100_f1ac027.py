"""Predictions against H100 runs of the engine as it is now (eighth session, commit f1ac027;
`mom/engine` has not changed since). Issue 13's targets, checked on runs the calibration never saw:

- Tables 1-4 (benchmarks/results/2026-12-07_h100_paper_tables_round1.json): llama-3.1-8b at 48k,
  80k, 112k and 144k with 200 greedy tokens through generate(): peaks within 3%, TTFT within 15%,
  decode (the mean over 199 steps) within 15% for mom's variants and for `standard` (every
  position's logits, logits_to_keep=0; the first run at each context, so at cold lengths, as the
  prediction of transformers' decode assumes). `hf` and `hf-chunked` ran at lengths `standard` had
  just decoded (cuDNN's plans warm, tables.WARM_NOTE): their decode is held only to the predicted
  range. `hf-chunked` (prefill_chunk_size=8192): peaks within 3% at every context; its masked
  attention's rate is fitted at 144k (speed.CHUNKED_ATTENTION_SHARE, refitted here), so TTFT is
  checked at 80k and 112k; at 48k it is -22% (a short prefill's fixed costs; hf's own is -5%).
- The maximum contexts (…_max_context_hf.json, …_max_context_mom_paper.json): within one step of
  the search's resolution.
- Another family (…_predict_accuracy_qwen.json, qwen2.5-7b at 32k and 128k): peaks within 3%,
  OOM agreement, TTFT within 15% at 128k.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

import mom
from mom.simulate import GPUS

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
GiB = 1 << 30
TABLES = json.loads((RESULTS / "2026-12-07_h100_paper_tables_round1.json").read_text())
QWEN = json.loads((RESULTS / "2026-12-07_h100_predict_accuracy_qwen.json").read_text())


def _card(report: dict):
    """The H100 row with the exact memory the run's card reported."""
    total = report["provenance"]["device_total_bytes"]
    return dataclasses.replace(GPUS["H100-80GB"], total_bytes=total)


def _configs() -> dict[str, mom.MomConfig]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from generate_clock import mom_configs

    return {"hf": mom.MomConfig(), **mom_configs(TABLES["args"]["piece"])}


PREDICTED_VARIANTS = ("standard", "hf", "hf-chunked", "mom-paper", "mom")
TABLE_RUNS = [r for r in TABLES["runs"] if r["variant"] in PREDICTED_VARIANTS]
LOGITS_TO_KEEP = {"standard": 0}  # the paper's Standard: every position's logits
CHUNK = {"hf-chunked": TABLES["args"]["chunk"]}  # generate(prefill_chunk_size=8192)
TRANSFORMERS_DECODE_WARM = ("hf", "hf-chunked")


def test_the_files_are_the_eighth_sessions_runs():
    assert TABLES["provenance"]["commit"] == QWEN["commit"] == "f1ac0274ddeda4ea1069e4322cc66185bbf2edde"
    assert len(TABLE_RUNS) == 20 and not any(r["oom"] for r in TABLE_RUNS)


@pytest.fixture(scope="module")
def table_predictions():
    configs, card = {**_configs(), "standard": mom.MomConfig(), "hf-chunked": mom.MomConfig()}, _card(TABLES)
    return {(r["context"], r["variant"]): mom.predict("llama-3.1-8b", configs[r["variant"]], context=r["context"],
                                                        new_tokens=TABLES["args"]["new_tokens"], gpu=card,
                                                        logits_to_keep=LOGITS_TO_KEEP.get(r["variant"], 1),
                                                        prefill_chunk_size=CHUNK.get(r["variant"]))
            for r in TABLE_RUNS}


@pytest.mark.parametrize("run", TABLE_RUNS, ids=lambda r: f"{r['variant']}-{r['context']}")
def test_paper_contexts_peak_and_ttft(run, table_predictions):
    predicted = table_predictions[run["context"], run["variant"]]
    assert not predicted.oom
    assert predicted.peak_gpu_bytes / GiB == pytest.approx(run["peak_gib"], rel=0.03)
    if not (run["variant"] == "hf-chunked" and run["context"] in (48000, 144000)):  # 144k: the fit; 48k: docstring
        assert predicted.ttft_s == pytest.approx(run["ttft_s"], rel=0.15)


def test_the_chunked_attention_rate_is_what_the_file_gives():
    """speed.CHUNKED_ATTENTION_SHARE refitted: the attention's FLOPs over the seconds hf-chunked's
    TTFT at 144k leaves after the prefill's linear part."""
    from mom.simulate import speed
    from mom.simulate.fake import model_config

    [run] = [r for r in TABLE_RUNS if r["variant"] == "hf-chunked" and r["context"] == 144000]
    config, card = model_config("llama-3.1-8b")[0], GPUS["H100-80GB"]
    linear, attention = speed.prefill_flops(config, 144000, 1)
    linear_s = linear / (card.bf16_flops * speed.MATMUL_SHARE)
    assert attention / ((run["ttft_s"] - linear_s) * card.bf16_flops) == pytest.approx(speed.CHUNKED_ATTENTION_SHARE, rel=0.002)
    chunked, why = speed.prefill_seconds(config, 144000, 1, card, chunk=8192)
    assert chunked == pytest.approx(run["ttft_s"], rel=0.002) and "8,192-token chunks" in why
    with pytest.raises(ValueError, match="prefill_chunk_size"):
        mom.predict("tiny-llama", context=64, prefill_chunk_size=0)


@pytest.mark.parametrize("run", [r for r in TABLE_RUNS if r["variant"] not in TRANSFORMERS_DECODE_WARM],
                         ids=lambda r: f"{r['variant']}-{r['context']}")
def test_paper_contexts_decode_within_15_percent(run, table_predictions):
    predicted = table_predictions[run["context"], run["variant"]]
    assert predicted.decode_path.startswith("eager" if run["variant"] == "standard" else "graph")
    assert 1 / predicted.decode_tokens_per_s == pytest.approx(1 / run["decode_tokens_per_s"], rel=0.15)


def test_every_positions_logits_cost_their_bytes_and_flops(table_predictions):
    """`standard` against `hf` at 144k: the bf16 logits of every position (144,000 x 128,256 x 2 B)
    on top, and the LM head's FLOPs over every position in TTFT."""
    standard, hf = table_predictions[144000, "standard"], table_predictions[144000, "hf"]
    assert standard.peak_gpu_bytes - hf.peak_gpu_bytes > 144000 * 128256 * 2 * 0.5
    assert 0.1 < standard.ttft_s - hf.ttft_s < 0.5  # measured: 14.14 against 13.80 s
    with pytest.raises(ValueError, match="logits_to_keep"):
        mom.predict("tiny-llama", context=64, logits_to_keep=-1)


@pytest.mark.parametrize("run", [r for r in TABLE_RUNS if r["variant"] in TRANSFORMERS_DECODE_WARM],
                         ids=lambda r: f"{r['variant']}-{r['context']}")
def test_paper_contexts_warm_decode_lies_in_the_range(run, table_predictions):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import tables

    assert tables.warm_lengths(TABLES["runs"], run)  # `standard` decoded these lengths first
    low, high = table_predictions[run["context"], run["variant"]].decode_s_per_token_range
    assert low <= 1 / run["decode_tokens_per_s"] <= high


@pytest.mark.parametrize("name,variant", [("hf", "hf"), ("mom_paper", "mom-paper")])
def test_maximum_context_within_one_step(name, variant):
    report = json.loads((RESULTS / f"2026-12-07_h100_max_context_{name}.json").read_text())
    search = report["searches"][variant]
    assert search["done"] and search["wall"] == "gpu" and search["failing_above"] - search["maximum"] == search["resolution"]
    config = _configs()[variant]
    predicted = mom.simulate.max_context("llama-3.1-8b", config, _card(report), host_bytes=report["provenance"]["host_ram_bytes"],
                                         resolution=report["args"]["fine"])
    if predicted >= report["args"]["switch"]:
        predicted = predicted // report["args"]["coarse"] * report["args"]["coarse"]
    assert predicted == search["predicted"]  # what the search started from, reproduced on a CPU
    assert abs(predicted - search["maximum"]) <= search["resolution"]


@pytest.mark.parametrize("run", QWEN["runs"], ids=lambda r: f"{r['variant']}-{r['context']}")
def test_another_family_peak_oom_and_ttft(run):
    measured, predicted = run["measured"], run["predicted"]
    config = {"hf": mom.MomConfig(), "mom-auto": mom.MomConfig(mini_sequence_size=4096, offload="auto", decode_graph=True),
              "mom-paper": mom.MomConfig.paper()}[run["variant"]]
    card = dataclasses.replace(GPUS["H100-80GB"], total_bytes=int(QWEN["environment"]["gpu_total_gib"] * GiB))
    now = mom.predict("qwen2.5-7b", config, context=run["context"], new_tokens=32, gpu=card)
    assert now.oom == measured["oom"] == predicted["oom"]
    assert now.peak_gpu_bytes / GiB == pytest.approx(measured["peak_gib"], rel=0.03)
    if run["context"] == 131072:
        assert now.ttft_s == pytest.approx(measured["ttft_s"], rel=0.15)
