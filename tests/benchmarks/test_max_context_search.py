"""The maximum-context search's control logic with a fake run (a wall at a chosen context): the
answer is a passing try with a failing one a single step above (8192 below 256k, 16384 beyond),
host walls cost no run, and a search cut off anywhere resumes without running a try twice."""

from __future__ import annotations

import json
from contextlib import contextmanager
from types import SimpleNamespace

import max_context
import pytest

import mom


@pytest.fixture(scope="module")
def model():
    return mom.load("tiny-llama", device="cpu")


class Wall:
    """A fake measure_generate: passes up to `wall` tokens, runs out of GPU memory above; counts runs."""

    def __init__(self, wall: int, host_wall: int | None = None, stop_after: int | None = None):
        self.wall, self.host_wall, self.stop_after, self.calls = wall, host_wall, stop_after, []

    def __call__(self, model, variant, config, context, new_tokens, **kwargs):
        if self.stop_after is not None and len(self.calls) == self.stop_after:
            raise KeyboardInterrupt  # the run is cut off here
        self.calls.append(context)
        record = dict(variant=variant, context=context, new_tokens=new_tokens, oom=False, error=None,
                      peak_gib=context / 2**17)
        if self.host_wall is not None and context > self.host_wall:
            return {**record, "oom": True, "wall": "host", "peak_gib": None}
        if context > self.wall:
            return {**record, "oom": True, "wall": "gpu"}
        return record


def _search(tmp_path, monkeypatch, model, fake, variant="hf", name="max.json"):
    monkeypatch.setattr(max_context, "measure_generate", fake)
    args = max_context.parse(["--out", str(tmp_path / name), "--device", "cpu", "--settle", "0",
                              "--variants", variant])
    report = json.loads((tmp_path / name).read_text()) if (tmp_path / name).exists() else dict(runs=[], searches={})
    searcher = max_context.Searcher(args, model, report)
    return max_context.search(searcher, variant), report


@pytest.mark.parametrize("wall, step", [(200_000, 8192), (300_000, 16384), (150_000, 8192), (700_000, 16384)])
def test_the_maximum_passes_and_one_step_above_fails(tmp_path, monkeypatch, model, wall, step):
    found, report = _search(tmp_path, monkeypatch, model, Wall(wall))
    assert found["maximum"] <= wall < found["failing_above"] == found["maximum"] + step
    assert found["wall"] == "gpu" and found["limit_reached"]
    outcome = {r["context"]: not r["oom"] for r in report["runs"]}
    assert outcome[found["maximum"]] and not outcome[found["failing_above"]]


def test_a_cut_off_search_resumes_without_running_a_try_twice(tmp_path, monkeypatch, model):
    whole = Wall(300_000)
    expected, _ = _search(tmp_path, monkeypatch, model, whole, name="whole.json")
    first = Wall(300_000, stop_after=4)
    with pytest.raises(KeyboardInterrupt):
        _search(tmp_path, monkeypatch, model, first)
    assert len(json.loads((tmp_path / "max.json").read_text())["runs"]) == 4  # saved after every try
    second = Wall(300_000)
    resumed, _ = _search(tmp_path, monkeypatch, model, second)
    assert resumed["maximum"] == expected["maximum"] and resumed["failing_above"] == expected["failing_above"]
    assert first.calls + second.calls == whole.calls


def _host_wall(monkeypatch, wall: int, seen: list | None = None) -> None:
    """The host-RAM guard admits up to `wall` tokens; `seen` collects the configs it was asked with."""

    @contextmanager
    def guard(model, config):
        if seen is not None:
            seen.append(config)
        yield lambda context: context <= wall

    monkeypatch.setattr(max_context, "host_guard", guard)


def test_mom_finds_its_host_wall_in_two_tries(tmp_path, monkeypatch, model):
    seen = []
    _host_wall(monkeypatch, 851_968, seen)
    fake = Wall(10**7, host_wall=851_968)
    found, _ = _search(tmp_path, monkeypatch, model, fake, variant="mom")
    assert fake.calls == [868_352, 851_968]
    assert (found["maximum"], found["failing_above"], found["wall"]) == (851_968, 868_352, "host")
    assert seen and seen[0].offload == "auto"  # mom's own guard after its placement, not the whole cache


def test_mom_runs_once_at_its_host_wall_whatever_the_prediction(tmp_path, monkeypatch, model):
    """The eleventh session's search began with an 8-minute run above the whole-cache formula's
    maximum. Under the runtime's guard every try above the wall is a refusal, and the one run is at
    the wall: a prediction below it would have walked up in runs of 12 minutes each at 1.1M."""
    _host_wall(monkeypatch, 851_968)
    monkeypatch.setattr(max_context, "predicted_maximum", lambda searcher, variant: 819_200)
    fake = Wall(10**7, host_wall=851_968)
    found, _ = _search(tmp_path, monkeypatch, model, fake, variant="mom")
    assert fake.calls == [868_352, 851_968]
    assert (found["maximum"], found["failing_above"], found["wall"]) == (851_968, 868_352, "host")


def test_mom_s_guard_is_what_mom_admits_after_placing_the_cache(model, monkeypatch):
    """offload="auto" keeps on the device what fits there (on this CPU model, every layer), so its
    guard admits a context whose whole cache the host cannot hold."""
    import mom.engine.host_guard as guard

    monkeypatch.setattr(guard.psutil, "virtual_memory", lambda: SimpleNamespace(available=2**20))
    with max_context.host_guard(model, None) as whole_cache:
        assert not whole_cache(65_536)  # more than 0.9 MiB of K/V
        assert whole_cache(16)
    with max_context.host_guard(model, max_context.mom_configs(4096)["mom"]) as admits:
        assert admits(65_536)


@pytest.mark.parametrize("wall", [16_384, 100_000, 851_968, 2**21])
def test_the_guard_maximum_is_the_largest_step_admitted(monkeypatch, model, wall):
    _host_wall(monkeypatch, wall)
    assert max_context.guard_maximum(model, None, 16_384, 2**21) == wall // 16_384 * 16_384


def test_hf_offload_is_refused_by_the_benchmark_guard_without_a_run(tmp_path, monkeypatch, model):
    _host_wall(monkeypatch, 400_000)
    fake = Wall(10**7)
    found, report = _search(tmp_path, monkeypatch, model, fake, variant="hf-offload")
    assert found["maximum"] <= 400_000 < found["failing_above"] and found["wall"] == "host"
    assert all(c <= 400_000 for c in fake.calls)
    assert any(r.get("clock") == "not run" for r in report["runs"])


@pytest.mark.parametrize("wall, predicted, runs", [
    (200_000, 196_608, 2),   # exact: the maximum and one step above
    (200_000, 212_992, 3),   # two steps too high: walks down
    (200_000, 180_224, 4),   # two steps too low: walks up
    (700_000, 688_128, 2),   # beyond 256k the step is 16384
    (200_000, 65_536, None),  # far off: the walk hands over to the search
])
def test_a_search_from_the_prediction_walks_to_the_wall(tmp_path, monkeypatch, model, wall, predicted, runs):
    monkeypatch.setattr(max_context, "predicted_maximum", lambda searcher, variant: predicted)
    fake = Wall(wall)
    found, report = _search(tmp_path, monkeypatch, model, fake)
    step = 8192 if wall < 262_144 else 16384
    assert found["maximum"] <= wall < found["failing_above"] == found["maximum"] + step
    assert found["predicted"] == predicted
    assert len(fake.calls) == len(set(fake.calls))  # no try twice
    if runs is not None:
        assert len(fake.calls) == runs
    else:
        assert fake.calls[:4] == [65_536, 73_728, 81_920, 90_112]


def test_the_search_starts_from_a_prediction_only_on_a_gpu(tmp_path, model):
    args = max_context.parse(["--out", str(tmp_path / "m.json"), "--device", "cpu"])
    assert not max_context.Searcher(args, model, dict(runs=[])).from_prediction
    args = max_context.parse(["--out", str(tmp_path / "m.json"), "--device", "cpu", "--start", "prediction"])
    searcher = max_context.Searcher(args, model, dict(runs=[]))
    assert searcher.from_prediction and max_context.predicted_maximum(searcher, "hf-offload") is None


def test_the_prediction_runs_the_variants_prefill():
    """`standard` keeps every position's logits and `hf-chunked` prefills in chunks: so do their predictions."""
    assert max_context.predict_options("standard", 8192) == dict(logits_to_keep=0, prefill_chunk_size=None)
    assert max_context.predict_options("hf-chunked", 4096) == dict(logits_to_keep=1, prefill_chunk_size=4096)
    assert max_context.predict_options("hf", 8192) == dict(logits_to_keep=1, prefill_chunk_size=None)
    assert {"standard", "hf-chunked"} <= max_context.PREDICTED and "hf-offload" not in max_context.PREDICTED


def test_hf_offload_walks_down_from_a_given_start_to_its_wall(tmp_path, monkeypatch, model):
    """transformers' offloaded cache is not predicted: started above its wall, every try but the
    last is a failure (seconds each on a GPU: the first layer's MLP runs out), and one pass ends it."""
    _host_wall(monkeypatch, 10**7)
    monkeypatch.setattr(max_context, "measure_generate", fake := Wall(500_000))
    args = max_context.parse(["--out", str(tmp_path / "m.json"), "--device", "cpu", "--settle", "0",
                              "--variants", "hf-offload", "--start-at", "hf-offload=557056", "--walk-steps", "8"])
    found = max_context.search(max_context.Searcher(args, model, dict(runs=[], searches={})), "hf-offload")
    assert fake.calls == [557_056, 540_672, 524_288, 507_904, 491_520]
    assert (found["maximum"], found["failing_above"], found["started_at"], found["predicted"]) == (
        491_520, 507_904, 557_056, None)


@pytest.mark.parametrize("text", ["hf-offload", "hf-offload=5e5", "hf-offload=1=2"])
def test_a_malformed_start_is_refused_with_the_form_it_takes(tmp_path, text):
    with pytest.raises(SystemExit, match="VARIANT=TOKENS"):
        max_context.parse(["--out", str(tmp_path / "m.json"), "--start-at", text])


def test_a_given_start_replaces_the_prediction(tmp_path, monkeypatch, model):
    """A start passed with --start-at (a prediction made beforehand on a CPU) is walked from; the
    GPU machine then predicts nothing."""
    monkeypatch.setattr(max_context, "predicted_maximum", lambda searcher, variant: pytest.fail("predicted"))
    monkeypatch.setattr(max_context, "measure_generate", fake := Wall(200_000))
    args = max_context.parse(["--out", str(tmp_path / "m.json"), "--device", "cpu", "--settle", "0",
                              "--variants", "hf", "--start-at", "hf=196608"])
    found = max_context.search(max_context.Searcher(args, model, dict(runs=[], searches={})), "hf")
    assert fake.calls == [196_608, 204_800] and found["started_at"] == found["maximum"] == 196_608


def test_an_error_that_is_not_out_of_memory_stops_the_search_without_a_maximum(tmp_path, monkeypatch, model):
    """transformers' offloaded cache on a machine without CUDA fails at every length: that is no
    wall, so the walk stops at the first such try instead of reporting the smallest length tried."""

    def broken(model, variant, config, context, new_tokens, **kwargs):
        broken.calls.append(context)
        return dict(variant=variant, context=context, new_tokens=new_tokens, oom=False,
                    error="AssertionError: Torch not compiled with CUDA enabled")

    broken.calls = []
    monkeypatch.setattr(max_context, "measure_generate", broken)
    args = max_context.parse(["--out", str(tmp_path / "m.json"), "--device", "cpu", "--settle", "0",
                              "--variants", "hf", "--start-at", "hf=196608"])
    report = dict(runs=[], searches={})
    found = max_context.search_or_error(max_context.Searcher(args, model, report), "hf")
    assert broken.calls == [196_608]
    assert found["maximum"] is None and not found["done"] and "CUDA" in found["error"]
    row = max_context.tables.max_context_rows(dict(report, searches={"hf": found}))[0]
    assert row["maximum"] == "-" and "search stopped at 196,608" in row["failing"]


def test_runs_without_a_finished_search_are_a_cut_off_search_only_when_searching():
    runs = [dict(variant="mom", context=917_504, oom=False), dict(variant="mom", context=1_261_568, oom=True, wall="host")]
    searching = dict(args=dict(contexts=None), runs=runs, searches={})
    (row,) = max_context.tables.max_context_rows(searching)
    assert row["maximum"] == ">= 917,504 (search cut off)" and row["failing"] == "1,261,568 (host)"
    assert max_context.tables.max_context_rows(dict(searching, args=dict(contexts="917504"))) == []

