"""Re-execute the notebooks on CPU and store them with their widget state (see notebooks/README.md).

    CUDA_VISIBLE_DEVICES= python notebooks/execute.py            # all four
    CUDA_VISIBLE_DEVICES= python notebooks/execute.py 01 03      # by number

Widget state is stored so a notebook opened without running it shows the explorer's controls
instead of a `VBox(children=...)` text repr. Plotly's FigureWidget is an anywidget whose state
carries plotly's whole 5 MB JavaScript bundle (`_esm`) per figure, 15 MB a notebook; this
script replaces that bundle with a few lines that show the figure's title and ask to run the
notebook (the stored outputs of the static figures keep their data). Running the notebook
brings the live figures back.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
from nbconvert.preprocessors import ExecutePreprocessor

HERE = Path(__file__).resolve().parent
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
PLACEHOLDER_ESM = """export default { render({ model, el }) {
  const title = ((model.get("_widget_layout") || {}).title || {}).text || "figure";
  el.style.cssText = "padding:1em;margin:4px 0;border:1px dashed #bbb;color:#666;font:13px sans-serif";
  el.textContent = title + ": run the notebook to draw this figure live";
} };
"""


def execute(path: Path) -> int:
    """Run one notebook in place with widget state stored; returns the bytes written."""
    notebook = nbformat.read(path, as_version=4)
    ExecutePreprocessor(timeout=900, store_widget_state=True).preprocess(notebook, {"metadata": {"path": str(HERE)}})
    slim_widget_state(notebook)
    nbformat.write(notebook, path)
    return path.stat().st_size


def slim_widget_state(notebook) -> None:
    """Swap each stored anywidget bundle for the placeholder; drop the state when no widget is shown."""
    widgets = notebook.metadata.get("widgets", {}).get(WIDGET_STATE)
    if not widgets:
        return
    shown = any("application/vnd.jupyter.widget-view+json" in output.get("data", {})
                for cell in notebook.cells for output in cell.get("outputs", []))
    if not shown:
        del notebook.metadata["widgets"]
        return
    for model in widgets["state"].values():
        if "_esm" in model.get("state", {}):
            model["state"]["_esm"] = PLACEHOLDER_ESM


def main(argv: list[str]) -> None:
    names = sorted(HERE.glob("0*.ipynb"))
    if argv:
        names = [p for p in names if any(p.name.startswith(a) for a in argv)]
    for path in names:
        print(json.dumps({"notebook": path.name, "bytes": execute(path)}))


if __name__ == "__main__":
    main(sys.argv[1:])
