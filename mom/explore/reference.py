"""The real-size measurements notebooks put predictions beside: llama-3.1-8b on an H100 and an H200.

A notebook on a laptop (or in CI) cannot run the 8B model, but it can predict it (mom.predict)
and it can read what was measured on the GPU machine. The figures come from two committed
result files, each with its card and commit:
- benchmarks/results/2026-11-28_h100_decode_repeats.json: H100 80GB, 4k and 128k tokens, three
  rounds through generate() (peaks are the same every round; decode speeds are not);
- benchmarks/results/2026-11-28_h200_predict_accuracy.json: H200, 32k, 128k and 256k tokens.
`write_reference()` extracts them into the packaged mom/explore/data/reference_8b.json (one
schema, so the notebooks run outside the repository too; a test keeps the file equal to what the
results give), and `load_reference()` reads it. No figure is typed by hand.

Variant names are the benchmarks' (benchmarks/harness.py VARIANTS; a test keeps them equal).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import MomConfig
from ..memory.events import GiB
from .paper import benchmarks_dir, data_file

SCHEMA = "mom.reference/1"
FILE = "reference_8b.json"
SOURCES = ("2026-11-28_h100_decode_repeats.json", "2026-11-28_h200_predict_accuracy.json")
VARIANTS = {
    "hf": MomConfig(),
    "mom-paper": MomConfig.paper(),
    "mom-none": MomConfig(mini_sequence_size=4096),
    "mom-prefill": MomConfig(mini_sequence_size=4096, offload="prefill"),
    "mom-stream": MomConfig(mini_sequence_size=4096, offload="stream"),
    "mom-auto": MomConfig(mini_sequence_size=4096, offload="auto"),
}
COLUMNS = ["variant", "context", "card", "commit", "source", "new_tokens", "peak_gib", "prefill_peak_gib", "oom",
           "decode_s_per_token", "decode_rounds", "host_ram_gib"]


def load_reference(path: str | Path | None = None) -> pd.DataFrame:
    """The packaged measurements, one row per (source, variant, context), columns COLUMNS."""
    data = json.loads(Path(path or data_file(FILE)).read_text())
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{path or FILE} is not a {SCHEMA} file (schema {data.get('schema')!r})")
    return pd.DataFrame(data["runs"], columns=COLUMNS)


def config_of(variant: str) -> MomConfig:
    """The MomConfig a benchmark variant ran.

    Raises:
        ValueError: a variant this reference does not hold.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    return VARIANTS[variant]


def reference(results: str | Path | None = None) -> dict[str, Any]:
    """The reference file's content, extracted from the committed results folder."""
    folder = Path(results) if results else (benchmarks_dir() or Path("benchmarks")) / "results"
    runs = []
    for name in SOURCES:
        data = json.loads((folder / name).read_text())
        runs += _rows(name, data)
    return {"schema": SCHEMA, "model": "llama-3.1-8b", "sources": list(SOURCES), "runs": runs}


def write_reference(path: str | Path | None = None, results: str | Path | None = None) -> Path:
    """Write the packaged reference file from the committed results (run inside the repository)."""
    out = Path(path or data_file(FILE))
    out.write_text(json.dumps(reference(results), indent=1) + "\n")
    return out


def _rows(name: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    env = data.get("environment", {})
    commit = env.get("commit") or data.get("commit") or data.get("provenance", {}).get("commit")
    base = dict(card=env.get("card"), commit=commit, source=name, host_ram_gib=env.get("host_ram_gib"))
    groups: dict[tuple[str, int], list[dict]] = {}
    for run in data["runs"]:
        if run.get("clock", "generate+streamer") != "generate+streamer":
            continue  # the manual-loop timings measure another clock
        measured = run.get("measured", run)
        groups.setdefault((run["variant"], run["context"]), []).append(measured)
    rows = []
    for (variant, context), measured in groups.items():
        decode = [m["decode_s_per_token"] for m in measured if m.get("decode_s_per_token") is not None]
        rows.append(dict(base, variant=variant, context=context,
                         new_tokens=data.get("args", {}).get("new_tokens"),
                         peak_gib=max(m["peak_gib"] for m in measured),
                         prefill_peak_gib=max(m["prefill_peak_gib"] for m in measured),
                         oom=any(m["oom"] for m in measured),
                         decode_s_per_token=statistics.median(decode) if decode else None,
                         decode_rounds=len(decode)))
    return rows


def beside_predictions(measured: pd.DataFrame, gpu: str = "H100-80GB", host_bytes: int | None = None,
                       model: str = "llama-3.1-8b") -> pd.DataFrame:
    """Each measured row with mom.predict's answer for `gpu` beside it (same variant, context, tokens).

    Returns:
        The rows with `predicted_on`, `predicted_peak_gib`, `predicted_oom` and `prediction` (the
        Prediction, for figures) added.
    """
    from ..simulate import predict

    out = measured.copy()
    predictions = [predict(model, config_of(row.variant), int(row.context), int(row.new_tokens), gpu=gpu,
                           host_bytes=host_bytes) for row in measured.itertuples()]
    out["predicted_on"] = [p.gpu for p in predictions]
    out["predicted_peak_gib"] = [p.peak_gpu_bytes / GiB for p in predictions]
    out["predicted_oom"] = [p.oom for p in predictions]
    out["prediction"] = predictions
    return out
