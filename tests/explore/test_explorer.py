"""Drive the Explorer as a user would: set the controls, click the buttons, read what is shown."""

from __future__ import annotations

import pytest

import mom
from mom.explore import Explorer
from mom.memory.events import MiB


@pytest.fixture
def explorer(tiny_llama):
    panel = Explorer(tiny_llama, context=1024)
    panel.controls["new_tokens"].value = 2
    return panel


def test_defaults_and_config(explorer):
    c = explorer.controls
    assert explorer.context == 1024
    assert explorer.limit_bytes == 32 * MiB
    c["mini_sequences"].value = 1
    assert explorer.config() == mom.MomConfig()
    c["mini_sequences"].value = 4
    c["offload"].value = "auto"
    assert c["budget"].disabled and not c["budget_fits"].disabled
    c["budget_fits"].value = False
    c["budget"].value = 2.0
    assert explorer.config() == mom.MomConfig(mini_sequences=4, offload="auto", kv_gpu_budget=2 * MiB)


def test_run_button_fills_figures_and_summary(explorer):
    explorer.controls["mini_sequences"].value = 4
    explorer.buttons["run"].click()
    assert explorer.last_error is None, explorer.message.value
    run = explorer.profiles[-1]
    assert run.label == "M=4, trim" and not run.oom
    bars = {t.name: t for t in explorer.live.layer_widget.data}
    assert list(bars["Weights"].x) == ["embed", "L0", "L1", "L2", "head"]
    assert all(y > 0 for y in bars["Activation peak"].y[1:4])
    assert len(explorer.live.timeline_widget.data[0].x) == len(run.events)
    assert explorer.summary.loc["outcome", "M=4, trim"] == "ok"
    assert explorer.progress.value == explorer.progress.max
    assert "peak" in explorer.message.value


def test_compare_with_baseline_and_oom_wall(explorer):
    explorer.controls["limit"].value = 4.0  # MiB: the baseline's MLP does not fit, mom's pieces do
    explorer.controls["mini_sequences"].value = 16
    explorer.buttons["compare"].click()
    assert explorer.last_error is None, explorer.message.value
    table = explorer.summary
    assert list(table.columns)[:2] == ["baseline", "M=16, trim"]
    assert table.loc["outcome", "baseline"] == "OOM"
    assert table.loc["outcome", "M=16, trim"] == "ok"
    names = [t.name for t in explorer.sweep.data]
    assert "baseline: OOM" in names and "M=16, trim" in names
    assert any(shape.type == "line" for shape in explorer.sweep.layout.shapes)  # the device limit
    explorer.buttons["compare"].click()  # the second time reuses both runs
    assert len(explorer.profiles) == 2


def test_find_max_context(explorer):
    explorer.controls["limit"].value = 6.0
    explorer.controls["mini_sequences"].value = 8
    explorer.defaults["resolution"] = 512
    explorer.buttons["max_context"].click()
    result = explorer.max_context
    assert explorer.last_error is None, explorer.message.value
    assert result.maximum is not None and result.first_failure_above is not None
    assert f"{result.maximum} tokens" in explorer.message.value
    assert sum(len(t.x) for t in explorer.sweep.data) == len({p.context for p in result.tries})


def test_errors_are_messages(explorer, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("offload needs a CUDA GPU")

    monkeypatch.setattr("mom.explore.explorer.profile", refuse)
    explorer.buttons["run"].click()
    assert isinstance(explorer.last_error, RuntimeError)
    assert "offload needs a CUDA GPU" in explorer.message.value
    assert explorer.progress.bar_style == "danger"


def test_preset_dropdown_loads_on_run():
    panel = Explorer(context=512)
    assert panel.controls["model"].options == mom.TINY_PRESETS
    panel.controls["model"].value = "tiny-qwen2"
    panel.controls["new_tokens"].value = 2
    panel.run()
    assert panel.last_error is None, panel.message.value
    assert panel.profiles[-1].context == 512
    assert panel._repr_mimebundle_()  # displayable


def test_close_lets_the_model_go():
    import gc
    import weakref

    panel = Explorer(context=1024)  # loads its own model on the first run
    panel.controls["new_tokens"].value = 2
    panel.run()
    model = weakref.ref(panel._model)
    assert model() is not None
    panel.close()
    del panel
    gc.collect()
    assert model() is None
