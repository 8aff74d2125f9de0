"""The CLI prints a table and writes JSON; bad input is a clear message, not a traceback
(every careless input is in tests/test_inputs.py)."""

from __future__ import annotations

import importlib.metadata
import json
import re

import mom
from mom.cli import main
from mom.load import kv_bytes_per_token_of, parameter_count, preset_config


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


def test_version(capsys):
    import pytest

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"mom {mom.__version__}"
    assert mom.__version__ == importlib.metadata.version("mom")


def test_presets_lists_every_preset_with_its_numbers(capsys):
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert {"parameters", "layers", "KV/token", "max positions"} <= set(re.split(r"\s{2,}|\s\(", lines[0]))
    rows = {line.split()[0]: line for line in lines[2:]}
    assert set(rows) == set(mom.PRESETS)
    for name in mom.PRESETS:
        config = preset_config(name)
        row = rows[name]
        assert f" {parameter_count(config):,} " in row and f" {config.num_hidden_layers} " in row
        assert mom.format_bytes(kv_bytes_per_token_of(config)) in row and f"{config.max_position_embeddings:,}" in row
    assert " 8,030,261,248 " in rows["llama-3.1-8b"] and "128.00 KiB" in rows["llama-3.1-8b"]


def test_profile_on_cpu_says_timings_are_not_meaningful(capsys):
    assert main(["profile", "--model", "tiny-llama", "--context", "128", "--new-tokens", "2"]) == 0
    out = capsys.readouterr().out
    assert "peak device" in out and "peak GPU" not in out
    assert "not meaningful" in out


def test_max_context_baseline_is_a_second_search(tmp_path, capsys):
    out = tmp_path / "both.json"
    assert main(["max-context", "--model", "tiny-llama", "-M", "4", "--new-tokens", "1", "--limit-gib", "0.004",
                 "--resolution", "256", "--high", "4096", "--baseline", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    baseline, mom_run = json.loads(out.read_text())
    assert {t["config"]["label"] for t in baseline["tries"]} == {"baseline"}
    assert {t["config"]["label"] for t in mom_run["tries"]} == {"M=4, trim"}
    assert f"baseline: maximum context {baseline['maximum']} tokens" in text
    assert f"M=4, trim: maximum context {mom_run['maximum']} tokens" in text
    assert mom_run["maximum"] > baseline["maximum"]


def test_max_context_with_nothing_that_fits_is_not_a_success(capsys):
    assert main(["max-context", "--model", "tiny-llama", "--new-tokens", "1", "--limit-gib", "0.0001",
                 "--resolution", "64", "--high", "256"]) == 1
    out = capsys.readouterr().out
    assert "None" not in out and "no context fits" in out and "raise --limit-gib" in out


def test_max_context_that_reaches_the_cap_says_so(capsys):
    assert main(["max-context", "--model", "tiny-llama", "--new-tokens", "1", "--limit-gib", "1",
                 "--resolution", "64", "--high", "128"]) == 0
    assert "at least 128 tokens (raise --high to look further)" in capsys.readouterr().out
