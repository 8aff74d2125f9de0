"""The Explorer's simulate mode: real-size predictions for a chosen card, on a machine without a GPU.

These tests run where CI runs (CPU only), which is exactly where the panel opens in simulate
mode: llama-3.1-8b on a simulated H100-80GB, drawn in GiB and labelled as predicted.
"""

from __future__ import annotations

import pytest
import torch

import mom
from mom.explore import Explorer, plots
from mom.explore.simulated import CUSTOM
from mom.memory.events import GiB
from mom.simulate import GPUS, Prediction

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU default is what is tested")


@pytest.fixture(scope="module")
def panel():
    panel = Explorer()
    panel.controls["new_tokens"].value = 4
    yield panel
    panel.close()


def test_opens_in_simulate_mode_on_the_8b_and_an_h100(panel):
    c = panel.controls
    assert panel.mode == "simulate" and c["model"].value == "llama-3.1-8b" and panel.card.name == "H100-80GB"
    assert panel.context == 131072 and panel.unit == GiB and "GiB" in c["budget"].description
    assert "tiny-llama" not in c["model"].options and "llama-3.1-70b" in c["model"].options
    assert c["limit"].layout.display == "none" and c["gpu"].layout.display != "none"
    assert list(c["gpu"].options) == [*GPUS, CUSTOM]
    assert panel.buttons["stop"].disabled and panel.limit_bytes is None
    assert "mom.predict" in panel.message.value


def test_run_predicts_and_labels_it(panel):
    panel.buttons["run"].click()
    assert panel.buttons["stop"].disabled  # a prediction cannot be stopped
    run = panel.wait()
    assert panel.last_error is None, panel.message.value
    assert isinstance(run, Prediction) and run.backend == "predicted" and run.gpu == "H100-80GB"
    assert 30 * GiB < run.peak_gpu_bytes < 37 * GiB  # 15 GiB of weights + 16 GiB of K/V at 128k + transients
    layers = panel.live.layer_widget.layout
    assert "predicted on H100-80GB" in layers.title.text and "GiB" in layers.yaxis.title.text
    assert [a.visible for a in layers.annotations if a.text == plots.EMPTY_NOTE] == [False]  # hidden, not dropped
    assert len([x for x in panel.live.layer_widget.data[0].x]) == 34  # embed, 32 layers, head
    assert "predicted on H100-80GB" in panel.live.timeline_widget.layout.title.text
    assert "predicted on H100-80GB" in panel.sweep.layout.title.text
    message = panel.message.value
    assert "predicted on H100-80GB: peak" in message and "TTFT" in message
    assert "calibration: 64.00 MiB" in message  # what fake tensors cannot see, with its source
    assert "predicted on H100-80GB" in panel.summary_html.value
    limit = [s for s in panel.live.timeline_widget.layout.shapes if s.type == "line"]
    assert limit and abs(limit[0].y0 * GiB - GPUS["H100-80GB"].usable_bytes) < 0.01 * GiB


def test_the_gpu_dropdown_changes_the_answer(panel):
    panel.controls["gpu"].value = "RTX-4090-24GB"
    small = panel.run()
    assert small.gpu == "RTX-4090-24GB" and small.oom  # 15 GiB of weights and 16 GiB of K/V: no
    assert "predicted on RTX-4090-24GB" in panel.message.value and "out of memory" in panel.message.value
    panel.controls["gpu"].value = CUSTOM
    assert panel.controls["gpu_gib"].layout.display != "none" and not panel.controls["gpu_gib"].disabled
    panel.controls["gpu_gib"].value = 40.0
    custom = panel.run()
    assert custom.gpu == "custom-40GiB" and not custom.oom
    assert panel.card.total_bytes == 40 * GiB
    panel.controls["gpu"].value = "H100-80GB"
    assert panel.controls["gpu_gib"].layout.display == "none"


def test_compare_is_kept_per_card(panel):
    panel.controls["gpu"].value = "H200-141GB"
    before = len(panel.profiles)
    base, run = panel.compare()
    assert base.label == "baseline" and base.gpu == run.gpu == "H200-141GB"
    panel.compare()  # the same card again: both reused
    assert len(panel.profiles) == before + 2
    panel.controls["gpu"].value = "A100-80GB"
    panel.compare()  # another card: predicted again
    assert len(panel.profiles) == before + 4 and panel.profiles[-1].gpu == "A100-80GB"
    panel.controls["gpu"].value = "H100-80GB"


def test_find_max_draws_the_physical_limit_beside_the_maximum():
    panel = Explorer("llama-3.2-1b", gpu="A10G-24GB", host_gib=32)
    panel.controls["new_tokens"].value = 4
    panel.controls["mini_sequences"].value = 16
    panel.defaults["resolution"] = 65536
    result = panel.find_max_context()
    assert panel.last_error is None, panel.message.value
    assert result.limit_reached and result.maximum is not None
    assert all(isinstance(p, Prediction) and p.gpu == "A10G-24GB" for p in result.tries)
    limit = panel.physical_limit
    assert limit is not None and limit.gpu == "A10G-24GB" and limit.usable_host_bytes == int(0.9 * 32 * GiB)
    assert limit.tokens >= result.maximum  # no placement passes the box
    names = {t.name: t for t in panel.sweep.data}
    physical = next(t for name, t in names.items() if name.startswith("physical limit"))
    assert list(physical.x) == [limit.tokens] * 2
    maximum = next(t for name, t in names.items() if "predicted on A10G-24GB maximum" in name)
    assert list(maximum.x) == [result.maximum] * 2
    assert "physical limit: (" in panel.message.value and "predicted on A10G-24GB" in panel.message.value
    panel.controls["host_gib"].value = 64  # another machine: the sweep starts over
    assert not panel.sweep.data or all(len(t.x) == 0 for t in panel.sweep.data)
    assert panel.physical_limit is None
    panel.close()


def test_the_mode_toggle_switches_to_measuring_tiny_models_and_back():
    panel = Explorer()
    c = panel.controls
    c["mode"].value = "measure"
    assert c["model"].value == "tiny-llama" and list(c["model"].options) == list(mom.TINY_PRESETS)
    assert panel.unit < GiB and "MiB" in c["limit"].description and c["limit"].layout.display != "none"
    assert c["gpu"].layout.display == "none" and panel.limit_bytes is not None
    c["context"].value = 1024
    c["new_tokens"].value = 2
    run = panel.run()
    assert panel.last_error is None, panel.message.value
    assert run.backend != "predicted" and "predicted" not in panel.live.layer_widget.layout.title.text
    c["mode"].value = "simulate"
    assert c["model"].value == "llama-3.1-8b" and panel.context == 131072 and panel.limit_bytes is None
    assert panel.sweep.data == () or all(len(t.x) == 0 for t in panel.sweep.data)
    panel.close()


def test_predicted_bars_beside_measured_ones(tiny_llama):
    panel = Explorer(tiny_llama, context=1024)
    assert panel.mode == "measure" and not panel.controls["beside_predicted"].value  # on by default on a GPU only
    panel.controls["beside_predicted"].value = True
    panel.controls["new_tokens"].value = 2
    panel.controls["mini_sequences"].value = 4
    run = panel.run()
    assert panel.last_error is None, panel.message.value
    titles = [a.text for a in panel.live.layer_widget.layout.annotations]
    assert titles[0].startswith("M=4, trim: predicted on custom-") and titles[1] == "M=4, trim: measured"
    assert panel.live.layer_widget.layout.yaxis2.matches == "y"  # one scale
    assert not run.oom and run.backend != "predicted"
    panel.close()


def test_the_reserve_is_said_and_flagged_near_the_wall():
    """What runs out is the allocator's reserve: at 221,184 tokens hf's allocated peak leaves 11.8
    GiB of an H100 and its reserve 0.4 GiB (an H100 failed one step up)."""
    from mom.explore.simulated import prediction_lines

    near = mom.predict("llama-3.1-8b", mom.MomConfig(), context=221184, new_tokens=4, gpu="H100-80GB")
    [line] = [line for line in prediction_lines(near) if line.startswith("allocator reserve")]
    assert "of 78.44 GiB usable" in line and "within 0.5 GiB of the card" in line
    far = mom.predict("llama-3.2-1b", mom.MomConfig(), context=8192, new_tokens=4, gpu="custom-8GiB")
    [line] = [line for line in prediction_lines(far) if line.startswith("allocator reserve")]
    assert "GiB left)" in line and "within" not in line


def test_weights_too_big_for_the_card_say_how_many_cards_they_need():
    panel = Explorer("llama-3.1-70b", gpu="H100-80GB")
    panel.controls["context"].value = 32768
    result = panel.run()
    assert result.oom and "the weights alone (131.42 GiB) need at least 2 of these cards" in panel.message.value
    panel.controls["gpus"].value = 2
    panel.controls["mini_sequences"].value = 16
    panel.controls["offload"].value = "auto"
    assert not panel.run().oom and "need at least" not in panel.message.value
    panel.close()


def test_find_max_marks_a_host_walled_maximum():
    """offload="stream" on a small host: the host rule is the wall (simulate/reach.py predicts one
    step above it and at it), and the panel marks the predicted maximum like any other wall."""
    panel = Explorer("llama-3.2-1b", gpu="A10G-24GB", host_gib=4)
    panel.controls["new_tokens"].value = 4
    panel.controls["mini_sequences"].value = 16
    panel.controls["offload"].value = "stream"
    panel.defaults["resolution"] = 32768
    result = panel.find_max_context()
    assert panel.last_error is None, panel.message.value
    assert result.limit_reached and result.wall == "host" and len(result.tries) == 2
    maximum = next(t for t in panel.sweep.data if "predicted on A10G-24GB maximum" in t.name)
    assert list(maximum.x) == [result.maximum] * 2
    panel.close()
