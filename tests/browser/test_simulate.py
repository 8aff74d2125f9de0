"""The explorer on a machine without a GPU, in a real browser: it opens in simulate mode on the
real-size llama-3.1-8b on a simulated H100-80GB, a Run draws predicted figures in GiB, and the GPU
dropdown changes the answer (an RTX 4090 cannot hold 128k tokens of the 8B model)."""

from __future__ import annotations

import json
import time

import pytest

from .conftest import SCREENSHOTS
from .notebook import figure, open_notebook, run_all, wait_finished
from .test_explorer import LAYERS, SWEEP, TIMELINE, _notebook, button, message, until

pytestmark = pytest.mark.browser

SETUP = """from mom.explore import Explorer
panel = Explorer()
panel.controls["new_tokens"].value = 4
panel"""


@pytest.fixture(scope="module")
def panel(lab, browser):
    (lab.root / "simulate.ipynb").write_text(json.dumps(_notebook(SETUP)))
    context = browser.new_context(viewport={"width": 1400, "height": 2300})
    page = context.new_page()
    open_notebook(page, lab, "simulate.ipynb")
    run_all(page)
    wait_finished(page)
    page.wait_for_selector(".widget-vbox .js-plotly-plot", timeout=60_000)
    time.sleep(3.5)  # the figures refit their width 1 s and 3 s after display
    yield page
    context.close()


def run_and_wait(page, words: str, timeout_s: float = 120) -> None:
    button(page, "Run").click()
    until(lambda: words in message(page) and not button(page, "Run").is_disabled(), timeout_s)


def test_opens_in_simulate_mode(panel):
    assert panel.locator(".widget-toggle-buttons button.mod-active").inner_text().strip() == "simulate"
    assert panel.locator(".widget-dropdown:has(.widget-label:text-is('simulated GPU')) select").input_value() \
        == "H100-80GB"
    assert panel.locator(".widget-dropdown:has(.widget-label:text-is('model')) select").input_value() == "llama-3.1-8b"
    assert button(panel, "Stop").is_disabled()
    assert "mom.predict" in message(panel)


def test_run_draws_predicted_figures_in_gib(panel):
    run_and_wait(panel, "predicted on H100-80GB: peak")
    assert button(panel, "Stop").is_disabled()  # never enabled while predicting
    layers = figure(panel, LAYERS)
    assert "predicted on H100-80GB" in layers["title"] and "128k tokens" in layers["title"]
    weights = layers["y"][layers["names"].index("Weights")]
    assert 0.3 < weights[1] < 0.6  # one 8B decoder layer's weights, in GiB
    assert "predicted on H100-80GB" in figure(panel, TIMELINE)["title"]
    assert "predicted on H100-80GB" in figure(panel, SWEEP)["title"]
    assert "calibration: 64.00 MiB" in message(panel)
    SCREENSHOTS.mkdir(exist_ok=True)
    top = panel.locator(".widget-vbox").first.bounding_box()
    timeline = panel.locator(".widget-vbox .js-plotly-plot").nth(TIMELINE).bounding_box()
    panel.screenshot(path=str(SCREENSHOTS / "explorer-simulate.png"),
                     clip=dict(x=top["x"], y=top["y"], width=top["width"],
                               height=timeline["y"] + timeline["height"] - top["y"]))


def test_the_gpu_dropdown_changes_the_answer(panel):
    panel.locator(".widget-dropdown:has(.widget-label:text-is('simulated GPU')) select").select_option("RTX-4090-24GB")
    time.sleep(0.5)
    run_and_wait(panel, "predicted on RTX-4090-24GB")
    assert "out of memory" in message(panel)
    assert "Failed allocation" in figure(panel, LAYERS)["names"]
    assert "RTX-4090-24GB" in figure(panel, LAYERS)["title"]
