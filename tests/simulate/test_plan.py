"""mom.plan and `mom plan`: configurations ranked by predicted speed, maximum context per mode."""

from __future__ import annotations

import json

import pytest

import mom
import mom.simulate
import mom.simulate.fake
from mom.cli import main
from mom.simulate.plan import _host_wall, max_context

GiB = 1 << 30


@pytest.fixture(scope="module")
def small_card_plan():
    return mom.plan("llama-3.2-1b", gpu="custom-8GiB", host_bytes=16 * GiB, context=65536, max_contexts=False)


def test_fitting_configurations_come_fastest_first(small_card_plan):
    plan = small_card_plan
    assert plan.rows and all(row.fits for row in plan.rows)
    totals = [row.total_s for row in plan.rows]
    assert totals == sorted(totals)
    for row in plan.rows:
        assert row.peak_gpu_bytes <= plan.usable_bytes and row.ttft_s > 0 and row.decode_s_per_token > 0


def test_configurations_that_do_not_fit_say_which_wall(small_card_plan):
    rejected = {row.label: row for row in small_card_plan.rejected}
    assert "baseline" in rejected and rejected["baseline"].wall == "device"  # 64k tokens without mini-sequences: too big
    assert all(not row.fits and row.error for row in rejected.values())
    assert "offload=stream" in " ".join(row.label for row in small_card_plan.rows)


def test_plan_table_and_json(small_card_plan):
    table = small_card_plan.table()
    assert "custom-8GiB" in table and "baseline" in table and "no (device)" in table
    data = json.loads(json.dumps(small_card_plan.to_dict()))
    assert data["context"] == 65536 and len(data["rows"]) + len(data["rejected"]) == 5


def test_maximum_context_of_hf_on_the_h100_is_where_notebook_03_found_it():
    # notebook 03 on the H100 (benchmarks/results/notebooks): 196,608 tokens pass, 262,144 fail
    found = max_context("llama-3.1-8b", mom.MomConfig(), "H100-80GB", resolution=8192)
    assert 196608 <= found < 262144


def test_maximum_context_is_a_pass_with_a_failure_one_step_up():
    cfg = mom.MomConfig(mini_sequences=8, offload="stream")
    found = max_context("llama-3.2-1b", cfg, "custom-4GiB", resolution=16384)
    assert not mom.predict("llama-3.2-1b", cfg, context=found, gpu="custom-4GiB").oom
    assert mom.predict("llama-3.2-1b", cfg, context=found + 16384, gpu="custom-4GiB").oom


def test_the_host_wall_is_the_engines_rule():
    cfg = mom.MomConfig(mini_sequences=8, offload="stream")
    wall = _host_wall(mom.simulate.fake.model_config("llama-3.2-1b")[0], cfg, 1, 4 * GiB, 8192)
    assert not mom.predict("llama-3.2-1b", cfg, context=wall, host_bytes=4 * GiB, gpu="custom-40GiB").oom
    assert mom.predict("llama-3.2-1b", cfg, context=wall + 8192, host_bytes=4 * GiB).oom_kind == "host"


def test_cli_plan_prints_a_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "plan.json"
    code = main(["plan", "--model", "llama-3.2-1b", "--gpu", "custom-8GiB", "--host-gib", "16", "--context",
                 "16384", "--no-max-context", "--json", str(out)])
    assert code == 0
    assert "llama-3.2-1b on custom-8GiB" in capsys.readouterr().out
    assert json.loads(out.read_text())["gpu"] == "custom-8GiB"


def test_cli_plan_refuses_an_unknown_card(capsys):
    assert main(["plan", "--gpu", "H100-81GB", "--no-max-context"]) == 2
    assert "unknown GPU 'H100-81GB'" in capsys.readouterr().err


def test_a_host_wall_costs_two_predictions_and_is_a_wall():
    """stream on a host smaller than the card's reach: the engine's rule refuses one step above
    the arithmetic wall and the card holds the wall itself (reach.py, step 1)."""
    cfg = mom.MomConfig(mini_sequences=8, offload="stream")
    wall = _host_wall(mom.simulate.fake.model_config("llama-3.2-1b")[0], cfg, 1, 4 * GiB, 8192)
    result = mom.simulate.find_max_context("llama-3.2-1b", cfg, "custom-40GiB", host_bytes=4 * GiB, resolution=8192)
    assert [p.context for p in result.tries] == [wall + 8192, wall]
    assert result.maximum == wall and result.limit_reached and result.wall == "host"


def test_a_host_wall_the_card_cannot_hold_is_searched_below_it():
    cfg = mom.MomConfig(mini_sequences=8, offload="prefill")  # decode reloads every layer onto a small card
    wall = _host_wall(mom.simulate.fake.model_config("llama-3.2-1b")[0], cfg, 1, 64 * GiB, 16384)
    result = mom.simulate.find_max_context("llama-3.2-1b", cfg, "custom-4GiB", host_bytes=64 * GiB, resolution=16384)
    assert result.maximum < wall and result.wall == "device"
    assert result.first_failure_above.context == result.maximum + 16384


def test_a_maximum_at_the_search_cap_reads_as_a_bound():
    plan = mom.plan("llama-3.2-1b", gpu="H100-80GB", host_bytes=512 * GiB, context=16384, high=65536)
    assert plan.max_context["stream"] == 65536 and "stream" in plan.max_context_capped
    row = next(line for line in plan.table().splitlines() if line.startswith("M=16, trim, offload=stream"))
    assert row.endswith(">= 65,536")
    assert all(plan.max_context[key] == 65536 for key in plan.max_context_capped)


def test_find_max_context_answers_like_the_measured_search():
    seen = []
    cfg = mom.MomConfig(mini_sequences=8, offload="stream")
    result = mom.simulate.find_max_context("llama-3.2-1b", cfg, "custom-4GiB", resolution=16384, on_try=seen.append)
    assert isinstance(result, mom.MaxContextResult) and result.limit_reached
    assert seen == result.tries and all(isinstance(p, mom.Prediction) for p in seen)
    assert result.maximum == max(p.context for p in seen if not p.oom)
    assert result.first_failure_above.context == result.maximum + 16384


def test_a_model_whose_weights_do_not_fit_says_so_and_how_many_cards_would_do():
    plan = mom.plan("llama-3.1-70b", gpu="H100-80GB", host_bytes=256 * GiB, context=262144, max_contexts=False)
    assert not plan.rows and len(plan.rejected) == 5
    assert "the weights alone (131.42 GiB) do not fit this card" in plan.table()
    fewest = plan.fewest_gpus
    assert fewest.fits and fewest.gpus == 3 and fewest.config["offload"] == "auto"
    assert len(fewest.peak_by_device) == 3 and max(fewest.peak_by_device.values()) <= plan.usable_bytes
    two = mom.predict("llama-3.1-70b", mom.MomConfig(**{k: v for k, v in fewest.config.items()}), context=262144,
                      gpu="H100-80GB", host_bytes=256 * GiB, gpus=2, every_piece=False)
    assert two.oom  # two cards do not: three is the fewest
    assert "the fewest that fit: 3x H100-80GB, with M=16, trim, offload=auto" in plan.table()
    assert plan.to_dict()["fewest_gpus"]["gpus"] == 3


def test_when_no_count_of_cards_would_do_the_plan_says_what_would():
    plan = mom.plan("llama-3.1-8b", gpu="custom-1GiB", context=32768, max_contexts=False)
    assert not plan.rows and plan.fewest_gpus is None and plan.fewest_gpus_searched == 8
    assert "no count of custom-1GiB up to 8 runs this context" in plan.table()
    plan = mom.plan("llama-3.1-8b", gpu="custom-1GiB", context=32768, max_contexts=False, fewest_gpus=False)
    assert plan.fewest_gpus_searched is None and "not searched" in plan.table()


def test_a_reserve_near_the_card_is_marked():
    """What runs out is the allocator's reserve, not the allocated peak: at 221,184 tokens the
    baseline's allocated peak (66.6 GiB) leaves 11.8 GiB of an H100, its reserve 0.4 GiB (the
    card passed there and failed one step up, benchmarks/results/2026-12-07_h100_max_context_hf.json)."""
    from mom.simulate.plan import NEAR_THE_WALL_NOTE

    near = mom.plan("llama-3.1-8b", gpu="H100-80GB", context=221184, max_contexts=False)
    [baseline] = [row for row in near.rows if row.label == "baseline"]
    assert baseline.peak_reserved_bytes - baseline.peak_gpu_bytes > 10 * GiB
    assert 0 < near.usable_bytes - baseline.peak_reserved_bytes < GiB // 2
    table = near.table()
    assert NEAR_THE_WALL_NOTE in table and [line for line in table.splitlines() if " *" in line][0].startswith("baseline")
    far = mom.plan("llama-3.1-8b", gpu="H100-80GB", context=131072, max_contexts=False)
    assert NEAR_THE_WALL_NOTE not in far.table() and "reserved" in far.table()


def test_the_search_starts_from_a_prediction_already_made():
    """mom.plan has each configuration's prediction at the planned context: the search grows from
    it (no 16k, 64k, ... below it) and answers what the search from one step answers."""
    cfg = mom.MomConfig(mini_sequences=8, offload="none")
    known = mom.predict("llama-3.2-1b", cfg, context=65536, gpu="custom-8GiB")
    assert not known.oom
    cold = mom.simulate.find_max_context("llama-3.2-1b", cfg, "custom-8GiB", resolution=16384)
    warm = mom.simulate.find_max_context("llama-3.2-1b", cfg, "custom-8GiB", resolution=16384, known=known)
    assert warm.tries[0] is known and min(p.context for p in warm.tries) == 65536
    assert warm.maximum == cold.maximum and warm.limit_reached
    assert warm.first_failure_above.context == warm.maximum + 16384


def test_a_failing_known_prediction_is_the_top_of_the_search():
    cfg = mom.MomConfig(mini_sequences=8, offload="none")
    cold = mom.simulate.find_max_context("llama-3.2-1b", cfg, "custom-8GiB", resolution=16384)
    above = cold.maximum + 4 * 16384
    known = mom.predict("llama-3.2-1b", cfg, context=above, gpu="custom-8GiB")
    assert known.oom
    warm = mom.simulate.find_max_context("llama-3.2-1b", cfg, "custom-8GiB", resolution=16384, known=known)
    assert warm.maximum == cold.maximum and max(p.context for p in warm.tries) == above


def test_a_known_prediction_of_another_run_is_refused():
    known = mom.predict("llama-3.2-1b", mom.MomConfig(mini_sequences=8, offload="none"), context=65536, gpu="custom-8GiB")
    with pytest.raises(ValueError, match="predicted for another run"):
        mom.simulate.find_max_context("llama-3.2-1b", mom.MomConfig(mini_sequences=8, offload="stream"), "custom-8GiB",
                                      resolution=16384, known=known)


def test_searches_in_processes_give_the_maxima_of_one_process():
    kwargs = dict(gpu="custom-8GiB", host_bytes=16 * GiB, context=65536, resolution=16384)
    serial = mom.plan("llama-3.2-1b", workers=1, **kwargs)
    spread = mom.plan("llama-3.2-1b", workers=2, **kwargs)
    assert spread.max_context == serial.max_context and spread.max_context_capped == serial.max_context_capped
    assert list(serial.max_context) == ["baseline", "none", "prefill", "stream", "auto"]


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_a_worker_count_below_one_is_refused(workers):
    with pytest.raises(ValueError, match="workers must be a number of processes"):
        mom.plan("llama-3.2-1b", gpu="custom-8GiB", context=16384, workers=workers)


def test_cli_predict_prints_the_table_and_what_it_rests_on_and_writes_json_and_report(tmp_path, capsys):
    out, report = tmp_path / "p.json", tmp_path / "p.html"
    code = main(["predict", "--model", "llama-3.2-1b", "--gpu", "custom-8GiB", "--host-gib", "16", "--context", "65536",
                 "-M", "8", "--offload", "auto", "--baseline", "--json", str(out), "--report", str(report)])
    text = capsys.readouterr().out
    assert code == 0
    assert text.startswith("llama-3.2-1b, predicted on custom-8GiB, 16 GiB of host RAM (mom.predict: no GPU used)")
    assert "tensor tracker" not in text  # no CPU-timing note: nothing was measured
    assert "M=8, trim, offload=auto: predicted on custom-8GiB: TTFT" in text and "calibration:" in text
    runs = json.loads(out.read_text())
    runs = runs["runs"] if isinstance(runs, dict) else runs
    assert [r["backend"] for r in runs] == ["predicted", "predicted"]
    page = report.read_text()
    assert "predicted by mom.predict" in page and "measured by the CUDA allocator" not in page


def test_cli_predict_says_where_a_run_runs_out_and_how_many_cards_the_weights_need(capsys):
    assert main(["predict", "--model", "llama-3.1-70b", "--context", "32768"]) == 0
    text = capsys.readouterr().out
    assert "baseline: out of memory (device) placing the weights: the weights do not fit" in text
    assert "need at least 2 of these cards" in text
    assert main(["predict", "--model", "qwen2.5-7b", "--gpu", "RTX-4090-24GB", "--context", "262144"]) == 0
    assert "baseline: out of memory (device) in layer 0, prefill:" in capsys.readouterr().out


def test_cli_predict_report_without_plotly_is_refused_before_predicting(tmp_path, capsys, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "plotly" else find_spec(name, *a))
    assert main(["predict", "--model", "llama-3.2-1b", "--report", str(tmp_path / "p.html")]) == 2
    assert "--report draws with plotly, which is not installed" in capsys.readouterr().err
    assert not (tmp_path / "p.html").exists()
