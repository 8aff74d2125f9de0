"""`mom demo`: baseline against mom on one model, as an offline HTML report and a terminal table.

The demo is the README's first command, so it picks a case where the difference is plain on
whatever machine runs it: on a GPU the `llama-3.1-8b` preset at 128k tokens (the baseline
needs about 45 GiB there, mom holds the weights plus the cache); on a CPU the `tiny-llama`
preset at 8k tokens through the tensor tracker. Both runs use the same seeded prompt. On CPU
the table leaves timings out: under the tracker's hooks they varied up to 4x between two runs.
Arguments are checked before the model loads (a bad context or report path costs nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import checks
from ..config import MomConfig
from ..load import load
from ..memory.events import Profile
from ..memory.profile import profile
from .live import model_weights_by_layer
from .report import comparison_frame, terminal_table, write_report

GPU_CASE = dict(model="llama-3.1-8b", context=131072, new_tokens=32)
CPU_CASE = dict(model="tiny-llama", context=8192, new_tokens=8)
DEMO_CONFIG = MomConfig(mini_sequences=16, offload="auto")
CPU_TIMINGS_LEFT_OUT = ("timings left out: on CPU the tensor tracker hooks every allocation, so TTFT and decode "
                        "rates vary run to run and are not meaningful; the memory columns are")


@dataclass
class DemoResult:
    """What `run_demo` made: the report's path, the two runs, and the terminal table."""

    path: Path
    profiles: list[Profile] = field(default_factory=list)
    table: str = ""


def run_demo(model: str | None = None, context: int | None = None, new_tokens: int | None = None,
             config: MomConfig | None = None, path: str | Path = "mom-report.html",
             device: str | None = None, limit_bytes: int | None = None) -> DemoResult:
    """Profile the baseline and mom on one model and write the HTML report.

    Args:
        model: a preset name or hub id; default `llama-3.1-8b` on a GPU, `tiny-llama` on CPU.
        context: prompt tokens; default 131072 on a GPU, 8192 on CPU.
        new_tokens: greedy tokens after the prompt; default 32 on a GPU, 8 on CPU.
        config: mom's settings; default `MomConfig(mini_sequences=16, offload="auto")`.
        path: where the report goes.
        device: "cuda" or "cpu"; default cuda when available.
        limit_bytes: pretend device memory of CPU runs (the tracker's limit); None: no limit;
            0 or negative is a ValueError.

    Returns:
        DemoResult with the report path, both Profiles (baseline first) and the table text.

    Raises:
        TypeError / ValueError: a careless argument (mom/checks.py), before the model loads.
    """
    device = checks.check_device(device) or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    case = GPU_CASE if device.type == "cuda" else CPU_CASE
    name = model if model is not None else case["model"]
    context = checks.check_context(context) if context is not None else case["context"]
    new_tokens = checks.count(new_tokens, "new_tokens") if new_tokens is not None else case["new_tokens"]
    config, limit_bytes = checks.check_config(config), checks.check_limit(limit_bytes)
    path = checks.check_output_path(path, "the report path", "mom-report.html")
    loaded = load(name, device=device)
    runs = [profile(loaded, cfg, context, new_tokens, limit_bytes=limit_bytes)
            for cfg in (MomConfig(), config or DEMO_CONFIG)]
    for run in runs:  # the preset or hub name, not the family a preset's config reports ("llama")
        run.model_name = name
    note = (f"{name} on {runs[0].device_name or device}, {context} prompt tokens, {new_tokens} greedy tokens; "
            f"made by mom.explore.run_demo(model={name!r}, context={context}, new_tokens={new_tokens})")
    written = write_report(runs, path, title=f"mom: baseline against mom on {name}",
                           weights_by_layer=model_weights_by_layer(loaded), note=note)
    return DemoResult(path=written, profiles=runs, table=_table(runs, device))


def _table(runs: list[Profile], device: torch.device) -> str:
    """The terminal table; on CPU without timings (the tracker's hooks make them noise)."""
    if device.type == "cuda":
        return terminal_table(runs)
    return comparison_frame(runs, timings=False).to_string(index=False) + "\n" + CPU_TIMINGS_LEFT_OUT
