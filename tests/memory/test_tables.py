"""One table renderer: rows of display strings, drawn as aligned text or self-styled HTML."""

from __future__ import annotations

import torch
from torch import nn

from mom.memory.events import MiB, Profile
from mom.memory.sizes import storage_bytes, weight_bytes
from mom.memory.tables import html_table, metric_rows, outcome, run_label, run_rows, text_table


def _run(label: str, peak: int, **fields) -> Profile:
    return Profile("m", {"label": label}, 1024, 2, peak_gpu_bytes=peak, prefill_peak_bytes=peak, **fields)


def test_run_rows_show_what_a_failed_run_measured_and_which_wall():
    rows = run_rows([_run("baseline", 8 * MiB, ttft_s=0.5), _run("M=4", 3 * MiB, oom=True, oom_kind="device"),
                     _run("M=8", 0, oom=True, oom_kind="host"), _run("M=2", 0, cancelled=True)])
    assert [r["outcome"] for r in rows] == ["ok", "OOM", "host OOM", "cancelled"]
    assert rows[0]["peak device"] == "8.00 MiB" and rows[0]["TTFT"] == "0.500 s"
    assert rows[1]["peak device"] == "3.00 MiB" and rows[2]["prefill peak"] == "-"
    assert "TTFT" not in run_rows([_run("a", 1)], timings=False)[0]


def test_labels_carry_the_kv_budget():
    p = Profile("m", {"label": "M=8, trim, offload=auto", "kv_gpu_budget": MiB}, 1, 1)
    assert run_label(p) == "M=8, trim, offload=auto, KV budget 1.00 MiB"
    assert run_label(Profile("m", {}, 1, 1)) == "mom" and outcome(Profile("m", {}, 1, 1, error="x")) == "error"


def test_metric_rows_compare_with_the_baseline():
    rows = metric_rows(_run("M=4", 2 * MiB), _run("baseline", 8 * MiB))
    peak = rows[0]
    assert list(peak) == ["metric", "baseline", "M=4", "vs baseline"]
    assert (peak["baseline"], peak["M=4"], peak["vs baseline"]) == ("8.00 MiB", "2.00 MiB", "0.25x")
    assert rows[-1] == {"metric": "outcome", "baseline": "ok", "M=4": "ok", "vs baseline": ""}
    same = metric_rows(_run("M=4", 2 * MiB), _run("M=4", 8 * MiB))
    assert list(same[0])[1:3] == ["M=4 (1)", "M=4 (2)"]
    failed = metric_rows(_run("M=4", 2 * MiB, oom=True), _run("baseline", 8 * MiB))
    assert all(r["vs baseline"] in ("-", "") for r in failed)


def test_text_and_html_render_the_same_rows():
    rows = run_rows([_run("baseline", 8 * MiB), _run("M=4", 3 * MiB, oom=True)])
    lines = text_table(rows).splitlines()
    assert len(lines) == 4 and lines[0].startswith("configuration") and set(lines[1]) == {"-", " "}
    assert lines[2].index("8.00 MiB") + len("8.00 MiB") == lines[0].index("peak device") + len("peak device")
    page = html_table(rows, caption="runs <1>")
    assert page.count("<tr>") == 3 and page.count("<th ") == len(rows[0]) and "runs &lt;1&gt;" in page
    assert "text-align:left" in page.split("<th ")[1] and "text-align:right" in page.split("<th ")[2]
    failed_cell = next(c for c in page.split("<td ") if ">OOM<" in c)
    assert "color:" in failed_cell


def test_one_storage_counter_counts_shared_storage_once():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False))
    model[1].weight = model[0].weight
    assert weight_bytes(model) == 160
    seen: set[int] = set()
    assert weight_bytes(model[0], seen) == 160 and weight_bytes(model[1], seen) == 0  # tied: counted once
    x = torch.zeros(100)
    assert storage_bytes([x, x[10:], x.view(10, 10), torch.empty(0, device="meta")]) == 400


def test_a_profile_shows_as_one_line_and_a_metric_table_not_its_events():
    from mom.memory.events import MaxContextResult, MemoryEvent

    event = MemoryEvent(phase="prefill", step=0, layer=0, module="mlp", bytes_before=0, bytes_after=0, peak_bytes=0)
    ran = _run("M=4, trim", 3 * MiB, ttft_s=0.25, decode_tokens_per_s=40.0, events=[event] * 5000,
               device_name="cpu (tensor tracker)")
    assert repr(ran) == ("Profile(m, M=4, trim, 1,024 + 2 tokens on cpu (tensor tracker): peak 3.00 MiB, "
                         "TTFT 0.25 s, decode 40.0 tokens/s; 5,000 events)")
    assert "out of memory (host)" in repr(_run("M=8", 0, oom=True, oom_kind="host"))
    html = ran._repr_html_()
    assert "<table" in html and "3.00 MiB" in html and "mlp" not in html
    above = Profile("m", {"label": "a"}, 1536, 2, oom=True, oom_kind="device")
    search = MaxContextResult(maximum=1024, resolution=512, high=4096, tries=[_run("a", 1, events=[event] * 100), above])
    assert repr(search) == "MaxContextResult(maximum 1024 tokens (device wall), resolution 512, 2 tries: [1024, 1536])"


def test_a_prediction_keeps_the_one_line_repr():
    import mom

    p = mom.predict("tiny-llama", mom.MomConfig(mini_sequences=2), context=256, new_tokens=2, gpu="custom-1GiB")
    assert repr(p).startswith("Prediction(tiny-llama, M=2, trim, 256 + 2 tokens on custom-1GiB (predicted): peak ")
    assert len(repr(p)) < 300
