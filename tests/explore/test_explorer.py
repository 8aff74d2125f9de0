"""Drive the Explorer as a user would: set the controls, click the buttons, read what is shown.

Clicks run on a background thread (as in the browser), so each test waits for the panel
(`wait()`) before reading it; the method twins wait by themselves.
"""

from __future__ import annotations

import pytest

import mom
from mom.engine.patch import handle_of
from mom.explore import Explorer, plots
from mom.explore.controls import M_OPTIONS
from mom.explore.messages import max_context_message
from mom.memory.events import MaxContextResult, MiB

from . import synthetic


@pytest.fixture
def explorer(tiny_llama):
    panel = Explorer(tiny_llama, context=1024)
    panel.controls["new_tokens"].value = 2
    yield panel
    panel.close()  # stops and joins any run: the next test gets the model back unpatched


def test_defaults_and_config(explorer):
    c = explorer.controls
    assert explorer.context == 1024
    assert explorer.limit_bytes == 32 * MiB
    assert c["budget_fits"].disabled and c["budget"].disabled  # offload is "none" at start
    assert explorer.buttons["stop"].disabled and not explorer.buttons["run"].disabled
    c["mini_sequences"].value = 1
    assert explorer.config() == mom.MomConfig()
    c["mini_sequences"].value = 4
    c["offload"].value = "auto"
    assert c["budget"].disabled and not c["budget_fits"].disabled
    c["budget_fits"].value = False
    c["budget"].value = 2.0
    assert explorer.config() == mom.MomConfig(mini_sequences=4, offload="auto", kv_gpu_budget=2 * MiB)
    c["limit_on"].value = False
    assert explorer.limit_bytes is None and c["limit"].disabled


def test_mini_sequence_slider_steps_are_small():
    """Neighbouring stops differ by at most 2x, so one drag step is never 8 -> 64."""
    assert M_OPTIONS[0] == 1 and M_OPTIONS[-1] == 64
    assert all(b / a <= 2 for a, b in zip(M_OPTIONS, M_OPTIONS[1:]))


def test_run_button_fills_figures_and_summary(explorer):
    explorer.controls["mini_sequences"].value = 4
    explorer.buttons["run"].click()
    assert explorer.busy and explorer.buttons["compare"].disabled and not explorer.buttons["stop"].disabled
    explorer.wait()
    assert explorer.last_error is None, explorer.message.value
    assert not explorer.busy and not explorer.buttons["run"].disabled and explorer.buttons["stop"].disabled
    assert not explorer.controls["limit_on"].disabled and not explorer.controls["limit"].disabled  # usable again
    run = explorer.profiles[-1]
    assert run.label == "M=4, trim" and not run.oom
    bars = {t.name: t for t in explorer.live.layer_widget.data}
    assert list(bars["Weights"].x) == ["embed", "L0", "L1", "L2", "head"]
    assert all(y > 0 for y in bars["Activation peak"].y[1:4])
    assert len(explorer.live.timeline_widget.data[0].x) == len(run.events)
    assert explorer.summary.loc["outcome", "M=4, trim"] == "ok"
    assert "mom-table" in explorer.summary_html.value
    assert explorer.progress.value == explorer.progress.max
    assert "peak" in explorer.message.value
    title = explorer.live.layer_widget.layout.title.text
    assert "M=4, trim" in title and "1k tokens" in title and "llama" in title


def test_a_second_run_is_refused_while_one_runs(explorer):
    explorer.controls["context"].value = 4096
    explorer.buttons["run"].click()
    explorer.buttons["compare"].click()  # refused, not queued
    assert "in progress" in explorer.message.value
    explorer.wait()
    assert len(explorer.profiles) == 1


def test_stop_cancels_and_restores_the_model(explorer, tiny_llama):
    explorer.controls["context"].value = 8192
    explorer.controls["mini_sequences"].value = 4
    explorer.controls["limit_on"].value = False
    explorer.run(wait=False)
    explorer.stop()
    explorer.wait()
    assert explorer.last_error is None, explorer.message.value
    assert explorer.result.cancelled and "stopped" in explorer.message.value
    assert handle_of(tiny_llama) is None  # mom's patch is gone
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in tiny_llama.modules())
    assert explorer.profiles == []  # a stopped run is not a result to compare against
    assert not explorer.buttons["run"].disabled


def test_compare_shows_both_on_one_scale_and_the_oom_wall(explorer):
    explorer.controls["limit"].value = 4.0  # MiB: the baseline's MLP does not fit, mom's pieces do
    explorer.controls["mini_sequences"].value = 16
    explorer.buttons["compare"].click()
    explorer.wait()
    assert explorer.last_error is None, explorer.message.value
    table = explorer.summary
    assert list(table.columns)[:2] == ["baseline", "M=16, trim"]
    assert table.loc["outcome", "baseline"] == "OOM"
    assert table.loc["outcome", "M=16, trim"] == "ok"
    layout = explorer.live.layer_widget.layout
    assert [a.text for a in layout.annotations][:2] == ["baseline", "M=16, trim"]  # one panel each
    assert layout.yaxis2.matches == "y"  # one y scale for both panels
    names = [t.name for t in explorer.live.layer_widget.data]
    assert plots.FAILED in names  # the allocation that hit the wall, at its layer
    lines = {t.name: t for t in explorer.live.timeline_widget.data}
    assert {"baseline", "M=16, trim"} <= set(lines)
    wall = lines["baseline: failed allocation"]
    assert wall.y[1] * MiB > 4 * MiB >= wall.y[0] * MiB  # from what was in use to past the limit
    assert "color:#b00020" in explorer.message.value.split("<br>")[0]  # the baseline's OOM line is red
    names = [t.name for t in explorer.sweep.data]
    assert "baseline: OOM" in names and "M=16, trim" in names
    assert any(shape.type == "line" for shape in explorer.sweep.layout.shapes)  # the device limit
    explorer.buttons["compare"].click()  # the second time reuses both runs
    explorer.wait()
    assert len(explorer.profiles) == 2


def test_find_max_context_shows_each_try(explorer):
    explorer.controls["limit"].value = 6.0
    explorer.controls["mini_sequences"].value = 8
    explorer.defaults["resolution"] = 512
    seen = []
    explorer.sweep.observe(lambda change: None)  # the widget is live; count the tries through progress
    explorer.progress.observe(lambda change: seen.append(change["new"]), "value")
    explorer.buttons["max_context"].click()
    result = explorer.wait()
    assert explorer.last_error is None, explorer.message.value
    assert result.maximum is not None and result.first_failure_above is not None
    assert f"{result.maximum} tokens" in explorer.message.value
    assert seen[:len(result.tries)] == list(range(1, len(result.tries) + 1))  # one step per finished try
    tries = [t for t in explorer.sweep.data if "maximum" not in t.name]
    assert sum(len(t.x) for t in tries) == len({p.context for p in result.tries})
    mark = next(t for t in explorer.sweep.data if "measured maximum" in t.name)  # the line at the maximum found
    assert list(mark.x) == [result.maximum] * 2 and f"{result.maximum:,} tokens" in mark.name
    assert not any("physical" in t.name for t in explorer.sweep.data)  # a pretend CPU limit has no host side
    assert "llama" in explorer.sweep.layout.title.text


def test_max_context_messages_say_what_was_found():
    def result(*runs, high=4096):
        return MaxContextResult(maximum=max((p.context for p in runs if not p.oom), default=None),
                                resolution=1024, tries=list(runs), high=high)

    capped = max_context_message(result(synthetic.profile("M=8", 2048, MiB), synthetic.profile("M=8", 4096, MiB)), "M=8")
    assert "no limit reached below the cap (4096 tokens)" in capped and "longest" not in capped
    found = max_context_message(result(synthetic.profile("M=8", 2048, MiB),
                                        synthetic.profile("M=8", 4096, MiB, oom=True)), "M=8")
    assert "longest context that fits is 2048 tokens" in found and "4096 tokens did not" in found
    none = max_context_message(result(synthetic.profile("M=8", 1024, MiB, oom=True)), "M=8")
    assert "even the shortest" in none


def test_errors_are_messages(explorer, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("offload needs a CUDA GPU")

    monkeypatch.setattr("mom.explore.explorer.profile", refuse)
    explorer.buttons["run"].click()
    explorer.wait()
    assert isinstance(explorer.last_error, RuntimeError)
    assert "offload needs a CUDA GPU" in explorer.message.value
    assert explorer.progress.bar_style == "danger"
    assert not explorer.buttons["run"].disabled


@pytest.mark.parametrize("arguments, error, words", [
    (dict(model="not a model"), TypeError, ["a model", "preset name", "not a mom preset"]),
    (dict(model=42), TypeError, ["a model", "preset name", "int"]),
    (dict(model="tiny-lama"), TypeError, ["did you mean 'tiny-llama'"]),
    (dict(limit_bytes=-1), ValueError, ["positive number of bytes", "no limit"]),
    (dict(limit_bytes=0), ValueError, ["positive number of bytes"]),
    (dict(context=-5), ValueError, ["positive whole number"]),
    (dict(context=50000, mode="measure"), ValueError, ["outside the explorer's context slider", "mom.profile"]),
    (dict(mode="predict"), ValueError, ["simulate, measure"]),
    (dict(gpu="H300-1TB"), ValueError, ["unknown GPU", "H100-80GB"]),
])
def test_careless_arguments_are_refused(arguments, error, words):
    with pytest.raises(error) as raised:
        Explorer(**arguments)
    assert all(word in str(raised.value) for word in words), str(raised.value)


def test_a_context_between_stops_is_kept_exactly():
    panel = Explorer(context=5000, mode="measure")
    assert panel.context == 5000
    assert 4096 in [v for _, v in panel.controls["context"].options]


def test_preset_name_and_dropdown_load_on_run():
    panel = Explorer("tiny-qwen3", context=512)
    assert panel.controls["model"].value == "tiny-qwen3"
    assert list(panel.controls["model"].options) == list(mom.TINY_PRESETS)
    panel.controls["model"].value = "tiny-qwen2"
    panel.controls["new_tokens"].value = 2
    panel.run()
    assert panel.last_error is None, panel.message.value
    assert panel.profiles[-1].context == 512 and panel.profiles[-1].model_name == "tiny-qwen2"
    assert "tiny-qwen2" in panel.live.layer_widget.layout.title.text
    assert panel._repr_mimebundle_()  # displayable


def test_show_profile_draws_any_profile(real_runs):
    base, run = real_runs
    panel = Explorer(context=1024, mode="measure")
    panel.show_profile(run)
    assert panel.summary.loc["outcome"].iloc[0] == "ok"
    assert len(panel.live.timeline_widget.data[0].x) == len(run.events)


def test_close_lets_the_model_go():
    import gc
    import weakref

    panel = Explorer(context=1024, mode="measure")  # loads its own model on the first run
    panel.controls["new_tokens"].value = 2
    panel.run()
    model = weakref.ref(panel._model)
    assert model() is not None
    panel.close()
    del panel
    gc.collect()
    assert model() is None


def test_typed_context_is_used_exactly():
    panel = Explorer(context=1024, mode="measure")
    panel.controls["context_tokens"].value = 3000
    assert panel.context == 3000 and panel.controls["context"].value == 3000
    panel.controls["context"].value = 4096
    assert panel.controls["context_tokens"].value == 4096
