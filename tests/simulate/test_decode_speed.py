"""Decode speed predictions against the committed H100 decode repeats (issue 13: within 15%).

The file (benchmarks/results/2026-11-28_h100_decode_repeats.json) times llama-3.1-8b through
generate() on an NVIDIA H100 80GB HBM3, three interleaved rounds of each variant at 4k and 128k,
code c61a3df. The target per case is the median over rounds of each round's median step: the
steady step (a round's mean also holds the first step's reload, which the current auto
placement no longer does). That engine predates the graph decode path (f3f6311), so its mom
variants are predicted with decode_graph=False: eager, as they ran.

The host term is calibrated on the 4k runs of the same file (calibration.host_cost), so the 4k
cases check the rule and the packaging; the 128k cases are not in the fit and check max(device,
host) against the data.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
from pathlib import Path

import pytest

import mom
from mom.simulate import calibration, speed

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
REPEATS = RESULTS / "2026-11-28_h100_decode_repeats.json"
AS_MEASURED = {  # the file's engine had no graph decode path
    "hf": mom.MomConfig(),
    "mom-auto": mom.MomConfig(mini_sequence_size=4096, offload="auto", decode_graph=False),
}
CASES = [(variant, context) for variant in AS_MEASURED for context in (4096, 131072)]


def measured_median(variant: str, context: int) -> float:
    """Median over the generate() rounds of each round's median decode step, in seconds."""
    runs = json.loads(REPEATS.read_text())["runs"]
    medians = [r["decode_median_s_per_token"] for r in runs
               if r["variant"] == variant and r["context"] == context and r.get("clock") == "generate+streamer"]
    assert len(medians) >= 3, f"{variant} at {context}: {len(medians)} rounds in {REPEATS.name}"
    return statistics.median(medians)


@pytest.fixture(scope="module")
def predicted():
    cache = {}

    def get(variant: str, context: int, config: mom.MomConfig | None = None):
        key = (variant, context, config)
        if key not in cache:
            cache[key] = mom.predict("llama-3.1-8b", config or AS_MEASURED[variant], context=context,
                                     new_tokens=32, gpu="H100-80GB")
        return cache[key]

    return get


@pytest.mark.parametrize("variant,context", CASES, ids=lambda v: str(v))
def test_decode_within_15_percent_of_the_h100_medians(variant, context, predicted):
    """mom-auto against the median of its rounds; hf, whose prediction is for lengths new to the
    process (cuDNN's plan per key length, calibration.cold_cost), against the file's first round,
    the one that decoded them first; its later rounds (warm) lie in the predicted range."""
    prediction = predicted(variant, context)
    measured = measured_median(variant, context) if variant != "hf" else first_round(variant, context)
    step = 1 / prediction.decode_tokens_per_s
    assert abs(step / measured - 1) <= 0.15, f"{variant} at {context}: predicted {step:.4f} s, measured {measured:.4f} s"
    low, high = prediction.decode_s_per_token_range
    assert low <= measured <= high and low <= measured_median(variant, context) <= high
    assert prediction.decode_path.startswith("eager")


def first_round(variant: str, context: int) -> float:
    [run] = [r for r in json.loads(REPEATS.read_text())["runs"] if r["variant"] == variant and r["context"] == context
             and r.get("clock") == "generate+streamer" and r["round"] == 0]
    return run["decode_median_s_per_token"]


FRESH = RESULTS / "2026-12-07_h100_decode_speed_fresh.json"  # every run at never-decoded lengths


def fresh_median(variant: str, context: int) -> float:
    medians = [r["decode_median_s_per_token"] for r in json.loads(FRESH.read_text())["runs"]
               if r["variant"] == variant and r["context"] == context and isinstance(r["round"], int)]
    assert len(medians) == 3
    return statistics.median(medians)


@pytest.mark.parametrize("context", [4096, 131072])
def test_hf_within_15_percent_where_every_length_is_new(context, predicted):
    """A user's generate(): the fresh run at 866ddc4 (another lease than the calibration's), `hf`
    with cuDNN's plan at every step. Without the cold term the 4k prediction was -56%."""
    step = 1 / predicted("hf", context).decode_tokens_per_s
    assert abs(step / fresh_median("hf", context) - 1) <= 0.15, (context, step, fresh_median("hf", context))


def test_a_sum_of_host_and_device_would_miss_where_max_does_not(predicted):
    """The data's reason for max(): `mom-eager` at never-decoded lengths (no cuDNN plans) took
    23.1 ms at 4k and 24.4 at 128k while its GPU time grew by 5.3 ms; a host term fitted for a
    sum at 4k overshoots 128k, max() does not."""
    eager = dataclasses.replace(AS_MEASURED["mom-auto"], decode_graph=False)

    def device(context):
        prediction = predicted("mom-eager", context, eager)
        kv_device, _, _ = speed._decode_kv(prediction)
        return speed.device_seconds(prediction.weights_bytes, kv_device, False, mom.simulate.GPUS["H100-80GB"])

    as_a_sum = fresh_median("mom-eager", 4096) - device(4096) + device(131072)
    assert as_a_sum / fresh_median("mom-eager", 131072) - 1 > 0.15
    as_max = 1 / predicted("mom-eager", 131072, eager).decode_tokens_per_s
    assert abs(as_max / fresh_median("mom-eager", 131072) - 1) <= 0.15


COLD = [RESULTS / "2026-12-07_h100_decode_split_fresh.json", RESULTS / "2026-12-07_h100_decode_split_fresh_nocudnn.json"]


def test_packaged_cold_data_is_what_the_results_files_give():
    expected = calibration.cold_reference(*(json.loads(p.read_text()) for p in COLD))
    assert calibration._packaged_cold() == expected  # else rerun the extraction
    cost = calibration.cold_cost()
    assert cost.runs == 4 and 0.03 < cost.low_s <= cost.seconds <= cost.high_s < 0.05


def test_the_eager_device_constants_are_the_measured_rates():
    """speed.py's shares are calibration.eager_device_rates of the packaged busy times, rounded."""
    weights = json.loads(FRESH.read_text())["bytes_per_step"]["4096"]["weights"]
    rates = calibration.eager_device_rates(weights, 131072, mom.simulate.GPUS["H100-80GB"].hbm_bytes_per_s)
    assert rates["weights_share"] == pytest.approx(speed.WEIGHTS_HBM_SHARE, abs=0.005)
    assert rates["kv_share"] == pytest.approx(speed.KV_HBM_SHARE, abs=0.005)
    assert rates["cat_traffic"] == pytest.approx(speed.CAT_TRAFFIC, abs=0.005)


@pytest.mark.parametrize("config,gpu,pays", [
    (mom.MomConfig(), "H100-80GB", True),
    (mom.MomConfig(), "A100-80GB", False),  # sdpa starts with flash there
    (mom.MomConfig(mini_sequence_size=4096, decode_graph=False), "H100-80GB", False),  # mom's decode has no cuDNN sdpa
])
def test_the_cold_length_term_where_it_applies(config, gpu, pays):
    prediction = mom.predict("llama-3.1-8b", config, context=4096, new_tokens=8, gpu=gpu)
    assert ("decode_cold_length" in prediction.calibration) is pays
    assert ("cuDNN's sdpa plan" in prediction.speed_notes[-1]) is pays


def test_packaged_decode_data_is_what_the_results_file_gives():
    packaged = calibration._packaged_decode()
    assert packaged == calibration.decode_reference(json.loads(REPEATS.read_text()))  # else rerun the extraction
    assert packaged["source"].endswith(REPEATS.name) and len(packaged["commit"]) == 40


def test_host_cost_is_the_median_of_one_path_at_the_shortest_context():
    runs = [dict(variant=v, context=c, round=0, median_s_per_token=s) for v, c, s in [
        ("hf", 4096, 0.02), ("hf", 4096, 0.04), ("hf", 4096, 0.09), ("hf", 131072, 0.5),
        ("mom-auto", 4096, 0.03), ("hf-offload", 4096, 9.0)]]
    data = dict(runs=runs, layers=10, card="card", source="file", commit="0" * 40)
    hf = calibration.host_cost("hf", data)
    assert (hf.seconds_per_layer, hf.low_per_layer, hf.high_per_layer, hf.runs) == pytest.approx((0.004, 0.002, 0.009, 3))
    assert calibration.host_cost("mom", data).seconds_per_layer == pytest.approx(0.003)
    with pytest.raises(ValueError, match="no 'other'"):
        calibration.host_cost("other", data)


def test_the_calibration_is_shown_where_it_is_used(predicted):
    prediction = predicted("hf", 4096)
    host = prediction.calibration["decode_host"]
    assert host["source"].endswith(REPEATS.name) and host["commit"].startswith("c61a3df") and host["path"] == "hf"
    assert "host-bound" in prediction.speed_notes[-1] and "c61a3df" in prediction.speed_notes[-1]


def test_graph_path_when_every_layer_is_resident(predicted):
    """auto with decode_graph on an H100 at 128k keeps all K/V resident: one graph per step, HBM-bound,
    at worst as slow as the eager step (its range's upper end)."""
    graph = predicted("mom-auto", 131072, dataclasses.replace(AS_MEASURED["mom-auto"], decode_graph=True))
    eager = predicted("mom-auto", 131072)
    assert graph.decode_path.startswith("graph")
    assert 1 / graph.decode_tokens_per_s < 1 / eager.decode_tokens_per_s
    assert graph.decode_s_per_token_range[1] == pytest.approx(eager.decode_s_per_token_range[1])
    assert "2026-12-07_h100_decode_speed_fused.json" in graph.speed_notes[-1]
    assert graph.calibration["decode_graph"]["commit"].startswith("a00f1b0")


GRAPH_RUNS = RESULTS / "2026-12-07_h100_decode_speed_fused.json"  # the fused step (Triton kernels)
GRAPH_CONFIG = mom.MomConfig(mini_sequence_size=4096, offload="auto", decode_graph=True)  # decode_speed.py's `mom`


def test_packaged_graph_data_is_what_the_results_file_gives():
    from mom.simulate.gpus import resolve_gpu

    expected = calibration.graph_reference(json.loads(GRAPH_RUNS.read_text()), resolve_gpu("H100-80GB").hbm_bytes_per_s)
    assert calibration._packaged_graph() == expected  # else rerun the extraction


@pytest.mark.parametrize("context", [4096, 131072])
def test_graph_decode_within_15_percent_of_the_h100_medians(context, predicted):
    """Both contexts are the fit (checks the rule and the packaging); the test below checks it."""
    runs = [r for r in json.loads(GRAPH_RUNS.read_text())["runs"]
            if r["variant"] == "mom" and r["context"] == context and isinstance(r["round"], int)]
    assert len(runs) >= 3 and all(r["decode"]["graph_steps"] for r in runs)
    measured = statistics.median(r["decode_median_s_per_token"] for r in runs)
    prediction = predicted("mom-graph", context, GRAPH_CONFIG)
    assert prediction.decode_path.startswith("graph")
    error = (1 / prediction.decode_tokens_per_s) / measured - 1
    assert abs(error) <= 0.15, f"graph decode at {context}: predicted {1 / prediction.decode_tokens_per_s:.4f} s vs {measured:.4f}"
    low, high = prediction.decode_s_per_token_range
    assert low <= measured <= high, f"graph decode at {context}: {measured:.4f} s outside [{low:.4f}, {high:.4f}]"


def accuracy_variants() -> dict[str, mom.MomConfig]:
    """The configs benchmarks/predict_accuracy.py measured, by variant name."""
    sys.path.insert(0, str(RESULTS.parent))
    from predict_accuracy import VARIANTS

    return VARIANTS


@pytest.mark.parametrize("family", ["qwen_fresh", "nemo"])
def test_graph_decode_of_families_never_fitted_within_15_percent(family):
    """qwen2.5-7b and mistral-nemo-12b on an H100 (cd6f000; streamer medians at never-decoded
    lengths, 32k and 128k): the calibration saw only llama-3.1-8b. The K/V read at the kernel's
    own rate predicted nemo's 128k step 14% high; at the step's growth rate, 10%."""
    report = json.loads((RESULTS / f"2026-12-07_h100_predict_accuracy_{family}.json").read_text())
    checked = 0
    for record in report["decode"]:
        if record["variant"] not in ("mom-auto", "mom-paper") or not record.get("measured_median_s"):
            continue
        prediction = mom.predict(report["model"], accuracy_variants()[record["variant"]], context=record["context"],
                                 new_tokens=32, gpu="H100-80GB")
        assert prediction.decode_path.startswith("graph")
        error = prediction.decode_step_s / record["measured_median_s"] - 1
        assert abs(error) <= 0.15, f"{report['model']} {record['variant']} {record['context']}: {error:+.1%}"
        low, high = prediction.decode_s_per_token_range
        spread = prediction.decode_reload_s / 31
        assert low - spread <= record["measured_median_s"] <= high - spread
        checked += 1
    assert checked == 4


def test_graph_range_holds_the_other_hosts_medians(predicted):
    """Another H100 host (2026-12-07, streamer clock, mom-auto with graph decode at 128k): its
    median lies in the predicted range, which is never narrower than -15% of the step."""
    other = json.loads((RESULTS / "2026-12-07_h100_predict_accuracy_decode_128k.json").read_text())
    [record] = [r for r in other["decode"] if r["variant"] == "mom-auto" and r["context"] == 131072]
    assert record["predicted_path"].startswith("graph")
    prediction = predicted("mom-graph", 131072, GRAPH_CONFIG)
    step, (low, high) = 1 / prediction.decode_tokens_per_s, prediction.decode_s_per_token_range
    assert low <= step * 0.85 + 1e-12 and low <= record["measured_median_s"] <= high


def test_graph_overhead_is_the_median_at_the_shortest_context():
    data = {**calibration._packaged_graph(), "runs": [
        dict(context=4096, round=i, median_s_per_token=s, weights=0, kv=0) for i, s in enumerate((0.010, 0.030, 0.012))
    ] + [dict(context=131072, round=0, median_s_per_token=1.0, weights=0, kv=0)]}
    cost = calibration.graph_cost(data)
    assert (cost.overhead_s, cost.low_s, cost.high_s, cost.runs) == (0.012, 0.010, 0.030, 3)


def test_graph_reads_kv_at_the_rate_the_step_grows_with_it():
    """K/V at the growth of the median step between the shortest and the longest context; with one
    context (nothing to grow), at the attention kernel's own rate."""
    packaged = calibration._packaged_graph()
    runs = [dict(context=4096, round=i, median_s_per_token=s, weights=7, kv=10**9) for i, s in enumerate((0.010, 0.011, 0.0105))]
    runs += [dict(context=131072, round=i, median_s_per_token=0.0165, weights=7, kv=13 * 10**9) for i in range(3)]
    cost = calibration.graph_cost({**packaged, "runs": runs, "replay_s": None})
    assert cost.kv_share * packaged["table_hbm_bytes_per_s"] == pytest.approx(12e9 / 0.006)
    alone = calibration.graph_cost({**packaged, "runs": runs[:3], "replay_s": None})
    assert alone.kv_share * packaged["table_hbm_bytes_per_s"] == pytest.approx(packaged["kv_kernel_bytes_per_s"])


def test_graph_overhead_splits_into_per_step_and_per_layer_by_the_replay():
    """With the replay timed alone, its excess over the reads is the graph's kernels, per layer;
    the rest of the overhead is per step. A deeper model pays more, the calibration model the
    measured overhead exactly; a file without the replay keeps it all per step."""
    packaged = calibration._packaged_graph()
    runs = [dict(context=4096, round=i, median_s_per_token=0.010, weights=0, kv=0) for i in range(3)]
    cost = calibration.graph_cost({**packaged, "runs": runs, "replay_s": 0.008, "layers": 32})
    assert cost.per_layer_s == pytest.approx(0.008 / 32) and cost.overhead_for(32) == pytest.approx(0.010)
    assert cost.overhead_for(80) == pytest.approx(0.002 + 80 * 0.008 / 32)
    assert cost.step_seconds(0, 0, 1.0, 16) == pytest.approx(0.002 + 0.004)
    flat = calibration.graph_cost({**packaged, "runs": runs, "replay_s": None})
    assert flat.per_layer_s == 0 and flat.overhead_for(80) == pytest.approx(0.010)
    fused = calibration.graph_cost()
    assert fused.layers == 32 and 0 < fused.per_layer_s * 32 < fused.overhead_s  # the replay's excess is part of it


@pytest.mark.parametrize("config,why", [
    (mom.MomConfig(), "no mom cache"),
    (mom.MomConfig(offload="auto", decode_graph=False), "decode_graph off"),
    (mom.MomConfig(offload="stream", decode_graph=True), "not resident"),
])
def test_decode_path_is_eager_and_says_why(config, why, predicted):
    prediction = predicted(config.describe(), 4096, config)
    assert prediction.decode_path.startswith("eager") and why in prediction.decode_path


def test_which_eager_host_cost_a_config_uses():
    assert speed.eager_host(mom.MomConfig()) == "hf"
    assert speed.eager_host(mom.MomConfig(mini_sequence_size=4096)) == "mom"
    assert speed.eager_host(mom.MomConfig(offload="stream")) == "mom"


def test_the_steady_step_and_the_first_steps_reload(predicted):
    """A cache offloaded in prefill (the paper's config) is reloaded on the first decode step: the
    mean (decode_tokens_per_s) spreads that reload over the steps, the steady step has none."""
    paper = predicted("mom-paper", 131072, mom.MomConfig.paper())
    assert paper.decode_reload_s > 0.05  # 16 GiB of K/V over the host link
    mean = 1 / paper.decode_tokens_per_s
    assert mean == pytest.approx(paper.decode_step_s + paper.decode_reload_s / 31)
    resident = predicted("mom-graph", 131072, GRAPH_CONFIG)
    assert resident.decode_reload_s == 0 and 1 / resident.decode_tokens_per_s == pytest.approx(resident.decode_step_s)


def test_steady_step_of_another_family_within_15_percent_of_its_h100_medians():
    """qwen2.5-7b (not in any fit) at 128k on an H100 (2026-12-07, eighth session, f1ac027):
    graph decode's streamer medians against the predicted steady step, with and without the
    prefill offload; the mean (reload spread) against the run's mean step."""
    report = json.loads((RESULTS / "2026-12-07_h100_predict_accuracy_qwen.json").read_text())
    configs = {"mom-auto": mom.MomConfig(mini_sequence_size=4096, offload="auto", decode_graph=True),
               "mom-paper": mom.MomConfig.paper()}
    for record in (r for r in report["decode"] if r["variant"] in configs):
        prediction = mom.predict("qwen2.5-7b", configs[record["variant"]], context=record["context"],
                                 new_tokens=32, gpu="H100-80GB")
        assert prediction.decode_path.startswith("graph")
        error = prediction.decode_step_s / record["measured_median_s"] - 1
        assert abs(error) <= 0.15, f"{record['variant']}: steady step {prediction.decode_step_s:.4f} s vs {record['measured_median_s']:.4f}"
    [paper_run] = [r for r in report["runs"] if r["variant"] == "mom-paper" and r["context"] == 131072]
    prediction = mom.predict("qwen2.5-7b", configs["mom-paper"], context=131072, new_tokens=32, gpu="H100-80GB")
    assert abs((1 / prediction.decode_tokens_per_s) / paper_run["measured"]["decode_s_per_token"] - 1) <= 0.15
