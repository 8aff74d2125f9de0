"""A preset's runs carry the preset's name (not its family's model_type) into the CLI JSON and the report."""
from __future__ import annotations

import json

import mom
from mom.cli import main
from mom.explore.report import report_html


def test_cli_json_names_the_preset(tmp_path):
    out = tmp_path / "p.json"
    assert main(["profile", "--model", "tiny-llama", "--context", "128", "-M", "2", "--new-tokens", "1",
                 "--json", str(out)]) == 0
    runs = json.loads(out.read_text())
    assert runs and all(r["model_name"] == "tiny-llama" for r in runs)


def test_report_names_the_preset():
    run = mom.profile(mom.load("tiny-llama"), mom.MomConfig(), context=128, new_tokens=1)
    assert run.model_name == "tiny-llama"
    assert "model: tiny-llama" in report_html([run])
