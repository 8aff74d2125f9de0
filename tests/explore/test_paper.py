"""The paper's anchors load as tables; committed results of any known shape are read, junk is skipped."""

from __future__ import annotations

import json
from pathlib import Path

from mom.explore import paper
from mom.memory.events import GiB

ROOT = Path(__file__).resolve().parents[2]


def test_anchor_tables():
    anchors = paper.load_anchors()
    tables = paper.anchor_tables(anchors)
    assert len(tables) == 4
    ttft = tables["Table 3: TTFT (s)"]
    assert list(ttft.columns) == [48000, 80000, 112000, 144000]
    assert ttft.loc["standard", 144000] == 34.907
    assert paper.paper_max_contexts(anchors)["mom"] == 455000
    assert len(paper.max_context_figure(anchors).data) == 1


def test_no_results_is_empty(tmp_path):
    assert paper.load_results(tmp_path).empty
    assert paper.load_max_contexts(tmp_path / "missing").empty
    assert paper.results_tables(paper.load_results(tmp_path)) == {}


def test_results_of_several_shapes(tmp_path):
    bench = {"environment": {"card": "H100"}, "model": "llama-3.1-8b",
             "runs": [{"variant": "hf", "context": 131072, "peak_gib": 45.5, "ttft_s": 11.8, "oom": False},
                      {"variant": "hf", "context": 262144, "oom": True, "peak_gib": 78.0}]}
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    (tmp_path / "list.json").write_text(json.dumps([
        {"variant": "mom", "context": 65536, "peak_gpu_bytes": 24 * GiB, "oom": False},
        {"maximum": 450560, "resolution": 8192, "tries": [{"config": {"label": "M=16"}, "context": 8192}]},
    ]))
    (tmp_path / "broken.json").write_text("{not json")
    results = paper.load_results(tmp_path)
    assert set(results["variant"]) >= {"hf", "mom"}
    assert results.loc[results["variant"] == "mom", "peak_gib"].item() == 24.0
    peak = paper.results_tables(results)["peak GiB"]
    assert peak.loc[("H100", "hf"), 262144] == "OOM"
    maxima = paper.load_max_contexts(tmp_path)
    search = maxima[maxima["kind"] == "search"]
    assert search["max_context"].tolist() == [450560] and search["variant"].tolist() == ["M=16"]
    longest = maxima[maxima["kind"] == "longest pass"].set_index("variant")["max_context"]
    assert longest["hf"] == 131072  # 262144 ran out of memory: the longest pass is the lower bound
    assert len(paper.comparison_figure(paper.load_anchors(), results).data) > 5


def test_peak_ratio_table_on_tiny(tiny_llama):
    table = paper.peak_ratio_table(tiny_llama, [512, 1024], mini_sequence_size=128, new_tokens=2)
    assert list(table.index) == ["no_offload", "offload"]
    assert (table.values < 100).all() and (table.values > 0).all()


def test_packaged_anchors_are_the_repository_anchors():
    packaged = json.loads(paper.data_file("mom_paper.json").read_text())
    assert packaged == json.loads((ROOT / "benchmarks" / "anchors" / "mom_paper.json").read_text())


def test_outside_the_repository_the_packaged_measurements_are_used(tmp_path, monkeypatch):
    """Notebook 04 copied elsewhere: no benchmarks/ folder, same tables, and the 720,896-token pass."""
    monkeypatch.chdir(tmp_path)
    assert paper.benchmarks_dir() is None
    maxima = paper.load_max_contexts()
    mom_pass = maxima[maxima["variant"] == "mom"]
    assert mom_pass["max_context"].tolist() == [720896]  # from results/history: commit not recorded
    assert mom_pass["kind"].tolist() == ["earlier pass"]
    figure = paper.max_context_figure(paper.load_anchors(), maxima)
    assert any(720896 in trace.x for trace in figure.data[1:])
    assert not paper.load_results().empty


def test_packaged_measurements_are_committed_results():
    """Every packaged row is a committed result, current or moved to history/ (refresh with
    paper.write_summary() after committing results)."""
    packaged = paper._summary()
    results = ROOT / "benchmarks" / "results"
    committed = paper.pd.concat([paper.load_results(results), paper.load_results(results / "history")])
    key = ["source", "variant", "context"]
    have = set(committed[key].itertuples(index=False, name=None))
    assert {tuple(row[k] for k in key) for row in packaged["runs"]} <= have
