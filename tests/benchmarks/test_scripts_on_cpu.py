"""Every GPU script of issue 12 runs end to end on a CPU with a tiny preset, writes its results
file, resumes from it without running anything twice, and prints its table: so a GPU command
cannot die of a typo. Also the detached mode: start, poll until done, files copied back."""

from __future__ import annotations

import json
import sys

import decode_split
import families
import max_context
import million
import paper_tables
import peers
import placement_exact
import pytest
import runfile
import torch

SMALL = ["--device", "cpu", "--settle", "0", "--piece", "32"]


def _runs(path) -> list[dict]:
    return json.loads(path.read_text())["runs"]


def test_paper_tables_runs_and_resumes(tmp_path, capsys):
    out = tmp_path / "paper.json"
    argv = ["--model", "tiny-llama", "--contexts", "64,96", "--new-tokens", "3", "--repeats", "1", "--warmup", "0",
            "--chunk", "32", "--out", str(out), *SMALL]
    report = paper_tables.main(argv)
    assert report["finished"] and len(report["runs"]) == report["planned"] == 10
    assert all(r["error"] is None and not r["oom"] for r in report["runs"]), [r["error"] for r in report["runs"]]
    assert all(len(r["tokens"]) == 3 and r["ttft_s"] > 0 for r in report["runs"])
    assert "| 64 | `mom-paper` | 1 |" in capsys.readouterr().out
    again = paper_tables.main([*argv, "--repeats", "1"])
    assert len(again["runs"]) == 10 and again["resumed"]  # nothing ran twice


def test_a_results_file_of_another_commit_is_not_resumed(tmp_path, monkeypatch):
    out = tmp_path / "paper.json"
    argv = ["--model", "tiny-llama", "--contexts", "64", "--variants", "hf", "--new-tokens", "2", "--repeats", "1",
            "--warmup", "0", "--out", str(out), *SMALL]
    monkeypatch.setenv("MOM_COMMIT", "a" * 40)
    paper_tables.main(argv)
    monkeypatch.setenv("MOM_COMMIT", "b" * 40)
    with pytest.raises(SystemExit, match="--fresh"):
        paper_tables.main(argv)
    assert paper_tables.main([*argv, "--fresh"])["provenance"]["commit"] == "b" * 40


def test_max_context_script_on_cpu(tmp_path, capsys):
    out = tmp_path / "max.json"
    report = max_context.main(["--model", "tiny-llama", "--variants", "hf,mom", "--new-tokens", "2", "--low", "64",
                               "--high", "256", "--fine", "64", "--coarse", "128", "--switch", "128",
                               "--out", str(out), *SMALL])
    assert report["searches"]["hf"]["maximum"] == 256 and not report["searches"]["hf"]["limit_reached"]
    assert "every try up to the cap passed" in capsys.readouterr().out


def test_families_script_on_cpu(tmp_path, capsys):
    out = tmp_path / "families.json"
    report = families.main(["--model", "tiny-qwen2", "--contexts", "48,64", "--new-tokens", "2", "--exact-tokens", "2",
                            "--out", str(out), *SMALL])
    kinds = [r["kind"] for r in report["runs"]]
    assert kinds.count("timing") == 4 and kinds.count("exactness") == 2 and kinds.count("agreement") == 2
    exact = [r for r in report["runs"] if r["kind"] == "exactness"]
    assert all(r["error"] is None and r["passed"] for r in exact), exact
    assert "reference_check" in exact[0] and "reference_check" not in exact[1]  # checked at the smallest context
    assert exact[0]["reference_check"]["tokens_identical"]
    assert "| `tiny-qwen2` | 48 |" in capsys.readouterr().out


def test_peers_script_on_cpu(tmp_path, capsys):
    out = tmp_path / "peers.json"
    report = peers.main(["--model", "tiny-llama", "--contexts", "64", "--variants", "hf,hf-static,hf-static-compile,mom",
                         "--new-tokens", "3", "--repeats", "1", "--warmup", "32", "--out", str(out), *SMALL])
    assert [r["kind"] for r in report["runs"]].count("compile") == 1
    assert all(r["error"] is None for r in report["runs"]), [r["error"] for r in report["runs"]]
    assert "| 64 | `hf-static-compile` |" in capsys.readouterr().out


def test_placement_exact_script_on_cpu(tmp_path, capsys, monkeypatch):
    argv = ["--model", "tiny-llama", "--context", "96", "--exact-tokens", "3", *SMALL]
    report = placement_exact.main([*argv, "--out", str(tmp_path / "exact.json")])
    [run] = report["runs"]
    assert run["error"] is None and run["passed"] and run["tokens_identical"], run
    assert run["placement"] == ["device", "host", "host"] and run["tiers"] == ["device", "stream", "stream"]
    assert "| 96 | True |" in capsys.readouterr().out
    again = placement_exact.main([*argv, "--out", str(tmp_path / "exact.json")])
    assert again["resumed"] and len(again["runs"]) == 1  # nothing ran twice

    candidate = placement_exact.candidate  # the verdict sees the candidate: a perturbed one fails

    def perturbed(*args):
        logits, layers = candidate(*args)
        logits[1, 0, 7] += 0.05 * logits.abs().max()
        return logits, layers

    monkeypatch.setattr(placement_exact, "candidate", perturbed)
    [run] = placement_exact.main([*argv, "--out", str(tmp_path / "perturbed.json")])["runs"]
    assert not run["passed"] and run["failing_steps"] == [1]


def test_placement_exact_steps_down_after_an_oom(tmp_path, monkeypatch, capsys):
    reference = placement_exact.reference

    def tight(model, ids, *args):
        if ids.shape[1] > 64:
            raise torch.OutOfMemoryError("CUDA out of memory (pretend)")
        return reference(model, ids, *args)

    monkeypatch.setattr(placement_exact, "reference", tight)
    monkeypatch.setattr(placement_exact, "STEP", 32)
    report = placement_exact.main(["--model", "tiny-llama", "--context", "128", "--exact-tokens", "2",
                                   "--out", str(tmp_path / "exact.json"), *SMALL])
    assert [(r["context"], r["oom"], r["stage"]) for r in report["runs"]] == [
        (128, True, "reference"), (96, True, "reference"), (64, False, "done")]
    assert placement_exact.main(["--estimate", "--context", "131072", "--out", "unused.json"]) is None
    assert "estimated GPU wall time of placement_exact (llama-3.1-8b, 131,072 tokens)" in capsys.readouterr().out


def test_million_script_on_cpu(tmp_path):
    """Issue 14's long run end to end on a tiny preset: every phase, the guard's steps, the run's
    figures (the 2026-12-07 H100 run died in its limits phase on an unindexed device)."""
    out = tmp_path / "million.json"
    report = million.main(["--device", "cpu", "--model", "tiny-llama", "--context", "512", "--short", "128",
                           "--new-tokens", "3", "--out", str(out)])
    assert report == json.loads(out.read_text()) and report["phase"] == "done"
    limits = report["limits"]
    assert limits["kv_bytes_per_token"] > 0 and limits["prefill_transient_bytes_per_token"] > 0
    assert limits["guard"][0]["context"] == 512 and all(g["verdict"] == "admitted" for g in limits["guard"])
    assert set(report["attention_kernel"]) == {"128", "512"}
    for run, tokens in ((report["short_run"], 2), (report["run"], 3)):
        assert run["error"] is None and not run["oom"] and len(run["tokens"]) == tokens, run
        assert run["ttft_s"] > 0 and run["kv_gpu"] > 0 and run["tiers"] == ["device"] * 3
    assert [s["layer"] for s in report["run"]["layer_stamps"]] == [0, 1, 2]  # prefill stamps only


def test_decode_split_script_on_cpu(tmp_path):
    """Issue 13's host/device split of eager decode: every variant, both rounds, the profiled
    run's decode phase found (busy time is None without a GPU), a summary per case."""
    out = tmp_path / "split.json"
    report = decode_split.main(["--device", "cpu", "--model", "tiny-llama", "--contexts", "64", "--rounds", "2",
                                "--new-tokens", "4", "--out", str(out)])
    assert report == json.loads(out.read_text()) and report["finished"]
    assert all(r["error"] is None and len(r["wall_steps_s"]) == 3 for r in report["runs"]), report["runs"]
    assert [(s["variant"], s["rounds"]) for s in report["summary"]] == [(v, 2) for v in decode_split.VARIANTS]
    assert all("busy_step_s" in r for r in report["runs"] if r["round"] == 0)


def test_kernel_time_is_the_union_of_intervals():
    assert decode_split._union_us([(0, 10), (5, 12), (20, 25), (21, 22)]) == 17
    assert decode_split._union_us([]) == 0


@pytest.mark.parametrize("script", [paper_tables, max_context, peers, families])
def test_every_script_prints_a_wall_time_estimate(script, capsys):
    assert script.main(["--estimate", "--out", "unused.json"]) is None
    assert "estimated GPU wall time" in capsys.readouterr().out


def test_detach_then_poll_until_done(tmp_path, capsys):
    out, copies = tmp_path / "run" / "paper.json", tmp_path / "back"
    argv = ["--model", "tiny-llama", "--contexts", "64", "--variants", "hf", "--new-tokens", "2", "--repeats", "1",
            "--warmup", "0", "--out", str(out), *SMALL]
    paper_tables.main([*argv, "--detach"])
    assert "detached: pid" in capsys.readouterr().out
    assert runfile.poll(out, wait_s=240, copy_to=str(copies)), "the detached run did not end within 240 s"
    printed = capsys.readouterr().out
    assert "not running" in printed and "1 of 1 runs recorded" in printed and "finished: True" in printed
    assert json.loads((copies / "paper.json").read_text())["finished"]
    assert (copies / "paper.json.log").exists()


def test_save_is_atomic(tmp_path):
    path = tmp_path / "a" / "r.json"
    runfile.save(path, {"runs": [1]})
    assert json.loads(path.read_text())["runs"] == [1] and not list(path.parent.glob("*.tmp"))


if sys.platform != "linux":  # the detached mode relies on /proc and setsid
    test_detach_then_poll_until_done = pytest.mark.skip(reason="linux only")(test_detach_then_poll_until_done)
