"""What the Explorer says under its buttons: the hint, each run's outcome, a search's answer.

Words only, from finished results: the Explorer (explorer.py) decides when to say them. Every line
is plain text; `html_lines` colours the ones that report a failure, so a test reads the same
sentence the user does.
"""

from __future__ import annotations

import html
import math

from ..memory.events import MaxContextResult, Profile, format_bytes
from . import plots

_RED, _INK = "#b00020", "#333"


def html_lines(lines: list[tuple[str, bool]]) -> str:
    """(text, is an error) lines as the message widget's HTML: errors in red, one line each."""
    spans = [f"<span style='color:{_RED if error else _INK}'>{html.escape(text)}</span>" for text, error in lines]
    return "<br>".join(spans)


def hint(simulating: bool, gpu: str, where: str) -> str:
    """What the panel offers before the first run; `where` names the machine a measured run uses."""
    if simulating:
        return (f"Simulate: mom.predict runs mom's own code on shape-only tensors and answers for a "
                f"{gpu} in about a second, no GPU needed. Choose settings, then Run; "
                "Compare predicts the baseline beside them. Measure runs real models on this machine.")
    return f"Choose settings, then Run; Compare runs the baseline beside them ({where})."


def outcome_line(run: Profile, predicted_on: str | None = None) -> str:
    """One run's result: stopped, out of memory (and why), or its peak."""
    where = f"{plots.profile_label(run)} at {run.context} tokens" + (f", {predicted_on}" if predicted_on else "")
    if run.cancelled:
        return f"{where}: stopped"
    if run.oom:
        return f"{where}: out of memory ({run.error})"
    return f"{where}: peak {format_bytes(run.peak_gpu_bytes)}"


def try_line(label: str, number: int, run: Profile) -> str:
    """One try of a search, as it finishes."""
    outcome = "stopped" if run.cancelled else "out of memory" if run.oom else format_bytes(run.peak_gpu_bytes)
    return f"{label}: try {number}, {run.context} tokens: {outcome}"


def max_context_message(result: MaxContextResult, label: str, predicted_on: str | None = None) -> str:
    """A search's answer: the longest context that fits and the first that did not, or why there is none."""
    tries = f"{len(result.tries)} tries" + (f", {predicted_on}" if predicted_on else "")
    if result.cancelled:
        so_far = f"the longest passing so far is {result.maximum} tokens" if result.maximum else "nothing passed yet"
        return f"{label}: search stopped after {tries}; {so_far}"
    if not result.limit_reached:
        return (f"{label}: no limit reached below the cap ({result.high} tokens): every context tried fits; "
                f"{tries}")
    if result.maximum is None:
        return f"{label}: even the shortest context tried ran out of memory; {tries}"
    failing = result.first_failure_above
    above = f"; {failing.context} tokens did not" if failing is not None else ""
    return (f"{label}: the longest context that fits is {result.maximum} tokens "
            f"(to {result.resolution} tokens){above}; {tries}")


def expected_tries(high: int, resolution: int) -> int:
    """About how many tries a search makes (the progress bar's length): doublings up to high, then
    halvings of the bracket."""
    steps = max(1, math.ceil(math.log2(max(high // resolution, 1))))
    return 2 * steps + 1
