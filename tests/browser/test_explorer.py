"""The explorer driven as a person drives it, in JupyterLab in a real browser.

One panel (tiny-llama on CPU, the tensor tracker's pretend limit) goes through a session in
order: drag the mini-sequence slider, type a context, Run and watch the layer chart move,
Stop, Compare, trip the limit and find the wall, Find max and watch the tries arrive. Figures
are read from the page (plotly keeps each figure's data on its element).
"""

from __future__ import annotations

import json
import re
import time

import pytest

from .conftest import SCREENSHOTS, screenshot
from .notebook import figure, open_notebook, run_all, wait_finished

pytestmark = pytest.mark.browser

SETUP = """from mom.explore import Explorer
panel = Explorer("tiny-llama", context=2048)
panel.controls["new_tokens"].value = 2
panel"""
CHECK = """from mom.engine.patch import handle_of
model = panel._model
print("restored:", model is not None and handle_of(model) is None, "busy:", panel.busy,
      "cancelled:", getattr(panel.result, "cancelled", None))"""
LAYERS, TIMELINE, SWEEP = 0, 1, 2


def _notebook(*sources: str) -> dict:
    cells = [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": s}
             for s in sources]
    return {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}}


@pytest.fixture(scope="module")
def panel(lab, browser):
    (lab.root / "explorer.ipynb").write_text(json.dumps(_notebook(SETUP, CHECK)))
    context = browser.new_context(viewport={"width": 1400, "height": 2300})  # the whole panel in view
    page = context.new_page()
    open_notebook(page, lab, "explorer.ipynb")
    run_all(page)
    wait_finished(page)
    page.wait_for_selector(".widget-vbox .js-plotly-plot", timeout=60_000)
    page.locator(".widget-vbox").first.scroll_into_view_if_needed()
    time.sleep(3.5)  # the figures refit their width 1 s and 3 s after display
    yield page
    context.close()


def button(page, name: str):
    return page.locator("button.jupyter-button", has_text=re.compile(rf"^\s*{re.escape(name)}\s*$"))


def labelled(page, kind: str, label: str):
    return page.locator(f".{kind}:has(.widget-label:text-is('{label}'))")


def message(page) -> str:
    return page.locator(".widget-vbox .widget-html").first.inner_html()


def until(condition, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def wait_idle(page, timeout_s: float = 120) -> None:
    """The panel is idle again: Stop is disabled."""
    deadline = time.monotonic() + timeout_s
    while not button(page, "Stop").is_disabled():
        assert time.monotonic() < deadline, "the panel stayed busy"
        time.sleep(0.1)


def watch(page, index: int, key, timeout_s: float = 120) -> list:
    """Snapshots of figure `index` (reduced by `key`) taken every 50 ms until the panel is idle."""
    seen = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        busy = not button(page, "Stop").is_disabled()
        snapshot = key(figure(page, index))
        if not seen or snapshot != seen[-1]:
            seen.append(snapshot)
        if not busy:
            return seen
        time.sleep(0.05)
    raise AssertionError("the panel stayed busy")


def test_figures_fill_the_width(panel):
    output = panel.locator(".widget-vbox").first.bounding_box()["width"]
    for index in (LAYERS, TIMELINE, SWEEP):
        assert figure(panel, index)["width"] >= 0.9 * output


def test_drag_the_mini_sequence_slider(panel):
    slider = labelled(panel, "widget-slider", "mini-sequences M")
    track = slider.locator(".noUi-target").bounding_box()
    assert track["width"] > 150  # a real track, not a 0 px one
    readout = slider.locator(".widget-readout")
    assert readout.inner_text() == "8"
    handle = slider.locator(".noUi-handle").bounding_box()
    x, y = handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
    panel.mouse.move(x, y)
    panel.mouse.down()
    for step in range(1, 12):
        panel.mouse.move(x + 2 * step, y)
    panel.mouse.up()
    moved = int(readout.inner_text())
    assert moved in (12, 16), f"22 px moved M from 8 to {moved}"


def test_type_a_context(panel):
    box = labelled(panel, "widget-text", "or type").locator("input")
    box.fill("8000")
    box.press("Enter")
    readout = labelled(panel, "widget-slider", "context (tokens)").locator(".widget-readout")
    panel.wait_for_function("(el) => el.textContent.trim() === '8000'", arg=readout.element_handle(), timeout=10_000)


def test_run_draws_live_with_buttons_disabled(panel):
    button(panel, "Run").click()
    until(lambda: not button(panel, "Stop").is_disabled())  # the kernel's answer to the click
    assert button(panel, "Compare with baseline").is_disabled() and button(panel, "Find max context").is_disabled()
    states = watch(panel, LAYERS, lambda f: f["y"])
    assert len(states) >= 3, f"the layer chart changed {len(states) - 1} times during the run"
    assert "8000 tokens" in message(panel) and "8000 tokens" in figure(panel, LAYERS)["title"]
    assert not button(panel, "Run").is_disabled()
    assert "M=12" in figure(panel, LAYERS)["title"] or "M=16" in figure(panel, LAYERS)["title"]


def test_stop_cancels_and_restores(panel):
    panel.locator(".widget-checkbox", has_text="pretend device limit").locator("input").uncheck()
    box = labelled(panel, "widget-text", "or type").locator("input")
    box.fill("16384")
    box.press("Enter")
    time.sleep(0.5)
    button(panel, "Run").click()
    until(lambda: not button(panel, "Stop").is_disabled())
    time.sleep(0.3)
    button(panel, "Stop").click()
    wait_idle(panel)
    assert "stopped" in message(panel)
    panel.locator(".jp-Notebook .jp-Cell").last.locator(".jp-InputArea-editor").click()
    panel.keyboard.press("Control+Enter")  # run the check cell in place
    output = panel.locator(".jp-OutputArea-output", has_text="restored: True")
    output.wait_for(timeout=30_000)
    assert output.inner_text().strip() == "restored: True busy: False cancelled: True"
    panel.locator(".widget-checkbox", has_text="pretend device limit").locator("input").check()
    box.fill("8000")
    box.press("Enter")


def test_compare_charts_both_on_one_scale(panel):
    panel.locator(".widget-vbox").first.scroll_into_view_if_needed()
    button(panel, "Compare with baseline").click()
    until(lambda: not button(panel, "Stop").is_disabled())
    wait_idle(panel)
    layers = figure(panel, LAYERS)
    assert "baseline" in layers["annotations"] and any(a.startswith("M=") for a in layers["annotations"])
    assert layers["ranges"]["yaxis"] == layers["ranges"]["yaxis2"]  # one scale
    timeline = figure(panel, TIMELINE)
    assert "baseline" in timeline["names"] and any(n.startswith("M=") for n in timeline["names"])
    screenshot(panel, "explorer-compare", panel.locator(".widget-vbox").first)


def test_trip_the_limit_and_find_the_wall(panel):
    limit = labelled(panel, "widget-text", "limit (MiB)").locator("input")
    limit.fill("24")  # the baseline's 31.8 MiB peak at 8000 tokens no longer fits; mom's 13.7 MiB does
    limit.press("Enter")
    time.sleep(0.3)
    button(panel, "Compare with baseline").click()
    until(lambda: not button(panel, "Stop").is_disabled())
    wait_idle(panel)
    assert "Failed allocation" in figure(panel, LAYERS)["names"]
    timeline = figure(panel, TIMELINE)
    wall = timeline["y"][timeline["names"].index("baseline: failed allocation")]
    limit_y = next(y0 for kind, y0, _ in timeline["shapes"] if kind == "line")
    assert wall[0] <= limit_y < wall[1]  # from what was in use to past the limit
    lines = message(panel).split("<br>")
    assert "#b00020" in lines[0] and "out of memory" in lines[0]  # the baseline's OOM, in red
    assert "#b00020" not in lines[1] and "peak" in lines[1]  # mom fits
    screenshot(panel, "explorer-oom", panel.locator(".widget-vbox").first)
    top = panel.locator(".widget-vbox").first.bounding_box()
    timeline = panel.locator(".widget-vbox .js-plotly-plot").nth(TIMELINE).bounding_box()
    SCREENSHOTS.mkdir(exist_ok=True)  # the README's picture: controls, both runs per layer, the timeline
    panel.screenshot(path=str(SCREENSHOTS / "explorer-readme.png"),
                     clip=dict(x=top["x"], y=top["y"], width=top["width"],
                               height=timeline["y"] + timeline["height"] - top["y"]))


def test_find_max_shows_tries_one_by_one(panel):
    button(panel, "Find max context").click()
    until(lambda: not button(panel, "Stop").is_disabled())
    counts = watch(panel, SWEEP, lambda f: sum(len(x) for x in f["x"]))
    counts = [c for c in counts if c]  # a redraw that adds a trace passes through an empty figure
    assert len(counts) >= 4, f"the sweep went {counts}: tries did not arrive one by one"
    assert all(b > a for a, b in zip(counts[1:], counts[2:])), counts
    assert "longest context that fits" in message(panel)
    screenshot(panel, "explorer-max-context", panel.locator(".widget-vbox").first)
