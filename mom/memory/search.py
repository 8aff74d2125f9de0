"""find_max_context(): the longest context that runs, found with as few runs as possible.

It doubles the context from `low` until a try fails, then narrows the bracket to one
`resolution` step. Inside the bracket it may aim at the context where the measured growth of
peak memory per token meets the device limit (at most twice in a row, then a plain
bisection), but the answer is always a tried passing context whose neighbour one step up was
tried and failed, unless `high` itself passed: then `limit_reached` is False, and the answer
is the cap, not a limit. Each try is a full `profile()` run (run.py); a try that hits host RAM
(mom's host-RAM guard) is a failure like a device OOM, told apart by its `oom_kind`. A Cancel
token stops the try in flight and the search with it; the result keeps what was found.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from torch import nn

from .. import checks
from ..config import MomConfig
from .cancel import Cancel, RunCancelled
from .events import MaxContextResult, Profile, format_bytes
from .probes import Probe, default_probe
from .recorder import Listener
from .run import profile
from .tables import outcome

logger = logging.getLogger(__name__)


def find_max_context(
    model: nn.Module,
    config: MomConfig | None = None,
    new_tokens: int = 32,
    resolution: int = 8192,
    low: int | None = None,
    high: int | None = None,
    probe: Probe | None = None,
    limit_bytes: int | None = None,
    progress: bool = True,
    record: bool = True,
    batch: int = 1,
    seed: int = 0,
    jsonl: str | Path | None = None,
    on_try: Callable[[Profile], None] | None = None,
    cancel: Cancel | None = None,
    listeners: tuple[Listener, ...] | list[Listener] = (),
) -> MaxContextResult:
    """The largest context (a multiple of `resolution`) that runs without out-of-memory.

    Args:
        model, config, new_tokens, batch, seed, record, jsonl: as for `profile`, per try.
        resolution: step between contexts tried; the answer is exact to one step.
        low: first context tried (default: one resolution step); rounded up to a step.
        high: largest context tried (default: the model's max_position_embeddings); rounded down.
        probe / limit_bytes: as for `profile`; one probe serves every try.
        progress: show a tqdm progress bar.
        on_try: called with each try's Profile as soon as it finishes (a UI draws tries one by one).
        cancel: a Cancel token: stops the try in flight, and with it the search.
        listeners: passed to every try's `profile` (live plots of the try in flight).

    Returns:
        MaxContextResult: `maximum` (None if `low` fails), every try in order, the cap `high`,
        `limit_reached` (False: every try up to `high` passed, so `maximum` is the cap, not a
        limit), `wall` ("device" / "host" / None) and `cancelled`.

    Raises:
        ValueError: low above high, or a non-positive resolution.
        TypeError / ValueError: a careless argument (mom/checks.py), before anything runs.
    """
    model, config = checks.search_arguments(model, config, new_tokens, resolution, low, high, limit_bytes, batch)
    low, high = _search_bounds(model, resolution, low, high)
    probe = probe or default_probe(model, limit_bytes)
    if probe.limit is None:
        logger.warning("the %s probe has no device limit: every try up to high=%d will pass", probe.backend, high)
    tries: list[Profile] = []

    from tqdm.auto import tqdm

    with tqdm(desc="max context", unit="try", disable=not progress) as bar:
        def attempt(context: int) -> bool:
            bar.set_postfix_str(f"trying {context}")
            run = profile(model, config, context, new_tokens, batch, seed, probe=probe, record=record,
                          listeners=listeners, jsonl=jsonl, cancel=cancel)
            tries.append(run)
            bar.update(1)
            bar.set_postfix_str(f"{context}: {format_bytes(run.peak_gpu_bytes) if run.passed else outcome(run)}")
            if on_try is not None:
                on_try(run)
            if run.cancelled:
                raise RunCancelled(run.error)
            return not run.oom

        with contextlib.suppress(RunCancelled):
            bracket_search(attempt, tries, low, high, resolution, probe.limit)
    passing = [p.context for p in tries if p.passed]
    # the largest passing try: with a cancelled search, the bracket so far
    maximum = max((c for c in passing if not any(p.oom and p.context <= c for p in tries)), default=None)
    return MaxContextResult(maximum=maximum, resolution=resolution, tries=tries, high=high)


def bracket_search(attempt, tries: list[Profile], low: int, high: int, resolution: int, limit: int | None,
                   growth: int = 2) -> tuple[int | None, int | None]:
    """Grow by `growth` from low, then narrow the bracket to one resolution step (module
    docstring); `attempt(context)` runs a try, appends it to `tries` and says if it passed.
    Returns (largest passing, smallest failing) context, None where there is none."""
    passing, failing = _grow(attempt, low, high, growth)
    streak = 0
    while passing is not None and failing is not None and failing - passing > resolution:
        context, predicted = _next_try(passing, failing, tries, limit, resolution, streak)
        streak = streak + 1 if predicted else 0
        if attempt(context):
            passing = context
        else:
            failing = context
    return passing, failing


def _search_bounds(model, resolution: int, low: int | None, high: int | None) -> tuple[int, int]:
    if resolution <= 0:
        raise ValueError(f"resolution must be a positive number of tokens, got {resolution}")
    low = -(-(low or resolution) // resolution) * resolution
    high = high if high is not None else getattr(model.config, "max_position_embeddings", 0) or low
    high = high // resolution * resolution
    if low > high:
        raise ValueError(f"low ({low}) is above high ({high}) once rounded to the resolution ({resolution})")
    return low, high


def _grow(attempt, low: int, high: int, growth: int = 2) -> tuple[int | None, int | None]:
    """Multiply by `growth` from low until a try fails or high passes: (last passing, first failing)."""
    passing, context = None, low
    while True:
        if not attempt(context):
            return passing, context
        passing = context
        if context >= high:
            return passing, None
        context = min(growth * context, high)


def _next_try(passing: int, failing: int, tries: list[Profile], limit: int | None,
              resolution: int, streak: int) -> tuple[int, bool]:
    """The next context inside (passing, failing): predicted from peak growth, or the midpoint."""
    lo, hi = passing + resolution, failing - resolution
    middle = (passing + failing) // 2 // resolution * resolution
    guess = _predict(tries, limit) if streak < 2 else None
    if guess is None:
        return min(max(middle, lo), hi), False
    return min(max(guess // resolution * resolution, lo), hi), True


def _predict(tries: list[Profile], limit: int | None) -> int | None:
    """Where peak memory, linear in context through the two longest passing tries, meets limit."""
    ok = sorted((p for p in tries if p.passed), key=lambda p: p.context)[-2:]
    if limit is None or len(ok) < 2 or ok[1].context == ok[0].context:
        return None
    slope = (ok[1].peak_gpu_bytes - ok[0].peak_gpu_bytes) / (ok[1].context - ok[0].context)
    if slope <= 0:
        return None
    return int(ok[1].context + (limit - ok[1].peak_gpu_bytes) / slope)
