"""Tables 1-4 of the MOM paper on this card: peak memory (and its ratio to `standard`), total
latency, TTFT and decode tokens/s, at the paper's contexts with its 200 greedy tokens.

    MOM_COMMIT=$(git rev-parse HEAD) python benchmarks/paper_tables.py --out /tmp/mom-runs/paper.json --detach
    python benchmarks/paper_tables.py --out /tmp/mom-runs/paper.json --poll --wait 540   # repeat until finished

Every run is one `model.generate()` call timed by the streamer clock (generate_clock.py), all
variants on one model object in one process. Runs go round-robin (repeat, then context, then
variant), so a run cut off after the first round still holds every cell once, and repeats show
order and warm-up effects as spread. Each variant is warmed up once at a short context first.
Every variant at a context decodes the same K/V lengths, so only the first run of a context in
a process meets them cold; each record says which (`warm_lengths`), and the table marks
transformers' decode figures that ran warm (tables.WARM_NOTE).
The table is the median and [min-max] over `--repeats`; an out-of-memory is a row (`oom`), and
the sweep goes on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import estimate  # noqa: E402
import runfile  # noqa: E402
import tables  # noqa: E402
from generate_clock import PAPER_CHUNK, PAPER_PIECE, generate_options, measure_generate, mom_configs  # noqa: E402

KIND = "paper_tables"
CONTEXTS = "48000,80000,112000,144000"
VARIANTS = "standard,hf,hf-chunked,mom-paper,mom"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    runfile.add_arguments(parser)
    parser.add_argument("--contexts", default=CONTEXTS)
    parser.add_argument("--variants", default=VARIANTS)
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2048, help="context of each variant's warm-up run (0: none)")
    parser.add_argument("--piece", type=int, default=PAPER_PIECE, help="mom's mini-sequence size")
    parser.add_argument("--chunk", type=int, default=PAPER_CHUNK, help="hf-chunked's prefill chunk")
    return parser.parse_args(argv)


def plan(args) -> list[tuple[int, int, str]]:
    """(repeat, context, variant) in run order: round-robin, so every round is a full table."""
    contexts = [int(c) for c in args.contexts.split(",")]
    return [(r, c, v) for r in range(args.repeats) for c in contexts for v in args.variants.split(",")]


def estimate_lines(args) -> list[str]:
    shape = estimate.shape(args.model)
    seconds = estimate.LOAD_S + sum(estimate.run_s(shape, v, c, args.new_tokens) for _, c, v in plan(args))
    return estimate.lines(f"paper_tables ({len(plan(args))} runs of {args.new_tokens} tokens)", seconds)


def run(args, model, report: dict) -> None:
    """Every planned run not yet in the report, saving after each."""
    configs = mom_configs(args.piece)
    done = {(r["repeat"], r["context"], r["variant"]) for r in report["runs"]}
    todo = [key for key in plan(args) if key not in done]
    report["planned"] = len(plan(args))
    for variant in args.variants.split(",") if todo and args.warmup else ():
        measure_generate(model, variant, configs.get(variant), args.warmup, 4,
                         options=generate_options(variant, args.chunk), settle_s=0)
    decoded = set()  # contexts this process has decoded: their K/V lengths are warm (tables.WARM_NOTE)
    for repeat, context, variant in todo:
        record = measure_generate(model, variant, configs.get(variant), context, args.new_tokens,
                                  options=generate_options(variant, args.chunk), settle_s=args.settle)
        record.update(repeat=repeat, warm_lengths=context in decoded)
        decoded.add(context)
        report["runs"].append(record)
        runfile.save(args.out, report)
        print(runfile.brief(record), flush=True)


def main(argv: list[str] | None = None) -> dict | None:
    started = runfile.start(argv, parse, __file__, KIND, estimate_lines)
    if started is None:
        return None
    args, model, report = started
    runfile.save(args.out, report)
    run(args, model, report)
    return runfile.finish(args, report, tables.paper_markdown)


if __name__ == "__main__":
    main()
