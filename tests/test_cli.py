"""The CLI prints a table and writes JSON; bad input is a clear message, not a traceback."""

from __future__ import annotations

import json

from mom.cli import main


def test_profile_with_baseline_writes_json(tmp_path, capsys):
    out = tmp_path / "p.json"
    assert main(["profile", "--model", "tiny-llama", "--context", "256", "-M", "4", "--new-tokens", "2",
                 "--baseline", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "baseline" in table and "M=4" in table
    runs = json.loads(out.read_text())
    assert len(runs) == 2 and all(not r["oom"] for r in runs)
    assert runs[1]["peak_gpu_bytes"] < runs[0]["peak_gpu_bytes"]


def test_max_context_under_a_pretend_limit(tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["max-context", "--model", "tiny-qwen2", "-M", "4", "--new-tokens", "2", "--limit-gib", "0.004",
                 "--resolution", "256", "--high", "4096", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert "maximum context" in capsys.readouterr().out
    passing = [t["context"] for t in result["tries"] if not t["oom"]]
    failing = [t["context"] for t in result["tries"] if t["oom"]]
    assert result["maximum"] == max(passing)
    assert result["maximum"] + result["resolution"] in failing


def test_bad_config_is_a_message(capsys):
    assert main(["profile", "--model", "tiny-llama", "-M", "4", "-C", "64"]) == 2
    assert "not both" in capsys.readouterr().err
