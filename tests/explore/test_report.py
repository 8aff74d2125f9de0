"""The HTML report is self-contained and deterministic; the demo writes one from real runs."""

from __future__ import annotations

from mom.explore import report
from mom.memory.events import MiB

from . import synthetic


def runs():
    return [synthetic.profile("baseline", 4096, 40 * MiB), synthetic.profile("M=4", 4096, 30 * MiB)]


def test_report_is_offline_and_deterministic(tmp_path):
    path = report.write_report(runs(), tmp_path / "sub" / "r.html", weights_by_layer=synthetic.weights())
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert 'src="http' not in text  # plotly.js is embedded, not fetched
    assert text.count("mom-figure-") >= 2
    assert "M=4 against the baseline at 4096 tokens" in text and "0.75x" in text
    assert report.report_html(runs(), weights_by_layer=synthetic.weights()) == report.report_html(
        runs(), weights_by_layer=synthetic.weights())


def test_terminal_table():
    table = report.terminal_table(runs())
    assert "baseline" in table and "30.00 MiB" in table and "OOM" not in table


def test_demo_on_cpu(tmp_path):
    from mom.explore import run_demo

    result = run_demo(context=512, new_tokens=2, path=tmp_path / "demo.html", device="cpu")
    baseline, mom_run = result.profiles
    assert result.path.exists() and "model: tiny-llama" in result.path.read_text()
    assert mom_run.peak_gpu_bytes < baseline.peak_gpu_bytes
    assert "M=16, trim, offload=auto" in result.table


def test_header_names_the_preset_and_one_device_vocabulary():
    run = synthetic.profile("M=4", 4096, 30 * MiB)
    run.model_name, run.device_name = "tiny-llama", "cpu (tensor tracker)"
    text = report.report_html([run])
    assert "model: tiny-llama" in text
    assert "device: cpu, measured by mom&#x27;s tensor tracker" in text
    assert "(tracker)" not in text


def test_the_report_uses_the_one_table_renderer():
    base = synthetic.profile("baseline", 4096, 38 * MiB, oom=True)
    text = report.report_html([base, synthetic.profile("M=4", 4096, 30 * MiB)])
    assert text.count("class='mom-table'") == 2  # the runs, and M=4 against the baseline
    assert "color:#d62728;font-weight:600'>OOM<" in text


def test_the_report_draws_runs_at_one_context_side_by_side():
    text = report.report_html(runs(), weights_by_layer=synthetic.weights())
    assert "Memory per layer, 4096 tokens" in text
