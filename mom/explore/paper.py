"""The MOM paper's numbers next to mom's committed measurements (notebook 04).

Anchors: the paper's Tables 1-4 and maximum contexts (A100 80GB, Llama-3-8B, bf16, 200 greedy
tokens), packaged as `mom/explore/data/mom_paper.json` (the same file as the repository's
`benchmarks/anchors/mom_paper.json`; a test keeps them equal), so notebook 04 runs anywhere.

Measurements: inside the repository, every `*.json` under `benchmarks/results/`, read
generically because they come from several scripts: a run record is any JSON object with a
`context` and a `variant` (or a `label`, or a `config` holding one); peaks may be bytes
(`peak_gpu_bytes`) or GiB (`peak_gib`); a maximum-context search is an object with `maximum`
(a `MaxContextResult`) or a record with `max_context`. The card comes from an `environment`
object where one is given. Anything else in a file is ignored.
Outside the repository (an installed package, a notebook copied elsewhere) the same rows come
from `mom/explore/data/measured.json`, one schema (`SUMMARY_SCHEMA`: run rows and
maximum-context rows) written by `write_summary()` from the committed results.

The maximum-context chart puts beside the paper's bars what was measured here: the maxima of
searches, and for each variant the longest context that passed at all (a lower bound on its
maximum), from the current results and, marked as such, from `results/history/` (runs whose
commit was not recorded, such as the 720,896-token pass of `mom` on an H100, kept until re-run).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from ..memory.events import GiB

logger = logging.getLogger(__name__)

TABLES = {
    "Table 1: peak with mini-sequence / without (%)": "table1_peak_ratio_percent",
    "Table 2: total latency (s)": "table2_total_latency_s",
    "Table 3: TTFT (s)": "table3_ttft_s",
    "Table 4: decode (tokens/s)": "table4_decode_tokens_per_s",
}
# mom's benchmark variants that measure what a paper method measures (docs/benchmarks.md)
PAPER_METHOD = {"standard": "standard", "hf-offload": "offload", "hf-chunked": "chunked_prefill_8192",
                "mom-paper": "mom"}
SUMMARY_SCHEMA = "mom.measured/1"
_KINDS = {"search": ("mom, searched maximum", "#1f77b4"),
          "longest pass": ("mom, longest run that passed (a lower bound)", "#2ca02c"),
          "earlier pass": ("mom, longest pass of an earlier engine (commit not recorded; results/history)", "#98df8a")}
MAX_COLUMNS = ["source", "device", "variant", "max_context", "resolution", "kind"]
RESULT_COLUMNS = ["source", "device", "model", "variant", "context", "peak_gib", "prefill_peak_gib", "ttft_s",
                  "decode_tokens_per_s", "oom", "error"]


def benchmarks_dir(start: str | Path | None = None) -> Path | None:
    """The repository's `benchmarks/` folder, looked for from `start` (default: cwd) upwards; None outside it."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "benchmarks" / "anchors").is_dir():
            return folder / "benchmarks"
    return None


def data_file(name: str) -> Path:
    """A file packaged in mom/explore/data/."""
    return Path(str(resources.files("mom.explore") / "data" / name))


def load_anchors(path: str | Path | None = None) -> dict[str, Any]:
    """The paper's numbers (packaged; or the anchors file at `path`)."""
    return json.loads(Path(path or data_file("mom_paper.json")).read_text())


def anchor_tables(anchors: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Tables 1-4 as DataFrames: one row per method, one column per context (tokens)."""
    contexts = anchors["contexts"]
    return {title: pd.DataFrame(anchors[key], index=contexts).T.rename_axis("method / context")
            for title, key in TABLES.items()}


def peak_ratio_table(model, contexts: list[int], mini_sequence_size: int, new_tokens: int = 8,
                     limit_bytes: int | None = None) -> pd.DataFrame:
    """Table 1 measured here: peak with mini-sequences / without, in %, without and with offload.

    "Without" is Hugging Face's generate() (`MomConfig()`), or offload alone
    (`MomConfig(offload="prefill", trim_last_layer=False)`); "with" adds mini-sequences of
    `mini_sequence_size` tokens and the last-layer trim. The paper's "without" is a plain
    forward with every position's logits, a larger peak, so its ratios are lower.
    """
    from ..config import MomConfig
    from ..memory.profile import profile

    pairs = {
        "no_offload": (MomConfig(), MomConfig(mini_sequence_size=mini_sequence_size)),
        "offload": (MomConfig(offload="prefill", trim_last_layer=False),
                    MomConfig(mini_sequence_size=mini_sequence_size, offload="prefill")),
    }
    rows = {}
    for name, (without, with_) in pairs.items():
        peaks = [[profile(model, cfg, context, new_tokens, limit_bytes=limit_bytes, record=False).peak_gpu_bytes
                  for cfg in (without, with_)] for context in contexts]
        rows[name] = [round(100 * w / wo, 3) for wo, w in peaks]
    return pd.DataFrame(rows, index=contexts).T.rename_axis("method / context")


def paper_max_contexts(anchors: dict[str, Any]) -> pd.Series:
    """The paper's maximum context per method, in tokens."""
    return pd.Series(anchors["max_context_tokens"], name="max context (tokens)")


def load_results(folder: str | Path | None = None) -> pd.DataFrame:
    """Every run record, one row each: from `folder`, else benchmarks/results, else the packaged summary."""
    if folder is None and _results_dir() is None:
        return pd.DataFrame(_summary()["runs"], columns=RESULT_COLUMNS)
    rows = [row for path, data in _json_files(folder) for row in _run_rows(path, data)]
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def load_max_contexts(folder: str | Path | None = None) -> pd.DataFrame:
    """Maximum contexts measured, by `kind`: "search" (a search's maximum), "longest pass" (per
    device and variant, the longest context that passed: a lower bound), and "earlier pass" (the
    same from results/history/: runs whose commit was not recorded, kept until re-run).
    Same sources as `load_results`."""
    if folder is None and _results_dir() is None:
        return pd.DataFrame(_summary()["max_context"], columns=MAX_COLUMNS)
    folder = Path(folder) if folder is not None else _results_dir()
    rows = [row for path, data in _json_files(folder) for row in _max_rows(path, data)]
    searches = pd.DataFrame(rows, columns=MAX_COLUMNS)
    current = longest_passes(load_results(folder))
    earlier = longest_passes(load_results(folder / "history")).assign(kind="earlier pass")
    earlier = earlier[~earlier.set_index(["device", "variant"]).index.isin(current.set_index(["device", "variant"]).index)]
    return pd.concat([searches, current, earlier], ignore_index=True)


def longest_passes(results: pd.DataFrame) -> pd.DataFrame:
    """Per device and variant, the longest context of a run that passed (from `load_results` rows)."""
    ok = results[~results["oom"].astype(bool)] if not results.empty else results
    if ok.empty:
        return pd.DataFrame(columns=MAX_COLUMNS)
    best = ok.loc[ok.groupby(["device", "variant"])["context"].idxmax()]
    return pd.DataFrame({"source": best["source"], "device": best["device"], "variant": best["variant"],
                         "max_context": best["context"].astype(int), "resolution": None,
                         "kind": "longest pass"}, columns=MAX_COLUMNS).reset_index(drop=True)


def summary(folder: str | Path | None = None) -> dict[str, Any]:
    """The committed measurements in the packaged schema: {"schema", "runs", "max_context"}."""
    def records(frame: pd.DataFrame) -> list[dict]:
        return frame.astype(object).where(frame.notna(), None).to_dict("records")

    return {"schema": SUMMARY_SCHEMA, "runs": records(load_results(folder)),
            "max_context": records(load_max_contexts(folder))}


def write_summary(path: str | Path | None = None, folder: str | Path | None = None) -> Path:
    """Refresh the packaged copy from benchmarks/results (run from the repository after committing results)."""
    path = Path(path or data_file("measured.json"))
    path.write_text(json.dumps(summary(folder), indent=1) + "\n", encoding="utf-8")
    return path


def _summary() -> dict[str, Any]:
    data = json.loads(data_file("measured.json").read_text())
    if data.get("schema") != SUMMARY_SCHEMA:
        raise ValueError(f"{data_file('measured.json')}: schema {data.get('schema')!r}, expected {SUMMARY_SCHEMA!r}")
    return data


def _results_dir() -> Path | None:
    bench = benchmarks_dir()
    return bench / "results" if bench is not None else None


def results_tables(results: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Measured peak (GiB), TTFT (s), decode (tokens/s): a row per device and variant, a column per context.

    Cells are display strings; a run that ran out of memory reads "OOM".
    """
    if results.empty:
        return {}
    tables = {}
    for title, column in (("peak GiB", "peak_gib"), ("TTFT (s)", "ttft_s"), ("decode (tokens/s)", "decode_tokens_per_s")):
        cells = [("OOM" if oom else ("-" if pd.isna(v) else f"{v:.2f}"))
                 for v, oom in zip(results[column], results["oom"].astype(bool), strict=True)]
        table = results.assign(cell=cells).pivot_table(index=["device", "variant"], columns="context", values="cell",
                                                       aggfunc="last")
        tables[title] = table.fillna("")
    return tables


def comparison_figure(anchors: dict[str, Any], results: pd.DataFrame, key: str = "table3_ttft_s",
                      column: str = "ttft_s", title: str = "TTFT against context") -> go.Figure:
    """The paper's methods (dashed) and mom's measured variants (solid) for one metric against context."""
    fig = go.Figure(layout=go.Layout(title=title, xaxis_title="context (tokens)", yaxis_title=title.split(" against")[0],
                                     template="plotly_white", height=380))
    for method, values in anchors[key].items():
        fig.add_scatter(x=anchors["contexts"], y=values, name=f"paper: {method}", mode="lines+markers",
                        line=dict(dash="dash"))
    for (device, variant), group in results.groupby(["device", "variant"]) if not results.empty else ():
        ok = group[~group["oom"].astype(bool)].sort_values("context")
        fig.add_scatter(x=list(ok["context"]), y=list(ok[column]), name=f"{variant} ({device})", mode="lines+markers")
    return fig


def max_context_figure(anchors: dict[str, Any], measured: pd.DataFrame | None = None) -> go.Figure:
    """Maximum context per method: the paper's (A100 80GB) in grey, mom's measured ones beside them
    (a search's maximum, or the longest run that passed, labelled as such)."""
    paper = paper_max_contexts(anchors)
    rows = 0 if measured is None else len(measured)
    fig = go.Figure(layout=go.Layout(title="Maximum context", xaxis_title="tokens", template="plotly_white",
                                     height=140 + 28 * (len(paper) + rows), margin=dict(l=260)))
    fig.add_bar(y=[f"paper: {m}" for m in paper.index], x=list(paper), orientation="h",
                name=f"paper ({anchors.get('hardware', '')})", marker_color="#9e9e9e",
                text=[f"{v:,}" for v in paper], textposition="auto")
    if measured is not None and not measured.empty:
        for kind, group in measured.groupby("kind", sort=False):
            name, color = _KINDS.get(kind, (f"mom, {kind}", "#1f77b4"))
            fig.add_bar(y=[f"{v} ({d})" for v, d in zip(group["variant"], group["device"], strict=True)],
                        x=list(group["max_context"]), orientation="h", name=name, marker_color=color,
                        text=[f"{int(v):,}" for v in group["max_context"]], textposition="auto")
    fig.update_layout(yaxis=dict(autorange="reversed"))
    return fig


def _json_files(folder: str | Path | None) -> Iterator[tuple[Path, Any]]:
    folder = Path(folder) if folder is not None else _results_dir()
    for path in sorted(folder.glob("*.json")) if folder is not None and folder.is_dir() else ():  # history/ holds superseded runs
        try:
            yield path, json.loads(path.read_text())
        except (OSError, ValueError) as error:
            logger.warning("skipping %s: %s", path, error)


def _objects(data: Any, depth: int = 0) -> Iterator[dict]:
    """Every JSON object in `data`, outermost first (not inside run records' own fields)."""
    if depth > 6:
        return
    if isinstance(data, dict):
        yield data
        for value in data.values():
            if isinstance(value, (dict, list)):
                yield from _objects(value, depth + 1)
    elif isinstance(data, list):
        for item in data:
            yield from _objects(item, depth + 1)


def _device(data: Any) -> str:
    env = data.get("environment", {}) if isinstance(data, dict) else {}
    return str(env.get("card") or env.get("device") or (data.get("device_name", "") if isinstance(data, dict) else ""))


def _variant(record: dict) -> str | None:
    for value in (record.get("variant"), record.get("label")):
        if value:
            return str(value)
    config = record.get("config")
    return str(config.get("label")) if isinstance(config, dict) and config.get("label") else None


def _run_rows(path: Path, data: Any) -> Iterator[dict]:
    device, model = _device(data), data.get("model", "") if isinstance(data, dict) else ""
    for record in _objects(data):
        variant = _variant(record)
        if variant is None or not isinstance(record.get("context"), int) or "maximum" in record:
            continue
        peak = record.get("peak_gib", _gib(record.get("peak_gpu_bytes")))
        yield dict(source=path.name, device=record.get("device_name") or device, model=record.get("model_name", model),
                   variant=variant, context=record["context"], peak_gib=peak,
                   prefill_peak_gib=record.get("prefill_peak_gib", _gib(record.get("prefill_peak_bytes"))),
                   ttft_s=record.get("ttft_s"), decode_tokens_per_s=record.get("decode_tokens_per_s"),
                   oom=bool(record.get("oom", False)), error=record.get("error"))


def _max_rows(path: Path, data: Any) -> Iterator[dict]:
    device = _device(data)
    for record in _objects(data):
        if "maximum" in record and isinstance(record.get("tries"), list):
            tries = [t for t in record["tries"] if isinstance(t, dict)]
            variant = record.get("variant") or next((_variant(t) for t in tries if _variant(t)), "?")
            run_device = next((t.get("device_name") for t in tries if t.get("device_name")), device)
            yield dict(source=path.name, device=run_device, variant=variant, max_context=record["maximum"],
                       resolution=record.get("resolution"), kind="search")
        elif "max_context" in record and _variant(record):
            yield dict(source=path.name, device=record.get("device_name") or device, variant=_variant(record),
                       max_context=record["max_context"], resolution=record.get("resolution"), kind="search")


def _gib(n: int | float | None) -> float | None:
    return None if n is None else n / GiB
