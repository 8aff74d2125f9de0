"""What a person does in JupyterLab, as Playwright steps: open a notebook, run it, read it back.

Selectors are JupyterLab 4's and ipywidgets 8's class names; plotly's figures are read from the
page (`.js-plotly-plot` elements carry their data and layout), so the tests check what is drawn.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

IDLE = ".jp-Notebook-ExecutionIndicator[data-status='idle']"
FIGURES = ".jp-OutputArea-output.js-plotly-plot, .jp-OutputArea-output .js-plotly-plot"
WIDGET_VIEWS = ".jp-OutputArea-output .widget-vbox"


def open_notebook(page, lab, name: str, timeout_s: float = 90) -> None:
    """Open `name` (a path under the served folder) and wait for its kernel to be idle."""
    page.goto(lab.notebook_url(name))
    page.wait_for_selector(".jp-Notebook", timeout=timeout_s * 1000)
    page.wait_for_selector(IDLE, timeout=timeout_s * 1000)


def command(page, menu: str, name: str) -> None:
    """Click menu > item in the menu bar, with the notebook focused (a command needs an active notebook)."""
    item = page.locator(".lm-Menu-item:not(.lm-mod-disabled) .lm-Menu-itemLabel",
                        has_text=re.compile(f"^{re.escape(name)}$"))
    for _ in range(5):  # focus can still be moving while the notebook settles: retry
        page.locator(".jp-Notebook .jp-Cell").first.locator(".jp-InputPrompt").click()
        page.keyboard.press("Escape")  # command mode: the notebook, not an editor, has focus
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{menu}$")).click()
        try:
            item.first.wait_for(state="visible", timeout=3000)
            break
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: close the menu, try again
            page.keyboard.press("Escape")
    item.first.click()


def run_all(page) -> None:
    """Clear the stored outputs, then run every cell (as Edit and Run menus do)."""
    command(page, "Edit", "Clear Outputs of All Cells")
    page.wait_for_function("""() => [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
                               .every(p => !/\\d/.test(p.textContent))""", timeout=10_000)
    command(page, "Run", "Run All Cells")


def wait_finished(page, timeout_s: float = 240) -> None:
    """Wait until every code cell has an execution count and the kernel is idle."""
    deadline = time.monotonic() + timeout_s
    script = """() => {
        const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')].map(p => p.textContent);
        return prompts.length > 0 && prompts.every(t => /\\[\\d+\\]/.test(t));
    }"""
    while time.monotonic() < deadline:
        if page.evaluate(script) and page.locator(IDLE).count():
            return
        time.sleep(0.25)
    raise TimeoutError(f"the notebook did not finish in {timeout_s} s")


def save_and_read(page, path: Path) -> dict:
    """Save from the browser (Ctrl+S) and read the file as JupyterLab wrote it."""
    before = path.stat().st_mtime_ns
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 30
    while path.stat().st_mtime_ns == before and time.monotonic() < deadline:
        time.sleep(0.2)
    return json.loads(path.read_text())


def errors_in(notebook: dict) -> list[str]:
    """Error outputs of a saved notebook: 'cell N: Name: message'."""
    return [f"cell {i}: {out.get('ename')}: {out.get('evalue')}"
            for i, cell in enumerate(notebook["cells"]) for out in cell.get("outputs", [])
            if out.get("output_type") == "error"]


def figure(page, index: int) -> dict:
    """The index-th plotly figure on the page: trace names, ys, layout title and annotations, y ranges."""
    return page.evaluate("""(i) => {
        const g = document.querySelectorAll('.js-plotly-plot')[i];
        const axes = Object.keys(g._fullLayout).filter(k => /^yaxis\\d*$/.test(k));
        return {
            names: g.data.map(t => t.name), y: g.data.map(t => Array.from(t.y || [])),
            x: g.data.map(t => Array.from(t.x || [])),
            title: (g._fullLayout.title || {}).text || '',
            annotations: (g._fullLayout.annotations || []).map(a => a.text),
            shapes: (g._fullLayout.shapes || []).map(s => [s.type, s.y0, s.y1]),
            ranges: Object.fromEntries(axes.map(k => [k, g._fullLayout[k].range])),
            width: g._fullLayout.width,
        };
    }""", index)
