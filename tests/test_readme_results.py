"""The README's results section is what benchmarks/readme_tables.py writes from the results files."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import readme_tables  # noqa: E402


def test_the_readme_results_are_generated_from_the_files():
    readme = (ROOT / "README.md").read_text()
    block = readme.split(readme_tables.BEGIN, 1)[1].split(readme_tables.END, 1)[0]
    assert block.strip() == readme_tables.section().strip(), "run: python benchmarks/readme_tables.py"


def test_only_results_naming_a_full_commit_are_used():
    assert readme_tables.known_commit({"provenance": {"commit": "HEAD"}}) is None
    assert readme_tables.known_commit({"environment": {"commit": "c445ea7"}}) is None
    full = "c61a3df3d2c58974c64d02dbe80f500d9d94dad5"
    assert readme_tables.known_commit({"provenance": {"commit": full}}) == full


FULL = "0123456789abcdef0123456789abcdef01234567"
PROV = dict(commit=FULL, dirty=False, device="NVIDIA H100 80GB HBM3", torch="2.11", transformers="5.17",
            host_ram_bytes=126 * 2**30)


def _run(variant, context, ttft, decode, peak, repeat=0, **extra):
    return dict(variant=variant, context=context, repeat=repeat, ttft_s=ttft, total_s=ttft + 199 / decode,
                decode_tokens_per_s=decode, decode_s_per_token=1 / decode, peak_gib=peak, oom=False, error=None,
                new_tokens=200, **extra)


def _write(folder, name, report):
    (folder / name).write_text(__import__("json").dumps(report))


def _paper_report(commit=FULL):
    runs = [_run("standard", 144000, 30.0 + r, 11.0, 60.0, r) for r in range(3)]
    runs += [_run("mom-paper", 144000, 31.0 + r, 11.5, 30.0, r) for r in range(3)]
    runs += [_run("hf", 144000, 30.0, 10.0, 50.0, r) for r in range(3)]
    runs += [_run("mom", 144000, 31.5, 9.0, 32.0, r) for r in range(3)]
    runs += [dict(variant="standard", context=455000, oom=True, wall="gpu", error="CUDA out of memory", repeat=0)]
    return dict(kind="paper_tables", model="llama-3.1-8b", provenance={**PROV, "commit": commit},
                args=dict(new_tokens=200, repeats=3), runs=runs)


def test_paper_tables_with_the_comparison_come_from_files_naming_a_full_commit(tmp_path):
    _write(tmp_path, "2026-12-01_h100_paper_tables.json", _paper_report())
    _write(tmp_path, "2026-12-01_h100_paper_tables_uncommitted.json", _paper_report(commit="unknown"))
    text = readme_tables.section(tmp_path)
    assert text.count("Tables 1-4 of the MOM paper measured here") == 1  # the file without a commit is ignored
    assert "| 144k | `standard` | 3 | 60.00 [60.00-60.00] | 100.0% |" in text
    assert "| 144k | `mom-paper` | 3 | 30.00 [30.00-30.00] | 50.0% |" in text
    assert "31.00 [30.00-32.00]" in text  # standard's TTFT: median [min-max] over 3 repeats
    assert "| 455k | `standard` | 0 | OOM |" in text
    assert "| 144k | `mom-paper` | mom | " in text and "/ 37.28 |" in text  # the paper's MOM TTFT at 144k (anchors)
    assert f"commit `{FULL[:12]}`" in text and "NVIDIA H100 80GB HBM3" in text
    assert "TTFT `mom` / `hf` = 1.050 (target <= 1.03: MISSED)" in text
    assert "decode tokens/s `mom` / `hf` = 0.900 (target >= 0.95: MISSED)" in text


def test_max_context_families_and_peers_tables(tmp_path):
    searches = {"mom": dict(maximum=851968, failing_above=868352, wall="host", resolution=16384, tries=2, done=True),
                "standard": dict(maximum=155648, failing_above=163840, wall="gpu", resolution=8192, tries=7, done=True),
                "hf": dict(maximum=229376, failing_above=237568, wall="gpu", resolution=8192, tries=2, done=True,
                           predicted=229376)}
    _write(tmp_path, "max.json", dict(kind="max_context", model="llama-3.1-8b", provenance=PROV, args=dict(new_tokens=32),
                                      runs=[], searches=searches))
    families = [_run(v, 32768, 2.0, 10.0, 20.0, model="qwen2.5-7b", kind="timing") for v in ("hf", "mom")]
    families += [dict(model="qwen2.5-7b", kind="exactness", variant="mom", context=32768, oom=False, error=None, passed=True,
                      worst_ratio=1.1, reference_check=dict(relative_error=2e-6, tokens_identical=True, within_1e5=True)),
                 dict(model="qwen2.5-7b", kind="agreement", variant="mom", context=32768, identical=False,
                      first_divergence=11, compared=32)]
    _write(tmp_path, "fam.json", dict(kind="families", model="qwen2.5-7b,mistral-nemo-12b", provenance=PROV,
                                      args=dict(new_tokens=32, exact_tokens=32), runs=families))
    peers = [dict(kind="compile", variant="hf-static-compile", context=4096, compile_warmup_s=45.2, oom=False, error=None),
             {**_run("hf-static-compile", 4096, 0.2, 80.0, 16.0), "kind": "timing"}]
    _write(tmp_path, "peers.json", dict(kind="peers", model="llama-3.1-8b", provenance=PROV, args={}, runs=peers))
    text = readme_tables.section(tmp_path)
    assert "| `mom` | 851,968 | 868,352 (host) | 16,384 | 2 | - | 455,000 |" not in text  # paper's MOM is mom-paper's
    assert "| `mom` | 851,968 | 868,352 (host) | 16,384 | 2 | - | - |" in text
    assert "| `standard` | 155,648 | 163,840 (gpu) | 8,192 | 7 | - | 155,000 |" in text
    assert "| `hf` | 229,376 | 237,568 (gpu) | 8,192 | 2 | 229,376 |" in text  # started from mom.predict
    assert "pass (worst ratio 1.10); mom-fp32 reference vs unpatched fp32: relative error 2.0e-06" in text
    assert "differ from token 11 of 32" in text
    assert "| 4k | `hf-static-compile` | 1 | 200 | 16.00 | 0.20 | 0.0125 | 45.2 |" in text


def test_decode_speed_table_names_the_bound_the_speedup_and_the_path(tmp_path):
    def run(variant, context, step, round_, **extra):
        return dict(variant=variant, context=context, round=round_, ttft_s=1.0, decode_median_s_per_token=step,
                    decode=extra.get("decode"))
    graph = dict(graph_steps=31, eager_steps=0, captures=2, capture_seconds=0.4, last_eager_reason=None)
    runs = [run("hf", 4096, 0.050, r) for r in range(3)] + [run("mom", 4096, 0.010, r, decode=graph) for r in range(3)]
    runs += [dict(variant="hf-static-compile", context=4096, round="compile", ttft_s=45.0)]
    report = dict(model="llama-3.1-8b", provenance=PROV, args=dict(new_tokens=32), hbm=dict(copy_gb_per_s=2000.0),
                  bytes_per_step={"4096": dict(total=10e9)}, runs=runs,
                  graph_replay=[dict(context=4096, replay_ms=6.0, repeats=50)])
    _write(tmp_path, "2026-12-07_h100_decode_speed.json", report)
    text = readme_tables.section(tmp_path)
    assert "| 4k | HBM bound | | 5.00 | 1.00 |" in text
    assert "| 4k | `graph.replay()` alone | 50 | 6.00 | 1.20 |" in text
    assert "| 4k | `mom` | 3 | 10.00 [10.00-10.00] | 2.00 | 5.00x | 1.00 | graph 31, eager 0 |" in text
    assert "| 4k | `hf` | 3 | 50.00 [50.00-50.00] | 10.00 | 1.00x | 1.00 | eager |" in text
    assert "compile): TTFT 45.0 s" in text and "capture 0.40-0.40 s" in text


def test_predict_table_shows_decode_both_clocks_and_oom_agreement(tmp_path):
    figures = dict(oom=False, error=None, peak_gib=35.0, prefill_peak_gib=20.0, ttft_s=11.6,
                   decode_s_per_token=0.0219, decode_path="graph: 30 of 31 steps replayed")
    predicted = dict(figures, peak_gib=35.1, ttft_s=11.7, decode_s_per_token=0.0193, decode_path="graph (predicted)")
    runs = [dict(variant="mom-auto", context=131072, measured=figures, predicted=predicted,
                 errors_pct=dict(oom_agrees=True, peak_gib=0.29, ttft_s=0.86, decode_s_per_token=-11.87)),
            dict(variant="hf", context=262144, measured=dict(oom=True), predicted=dict(oom=False),
                 errors_pct=dict(oom_agrees=False))]
    decode = [dict(variant="mom-auto", context=131072, measured_median_s=0.0171, predicted_s=0.0193,
                   predicted_range_s=[0.0164, 0.0745], error_pct=12.8, in_range=True, predicted_path="graph (every layer)")]
    report = dict(commit=FULL, model="llama-3.1-8b", args=dict(new_tokens=32), runs=runs, decode=decode,
                  environment=dict(card="NVIDIA H100 80GB HBM3", gpu_total_gib=79.2, torch="2.11", transformers="5.17"))
    _write(tmp_path, "2026-12-07_h100_predict_accuracy.json", report)
    text = readme_tables.section(tmp_path)
    assert "| 128k | `mom-auto` | 35.00 | 35.10 | +0.29% | 11.60 | 11.70 | +0.9% | 21.9 | 19.3 | -11.9% | graph |" in text
    assert "| 256k | `hf` | out of memory | NOT predicted |" in text
    assert "| 128k | `mom-auto` | 17.1 | 19.3 [16.4-74.5] | +12.8% | yes | graph |" in text


def test_transformers_decode_at_warm_lengths_is_marked(tmp_path):
    """A run that decodes K/V lengths an earlier run of the process decoded (cuDNN's plans warm)
    is marked, from its record or, in older files, from the file's order; mom's rows never are."""
    import tables

    recorded = [_run("hf", 48000, 2.4, 15.0, 26.0, warm_lengths=False), _run("mom", 48000, 2.4, 95.0, 22.0, warm_lengths=True),
                _run("hf-chunked", 48000, 4.7, 32.0, 22.8, warm_lengths=True)]
    rows = {r["variant"]: r["decode tokens/s"] for r in
            ({t: row[c] for t, c in zip(tables.PAPER_TITLES, tables.PAPER_COLUMNS)}
             for row in tables.paper_rows(dict(runs=recorded)))}
    assert rows == {"`hf`": "15.00", "`mom`": "95.00", "`hf-chunked`": "32.00 †"}
    older = [_run("standard", 48000, 2.5, 15.0, 32.7), _run("hf", 48000, 2.4, 25.6, 26.2), _run("hf", 80000, 5.0, 15.1, 33.7)]
    assert [tables.warm_lengths(older, r) for r in older] == [False, True, False]
    report = dict(kind="paper_tables", model="llama-3.1-8b", provenance=PROV, args=dict(new_tokens=200, repeats=1),
                  runs=older)
    text = "\n".join(tables.paper_markdown(report))
    assert "| 48k | `hf` | 1 | 26.20 |" in text and "25.60 †" in text and tables.WARM_NOTE in text


def test_predict_speed_table_judges_both_targets(tmp_path):
    import predict_speed

    runs = [dict(model="llama-3.1-8b", variant="mom", context=720896, seconds=30.0, oom=False, peak_gib=73.6)] * 10
    report = dict(kind="predict_speed", provenance=PROV, machine=dict(cpu="AMD EPYC", cpus=2, torch_threads=2),
                  runs=runs, explorer_s=[3.8, 1.5, 2.1])
    _write(tmp_path, "2026-12-07_cpu_predict_speed.json", report)
    text = readme_tables.section(tmp_path)
    assert "| `llama-3.1-8b` | `mom` | 720,896 | 30.0 | 73.60 |" in text and "2 cores (AMD EPYC)" in text
    assert "Ten predictions: 300.0 s together (target < 240 s: MISSED)" in text
    assert "first 3.8 s, then 1.50, 2.10 s (target < 2 s after the first: MISSED)" in text
    report.update(runs=runs[:1] * 5, explorer_s=[3.8, 1.5])
    assert "(target < 240 s: met)" in "\n".join(predict_speed.markdown(report))
    assert "after the first: met" in "\n".join(predict_speed.markdown(report))
    assert "`mom plan`" not in "\n".join(predict_speed.markdown(report))  # older files time no plan
    report["plans"] = [dict(model="llama-3.1-8b", seconds=25.14, workers=2, max_context={"none": 385024})]
    assert "2 processes): `llama-3.1-8b` 25.1 s." in "\n".join(predict_speed.markdown(report))


def test_every_variant_s_maximum_in_one_table_from_the_newest_search_of_each(tmp_path):
    old = dict(kind="max_context", model="llama-3.1-8b", provenance=PROV, args=dict(new_tokens=32), runs=[],
               searches={"hf": dict(maximum=212992, failing_above=221184, wall="gpu", resolution=8192, tries=5, done=True)})
    newer = {**PROV, "commit": "f" * 40}
    new = dict(kind="max_context", model="llama-3.1-8b", provenance=newer, args=dict(new_tokens=32),
               searches={"hf": dict(maximum=221184, failing_above=229376, wall="gpu", resolution=8192, tries=2, done=True)},
               runs=[dict(variant="mom", context=917504, oom=False, error=None),
                     dict(variant="mom", context=1261568, oom=True, wall="host", error="refused")])
    _write(tmp_path, "2026-12-01_h100_max_context_hf.json", old)
    _write(tmp_path, "2026-12-02_h100_max_context_more.json", new)
    text = readme_tables.section(tmp_path)
    summary = text.split("### Maximum context of every variant (issue 12)", 1)[1].split("Maximum context per variant", 1)[0]
    assert f"| `hf` | 221,184 | 229,376 (gpu) | 8,192 | - | - | `{'f' * 12}`, `2026-12-02_h100_max_context_more.json` |" in summary
    assert "| `hf-offload` | not measured yet | - | - | - | 165,000 | - |" in summary
    assert "| `mom` | >= 917,504 (search cut off) | 1,261,568 (host) |" in summary
    assert summary.index("`standard`") < summary.index("`hf`") < summary.index("`mom-paper`") < summary.index("`mom`")
    # each file in full below it, the newest first
    assert text.index("2026-12-02_h100_max_context_more.json`.") < text.index("2026-12-01_h100_max_context_hf.json`.")


def test_topics_come_in_the_reading_order_whatever_the_file_names(tmp_path):
    _write(tmp_path, "2026-12-09_h100_paper_tables.json", _paper_report())
    _write(tmp_path, "2026-11-01_h100_max.json", dict(kind="max_context", model="llama-3.1-8b", provenance=PROV,
                                                      args=dict(new_tokens=32), runs=[], searches={}))
    text = readme_tables.section(tmp_path)
    assert text.index("### Tables 1-4 of the paper") < text.index("### Maximum context of every variant")
    assert "### Decode at the speed of memory" not in text  # no file of that kind: no heading


def test_a_topic_opens_with_its_headline_file_then_the_most_complete(tmp_path):
    fuller = _paper_report()
    fuller["runs"] = fuller["runs"] + [_run("hf", 48000, 2.0, 20.0, 26.0)]
    _write(tmp_path, "2026-12-07_h100_paper_a_fuller.json", fuller)
    _write(tmp_path, "2026-12-07_h100_paper_b.json", _paper_report())
    _write(tmp_path, readme_tables.HEADLINE["paper_tables"], _paper_report())
    text = readme_tables.section(tmp_path)
    order = [text.index(f"{name}`.") for name in (readme_tables.HEADLINE["paper_tables"],
                                                  "2026-12-07_h100_paper_a_fuller.json", "2026-12-07_h100_paper_b.json")]
    assert order == sorted(order)
