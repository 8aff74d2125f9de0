"""Maximum context of every variant on this card: prefill + 32 greedy tokens through generate(),
backed by a passing run at the maximum and a failing run one step above it (out of GPU memory,
or refused by the host-RAM guard). Steps: 8192 tokens up to 256k, 16384 beyond.

    MOM_COMMIT=$(git rev-parse HEAD) python benchmarks/max_context.py --out /tmp/mom-runs/max.json --detach
    python benchmarks/max_context.py --out /tmp/mom-runs/max.json --poll --wait 540    # until finished
    python benchmarks/max_context.py --variants mom --contexts 851968 --out ...       # one context, no search

The search is mom.memory.search.bracket_search (grow 4x from 8192, then narrow, aiming where the
peak's growth meets the card at most twice in a row): first with 16384-token steps, then, if
the bracket ends below 256k, once more with 8192. Each try is recorded and saved before the next
one, and a try already in the file is not run again: the search is deterministic, so a search
cut off anywhere replays its recorded tries for free and goes on where it stopped.

Where mom.predict covers the variant (`standard`, `hf`, `hf-chunked`, `mom-paper`; `mom` has its
host wall below) and the card is a GPU, the search starts at the predicted maximum instead
(`--start prediction`, the default on CUDA): it tries that context and walks one step at a time
towards the wall, so an
exact prediction costs two runs (the maximum and one step above) where the grow-and-narrow search
costs six to eight; after `WALK_STEPS` steps without a bracket it hands over to the search.

Host walls cost nothing to find: `mom`'s wall is host RAM, so it first tries one step above the
guard's maximum (refused before any allocation) and then the maximum itself: one full run where
the card holds it (mom.predict says it does; tests/simulate checks that prediction on a CPU);
transformers' offloaded cache has no guard, so the same check refuses its tries here (recorded
as the benchmark's guard) rather than letting the kernel's OOM killer end the whole run.
`mom`'s guard maximum is found with mom's own check after its placement (`OffloadRuntime.
placed_cache`): offload="auto" keeps layers on the GPU, so it admits more than the whole cache's
formula does (the eleventh session's search began one step above the formula's 901,120, a
context the runtime admitted: an 8-minute run where a refusal was meant).
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import estimate  # noqa: E402
import runfile  # noqa: E402
import tables  # noqa: E402
from generate_clock import (  # noqa: E402
    PAPER_CHUNK,
    PAPER_PIECE,
    free_memory,
    generate_options,
    measure_generate,
    mom_configs,
)

import mom  # noqa: E402
from mom.engine.host_guard import HostMemoryError, check_model_fits_host  # noqa: E402
from mom.memory.search import bracket_search  # noqa: E402

KIND = "max_context"
VARIANTS = "standard,hf,hf-chunked,hf-offload,mom-paper,mom"
GUARD_FIRST = {"mom"}  # offload="auto": host RAM is the wall
BENCH_GUARD = {"hf-offload"}  # host-resident cache without a guard of its own
PREDICTED = {"standard", "hf", "hf-chunked", "mom-paper", "mom-none", "mom-stream", "mom-prefill"}  # mom.predict covers
WALK_STEPS = 3  # steps walked from a prediction before the bracket search takes over


@dataclass
class Try:
    """What bracket_search's aim needs from a try."""

    context: int
    passed: bool
    peak_gpu_bytes: int


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    runfile.add_arguments(parser)
    parser.add_argument("--variants", default=VARIANTS)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--low", type=int, default=8192)
    parser.add_argument("--high", type=int, default=2 * 2**20, help="largest context tried")
    parser.add_argument("--fine", type=int, default=8192, help="step up to --switch")
    parser.add_argument("--coarse", type=int, default=16384, help="step beyond --switch")
    parser.add_argument("--switch", type=int, default=256 * 1024)
    parser.add_argument("--contexts", default=None, help="run these contexts per variant instead of searching")
    parser.add_argument("--piece", type=int, default=PAPER_PIECE, help="mom's mini-sequence size")
    parser.add_argument("--chunk", type=int, default=PAPER_CHUNK, help="hf-chunked's prefill chunk")
    parser.add_argument("--start-at", default="", metavar="VARIANT=TOKENS,...",
                        help="where the walk starts, instead of mom.predict's maximum: for a variant it does not "
                             "cover (hf-offload, whose tries above the wall run out of memory in the first layer's "
                             "prefill, seconds each: start above the wall and walk down), or a prediction made "
                             "beforehand on a CPU")
    parser.add_argument("--walk-steps", type=int, default=WALK_STEPS,
                        help="steps walked from the start before the bracket search takes over")
    parser.add_argument("--start", choices=("prediction", "grow"), default=None,
                        help="first try at mom.predict's maximum, or grow from --low (default: prediction on CUDA)")
    args = parser.parse_args(argv)
    starts_given(args)  # a malformed --start-at stops here, before the model loads
    return args


class NotAWall(Exception):
    """A try failed with an error that is not out of memory: no wall was found, and walking on
    would report a bogus maximum; the variant's search stops with the error."""

    def __init__(self, record: dict):
        super().__init__(record.get("error"))
        self.record = record


class Searcher:
    """Runs (or replays from the report) one try at a time and keeps the report saved."""

    def __init__(self, args, model, report: dict):
        self.args, self.model, self.report = args, model, report
        self.configs = mom_configs(args.piece)
        device = next(model.parameters()).device
        self.limit = _device_total(device)
        self.from_prediction = (args.start or ("prediction" if device.type == "cuda" else "grow")) == "prediction"

    def attempt(self, variant: str, context: int, tries: list[Try]) -> bool:
        record = self.recorded(variant, context) or self.run(variant, context)
        if record.get("error") and not record.get("oom"):
            raise NotAWall(record)
        passed = not record.get("oom")  # an error without one raised above
        tries.append(Try(context, passed, int((record.get("peak_gib") or 0) * 2**30)))
        return passed

    def recorded(self, variant: str, context: int) -> dict | None:
        return next((r for r in self.report["runs"] if r["variant"] == variant and r["context"] == context), None)

    def run(self, variant: str, context: int) -> dict:
        refusal = self.bench_guard(variant, context)
        record = refusal or measure_generate(self.model, variant, self.configs.get(variant), context,
                                             self.args.new_tokens, options=generate_options(variant, self.args.chunk),
                                             settle_s=self.args.settle)
        self.report["runs"].append(record)
        runfile.save(self.args.out, self.report)
        print(runfile.brief(record), flush=True)
        return record

    def bench_guard(self, variant: str, context: int) -> dict | None:
        if variant not in BENCH_GUARD:
            return None
        with host_guard(self.model, None) as admits:
            if admits(context):
                return None
        return dict(variant=variant, context=context, new_tokens=self.args.new_tokens, oom=True, wall="host",
                    error="refused by the benchmark's host-RAM check (mom's guard formula): the offloaded "
                          "cache would not fit host RAM", clock="not run")


def search(searcher: Searcher, variant: str) -> dict:
    """One variant's search; returns its summary (maximum, the failing try above it, tries)."""
    args, tries = searcher.args, []

    def attempt(context: int) -> bool:
        return searcher.attempt(variant, context, tries)

    top = (guard_maximum(searcher.model, searcher.configs.get(variant), args.coarse, args.high)
           if variant in GUARD_FIRST else args.high)
    if top < args.high and attempt(top + args.coarse):  # the guard let more through than computed here
        top = args.high
    start = starts_given(args).get(variant)
    predicted = predicted_maximum(searcher, variant) if start is None and variant not in GUARD_FIRST else None
    start = start if start is not None else predicted
    passing, failing = (walk(attempt, start, lambda c: step_at(args, c), args.low, top, args.walk_steps)
                        if start is not None else (None, None))
    if passing is None or failing is None:
        passing, failing = search_range(searcher, attempt, tries, top)
    above = searcher.recorded(variant, failing) if failing is not None else None
    return dict(maximum=passing, failing_above=failing, wall=(above or {}).get("wall"), predicted=predicted,
                started_at=start,
                error_above=(above or {}).get("error"), limit_reached=failing is not None,
                resolution=failing - passing if passing is not None and failing is not None else None,
                tries=len(tries), done=True)


def search_or_error(searcher: Searcher, variant: str) -> dict:
    """search(), or where a try failed with an error other than out of memory, a summary saying so
    (not done: a rerun after the fix replays the error from the file; delete its try to retry)."""
    try:
        return search(searcher, variant)
    except NotAWall as stop:
        tries = [r for r in searcher.report["runs"] if r["variant"] == variant]
        print(f"{variant}: search stopped: {stop.record['error']} at {stop.record['context']:,} tokens", flush=True)
        return dict(maximum=None, failing_above=None, wall=None, predicted=None, limit_reached=False,
                    error=stop.record["error"], stopped_at=stop.record["context"], tries=len(tries), done=False)


def search_range(searcher: Searcher, attempt, tries: list[Try], top: int) -> tuple[int | None, int | None]:
    """The search without a prediction: `top` itself when the host guard set it, else grow from
    --low and narrow, 16384-token steps first, then 8192 where the bracket lies below --switch."""
    args = searcher.args
    if top < args.high and attempt(top):
        return top, top + args.coarse
    passing, failing = bracket_search(attempt, tries, args.low, top, args.coarse, searcher.limit, growth=4)
    if passing is not None and failing is not None and passing < args.switch and failing - passing > args.fine:
        passing, failing = bracket_search(attempt, tries, passing, failing, args.fine, searcher.limit, growth=4)
    return passing, failing


def step_at(args, context: int) -> int:
    """The search's resolution at a context: --fine below --switch, --coarse from there."""
    return args.fine if context < args.switch else args.coarse


def starts_given(args) -> dict[str, int]:
    """--start-at as {variant: tokens}."""
    pairs = [item.split("=") for item in args.start_at.split(",") if item.strip()]
    if any(len(pair) != 2 or not pair[1].strip().isdigit() for pair in pairs):
        raise SystemExit(f"--start-at takes VARIANT=TOKENS pairs separated by commas, got {args.start_at!r}")
    return {variant.strip(): int(tokens) for variant, tokens in pairs}


def walk(attempt, start: int, step, low: int, high: int, steps: int = WALK_STEPS) -> tuple[int | None, int | None]:
    """From `start`, one step at a time towards the wall: (passing, failing) a step apart, or
    (None, None) when `steps` steps did not bracket it (the bracket search goes on from there;
    its tries of the same contexts replay from the report)."""
    start = max(low, min(start, high))
    if attempt(start):
        passing = start
        for _ in range(steps):
            above = passing + step(passing)
            if above > high:
                return None, None
            if not attempt(above):
                return passing, above
            passing = above
        return None, None
    failing = start
    for _ in range(steps):
        below = failing - step(failing - 1)  # the step of the grid just under `failing`
        if below < low:
            return None, None
        if attempt(below):
            return below, failing
        failing = below
    return None, None


def predicted_maximum(searcher: Searcher, variant: str) -> int | None:
    """mom.predict's maximum context of a variant on this card with this host, on the search's grid;
    None where the search does not start from a prediction."""
    if not searcher.from_prediction or variant not in PREDICTED:
        return None
    import psutil
    from predict_accuracy import this_card

    from mom.simulate.plan import max_context as predict_max_context

    args = searcher.args
    config = searcher.configs.get(variant) or mom.MomConfig()
    found = predict_max_context(args.model, config, gpu=this_card(), host_bytes=psutil.virtual_memory().available,
                                new_tokens=args.new_tokens, resolution=args.fine, high=args.high,
                                **predict_options(variant, args.chunk))
    if found is None:
        return None
    return found if found < args.switch else found // args.coarse * args.coarse


def predict_options(variant: str, chunk: int) -> dict:
    """mom.predict's words for a variant's generate() options: `standard` keeps every position's
    logits, `hf-chunked` prefills in chunks (generate_clock.GENERATE_OPTIONS)."""
    options = generate_options(variant, chunk)
    return dict(logits_to_keep=options.get("logits_to_keep", 1), prefill_chunk_size=options.get("prefill_chunk_size"))


def guard_maximum(model, config, step: int, high: int) -> int:
    """Largest multiple of `step` (at most `high`) that the host-RAM guard admits now, as the run
    will meet it (`host_guard`); the guard's verdict only falls as the context grows: bisected.
    Placing allocates the GPU-resident layers' K/V: handed back to the card before the first run."""
    with host_guard(model, config) as admits:
        low, top = 1, high // step  # in steps; `low` is admitted or the smallest there is
        while low < top:
            middle = (low + top + 1) // 2
            low, top = (middle, top) if admits(middle * step) else (low, middle - 1)
    free_memory()
    return low * step


@contextmanager
def host_guard(model, config):
    """Yields admits(context): the host-RAM guard's verdict now for a 1 x context prompt. With a mom
    config, mom's own check after placing the cache (offload="auto" keeps layers on the GPU and
    offloads only the rest; the resident layers' buffers are allocated, as the run will); without
    one (transformers' offloaded cache), the whole cache on the host."""
    if config is None:
        yield lambda context: _admitted(check_model_fits_host, model, 1, context)
        return
    with mom.enable(model, config) as handle:
        yield lambda context: _admitted(handle.offload.placed_cache, 1, context)


def _admitted(check, *args) -> bool:
    try:
        check(*args)
    except HostMemoryError:
        return False
    return True


def _device_total(device) -> int | None:
    import torch

    return torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None


def estimate_lines(args) -> list[str]:
    """Simulate each search against the planning guesses of estimate.GUESSED_MAXIMUM."""
    shape, total = estimate.shape(args.model), estimate.LOAD_S
    for variant in args.variants.split(","):
        guess = estimate.guessed_maximum(variant)
        if args.contexts:
            contexts = [int(c) for c in args.contexts.split(",")]
        else:
            contexts = [guess + args.coarse, guess] if variant in GUARD_FIRST else _simulated_tries(args, guess)
            if variant in PREDICTED and args.start != "grow":  # on a GPU: from the prediction, if it is right
                contexts = [guess, guess + step_at(args, guess)]
            elif variant in starts_given(args):  # walked from the start to the guess
                start, step = starts_given(args)[variant], step_at(args, guess)
                contexts = list(range(start, guess, -step) if start > guess else range(start, guess + step + 1, step))
                contexts += [guess] if start > guess else []
        total += sum(estimate.run_s(shape, variant, c, args.new_tokens) if c <= guess else
                     estimate.failing_s(shape, variant, c) for c in contexts)
    return estimate.lines(f"max_context ({args.variants})", total)


def _simulated_tries(args, guess: int) -> list[int]:
    tried: list[int] = []

    def attempt(context: int) -> bool:
        tried.append(context)
        return context <= guess

    passing, failing = bracket_search(attempt, [], args.low, args.high, args.coarse, None, growth=4)
    if passing is not None and failing is not None and passing < args.switch and failing - passing > args.fine:
        bracket_search(attempt, [], passing, failing, args.fine, None, growth=4)
    return sorted(set(tried))


def main(argv: list[str] | None = None) -> dict | None:
    started = runfile.start(argv, parse, __file__, KIND, estimate_lines)
    if started is None:
        return None
    args, model, report = started
    report.setdefault("searches", {})
    searcher = Searcher(args, model, report)
    for variant in args.variants.split(","):
        if args.contexts:
            for context in (int(c) for c in args.contexts.split(",")):
                searcher.recorded(variant, context) or searcher.run(variant, context)
        elif not report["searches"].get(variant, {}).get("done"):
            report["searches"][variant] = search_or_error(searcher, variant)
            runfile.save(args.out, report)
    return runfile.finish(args, report, tables.max_context_markdown)


if __name__ == "__main__":
    main()
