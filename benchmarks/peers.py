"""What a user would pick instead of mom, through generate() on the same card in the same call:
transformers' offloaded cache (`cache_implementation="offloaded"`) and static cache, eager and
compiled (generate() compiles the decode step itself when the cache is static, on a GPU).

    MOM_COMMIT=$(git rev-parse HEAD) python benchmarks/peers.py --out /tmp/mom-runs/peers.json --detach
    python benchmarks/peers.py --out /tmp/mom-runs/peers.json --poll --wait 540

Compilation is timed apart: at each context, before the timed runs, one generate() of
`hf-static-compile` with the same number of new tokens compiles the graphs for that cache length (a static cache
of another length recompiles); its wall time is recorded as `compile_warmup_s` (prefill
included) and the timed runs that follow are warm. The offloaded cache copies the whole cache
each decode step (5.0 s/token at 128k measured), so it decodes `--slow-tokens` only.
Variants are interleaved round-robin over `--repeats`, baseline `hf` in the same call.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import estimate  # noqa: E402
import runfile  # noqa: E402
import tables  # noqa: E402
from generate_clock import PAPER_PIECE, generate_options, measure_generate, mom_configs  # noqa: E402

KIND = "peers"
VARIANTS = "hf,hf-offload,hf-static,hf-static-compile,mom"
COMPILE_S = 45.0  # measured at 4k on an H100 (quoted in issue 12), for the estimate only


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    runfile.add_arguments(parser)
    parser.add_argument("--contexts", default="4096,131072")
    parser.add_argument("--variants", default=VARIANTS)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--slow-tokens", type=int, default=8, help="new tokens of hf-offload")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--piece", type=int, default=PAPER_PIECE, help="mom's mini-sequence size")
    parser.add_argument("--warmup", type=int, default=1024, help="context of each variant's warm-up run")
    return parser.parse_args(argv)


def tokens(args, variant: str) -> int:
    return args.slow_tokens if variant == "hf-offload" else args.new_tokens


def compile_warmup(args, model, context: int, report: dict) -> None:
    """Compile hf-static-compile's decode for this cache length, timed; once per context."""
    if "hf-static-compile" not in args.variants.split(",") or _recorded(report, "compile", context):
        return
    start = time.perf_counter()
    # the same new-token count as the timed runs: the static cache's length (context + new tokens) is in the graph
    record = measure_generate(model, "hf-static-compile", None, context, args.new_tokens, settle_s=args.settle)
    record.update(kind="compile", compile_warmup_s=time.perf_counter() - start)
    _append(args, report, record)


def run(args, model, report: dict) -> None:
    configs = mom_configs(args.piece)
    variants = args.variants.split(",")
    report["planned"] = len(variants) * args.repeats * len(args.contexts.split(","))
    for context in (int(c) for c in args.contexts.split(",")):
        compile_warmup(args, model, context, report)
        for repeat in range(args.repeats):
            for variant in variants:
                if _recorded(report, "timing", context, variant, repeat):
                    continue
                record = measure_generate(model, variant, configs.get(variant), context, tokens(args, variant),
                                          options=generate_options(variant), settle_s=args.settle)
                record.update(kind="timing", repeat=repeat)
                _append(args, report, record)


def _recorded(report: dict, kind: str, context: int, variant: str | None = None, repeat: int | None = None) -> bool:
    return any(r.get("kind") == kind and r["context"] == context and variant in (None, r["variant"])
               and repeat in (None, r.get("repeat")) for r in report["runs"])


def _append(args, report: dict, record: dict) -> None:
    report["runs"].append(record)
    runfile.save(args.out, report)
    print(runfile.brief(record), flush=True)


def estimate_lines(args) -> list[str]:
    s, total = estimate.shape(args.model), estimate.LOAD_S
    for context in (int(c) for c in args.contexts.split(",")):
        total += COMPILE_S + estimate.run_s(s, "hf", context, args.new_tokens)
        total += args.repeats * sum(estimate.run_s(s, v, context, tokens(args, v)) for v in args.variants.split(","))
    return estimate.lines(f"peers ({args.variants})", total)


def main(argv: list[str] | None = None) -> dict | None:
    started = runfile.start(argv, parse, __file__, KIND, estimate_lines)
    if started is None:
        return None
    args, model, report = started
    for variant in args.variants.split(","):  # warm every path once, compile excepted (timed per context)
        if variant != "hf-static-compile":
            measure_generate(model, variant, mom_configs(args.piece).get(variant), args.warmup, 4,
                             options=generate_options(variant), settle_s=0)
    run(args, model, report)
    return runfile.finish(args, report, tables.peers_markdown)


if __name__ == "__main__":
    main()
