"""Each notebook, run in JupyterLab in a real browser: no errors, every figure and widget drawn.

The server serves a copy of notebooks/ outside the repository, so notebook 04 also proves it
needs no benchmarks/ folder next to it.
"""

from __future__ import annotations

import pytest

from .conftest import screenshot
from .notebook import FIGURES, WIDGET_VIEWS, errors_in, open_notebook, run_all, save_and_read, wait_finished

# notebook: (plotly figures, explorer widget views) once run
EXPECTED = {
    "01_quickstart.ipynb": (4, 1),  # baseline and mom side by side; the explorer's three figures
    "02_where_memory_goes.ipynb": (4, 0),  # the 8B's predicted layers too
    "03_long_context_on_gpu.ipynb": (8, 2),  # two sweeps; three figures each of the measure and simulate explorers
    "04_paper_reproduction.ipynb": (1, 0),  # the maximum-context chart; the tables are HTML
}

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_in_the_browser(lab, page, name):
    open_notebook(page, lab, name)
    run_all(page)
    wait_finished(page)
    figures, views = EXPECTED[name]
    page.wait_for_function(f"document.querySelectorAll('{FIGURES}').length >= {figures}", timeout=30_000)
    screenshot(page, name.removesuffix(".ipynb"))
    assert page.locator(FIGURES).count() == figures
    assert page.locator(WIDGET_VIEWS).count() == views
    assert errors_in(save_and_read(page, lab.root / name)) == []
    assert not [e for e in page.errors if "plotly" in e.lower() or "widget" in e.lower()], page.errors
