"""JSONL results survive a crash mid-write: appends start on a fresh line, torn lines are skipped."""

from __future__ import annotations

import json
import logging

import pytest

import mom
from mom.memory.profile import profile


@pytest.fixture
def llama(tiny_models):
    return tiny_models["tiny-llama"]


TORN = '{"run": 1, "phase": "prefill", "step": 0, "layer": 3, "modu'


def test_a_run_appended_after_a_torn_line_starts_on_a_fresh_line(llama, tmp_path):
    path = tmp_path / "sweep.jsonl"
    path.write_text('{"run": 1, "context": 1}\n' + TORN, encoding="utf-8")  # a crash mid-write
    p = profile(llama, mom.MomConfig(), context=64, new_tokens=1, jsonl=path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[1] == TORN  # left as it was, alone on its line
    appended = [json.loads(line) for line in lines[2:]]
    assert sum(row.get("module") is not None for row in appended) == len(p.events)


def test_reading_back_skips_and_counts_torn_lines(llama, tmp_path, caplog):
    from mom.memory.jsonl import read_jsonl

    path = tmp_path / "sweep.jsonl"
    path.write_text(TORN, encoding="utf-8")
    p = profile(llama, mom.MomConfig(), context=64, new_tokens=1, jsonl=path)
    with path.open("a", encoding="utf-8") as sink:
        sink.write(TORN)  # and a second crash at the very end
    with caplog.at_level(logging.WARNING, logger="mom.memory.jsonl"):
        read = read_jsonl(path)
    assert read.torn == 2 and "2 torn" in caplog.text
    assert len(read.events) == len(p.events) and read.events[0]["context"] == 64
    assert [run["run"] for run in read.runs] == [1]
