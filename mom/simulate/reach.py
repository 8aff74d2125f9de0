"""How far a configuration reaches: the maximum-context search over predictions (mom.plan, `mom
plan`, the Explorer's Find max in simulate mode).

The answer keeps `mom.find_max_context`'s contract: a predicted pass whose neighbour one
`resolution` step up is a predicted failure, or `high` itself when it passes (no wall below the
cap: `limit_reached` is False, and `mom plan` shows ">= high").

1. Host wall first. Where every layer's K/V lives on the host ("prefill", "stream") and host RAM
   is given, the wall is the engine's host rule, which is arithmetic (plan._host_wall): predict one
   step above it (refused by the rule before anything runs) and at it: two predictions, where
   growing from one step took five (qwen2.5-7b `stream` on an H100 with 125 GiB of host RAM: 11.1 s
   to 3.5 s on 2 cores). Before, the search stopped at the wall without a failing try, so the
   result said no limit was reached (and the Explorer did not mark it).
2. Otherwise (the card is the wall, or "none"/"auto"), memory/search.py's bracket search over
   predictions: grow by 4x from one step (a prediction costs about the same at any length), then
   narrow.
3. From what is known: mom.plan has already predicted each configuration at the planned context.
   Where that prediction passed, the growth starts there instead of at one step (8k, 32k and 128k
   cost three predictions for a 128k plan); where it failed, it is the top of the search.

Tried and left out (2026-12-07, ninth session): aiming from two reference predictions at where the
reserve meets the card, then walking, re-aiming or galloping from there. Per mode it saved tries on
"none" (13 to 6-10) and lost them on "auto" (12 to 16-28), for no gain over a whole `mom plan`,
and it showed why: "auto"'s predicted pass/fail is not monotonic in the context (llama-3.1-8b on an
H100 with 125 GiB of host RAM: 1,081,344 and 1,089,536 pass, 1,097,728 and 1,105,920 fail, 1,122,304
passes). Different search paths then find different maxima. The hole was the engine's: "auto"
reserved nothing for a piece's MLP blocks (fixed in the tenth session; engine/placement.py and
benchmarks/NOTES.md), and the same sweep is now monotonic.
"""

from __future__ import annotations

from collections.abc import Callable

from ..memory.events import MaxContextResult
from ..memory.search import bracket_search
from .runner import Prediction


def search(predict_at: Callable[[int], Prediction], usable_bytes: int, resolution: int, high: int,
           host_top: int | None = None, known: Prediction | None = None) -> MaxContextResult:
    """The longest context up to `high` (a multiple of `resolution`) that `predict_at` says runs.

    `predict_at(context)` makes one prediction; `host_top`: the engine's host rule's last passing
    context, where it is arithmetic (step 1; ignored from `high` up); `known`: a prediction of the
    same configuration already made (mom.plan's at the planned context), used as a try (step 3).
    Every prediction the answer rests on is in the result's `tries`."""
    result = MaxContextResult(maximum=None, resolution=resolution, high=high)
    if known is not None and not (known.context % resolution == 0 and resolution <= known.context <= high):
        known = None  # not a context this search can land on
    made: dict[int, Prediction] = {}

    def passes(context: int) -> bool:
        if context not in made:
            made[context] = known if known is not None and context == known.context else predict_at(context)
            result.tries.append(made[context])
        return not made[context].oom

    top = high
    if host_top is not None and host_top < high:  # the rule refuses one step above it: does the card hold it?
        if host_top < resolution:  # not one step fits the host
            passes(resolution)
            return result
        if not passes(host_top + resolution):  # (were it to pass, the rule let more through: search up to high)
            if passes(host_top):
                result.maximum = host_top
                return result
            top = host_top
    low = resolution
    if known is not None and known.context <= top:  # 3. grow from it, or search below it
        low, top = (known.context, top) if passes(known.context) else (resolution, known.context)
    # predictions cost about the same at any length, so the growth phase steps by 4x, not 2x
    result.maximum, _ = bracket_search(passes, result.tries, low, top, resolution, usable_bytes, growth=4)
    return result
