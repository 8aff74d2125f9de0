"""`mom demo | profile | max-context`: the terminal face of the same functions notebooks call.

Every command prints a table and can write JSON, so each number it shows can be reproduced and
kept. GPU benchmarks live in benchmarks/bench.py (a script, not part of the installed package).
"""

from __future__ import annotations

import argparse
import logging
import sys

from .config import OFFLOAD_MODES, MomConfig, MomConfigError
from .memory.events import GiB


def _config(args) -> MomConfig:
    budget = int(args.kv_gpu_budget_gib * GiB) if args.kv_gpu_budget_gib is not None else None
    return MomConfig(mini_sequences=args.mini_sequences, mini_sequence_size=args.mini_sequence_size,
                     offload=args.offload, kv_gpu_budget=budget,
                     trim_last_layer=False if args.no_trim else None)


def _run_args(parser: argparse.ArgumentParser, context_default: int | None) -> None:
    parser.add_argument("--model", default="tiny-llama", help="a preset (see mom.PRESETS) or a hub id / local path")
    parser.add_argument("--context", type=int, default=context_default, help="prompt tokens")
    parser.add_argument("--mini-sequences", "-M", type=int, default=None, help="M: pieces per prompt")
    parser.add_argument("--mini-sequence-size", "-C", type=int, default=None, help="C: tokens per piece")
    parser.add_argument("--offload", choices=OFFLOAD_MODES, default="none")
    parser.add_argument("--kv-gpu-budget-gib", type=float, default=None, help='GPU KV budget for offload="auto"')
    parser.add_argument("--no-trim", action="store_true", help="keep the full last layer")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--limit-gib", type=float, default=None, help="pretend device memory of CPU runs")
    parser.add_argument("--baseline", action="store_true", help="also run plain Hugging Face, side by side")
    parser.add_argument("--json", default=None, help="write the results here")


def _cmd_demo(args) -> int:
    from .explore.demo import run_demo

    limit = int(args.limit_gib * GiB) if args.limit_gib else None
    result = run_demo(model=args.model, context=args.context, new_tokens=args.new_tokens, path=args.out,
                      device=args.device, limit_bytes=limit)
    print(result.table)
    print(f"report: {result.path}")
    return 0


def _cmd_profile(args) -> int:
    from .load import load
    from .memory.profile import profile, profile_table, save_json

    model = load(args.model, device=args.device)
    limit = int(args.limit_gib * GiB) if args.limit_gib else None
    configs = ([MomConfig()] if args.baseline else []) + [_config(args)]
    runs = [profile(model, cfg, args.context, args.new_tokens, limit_bytes=limit, record=False) for cfg in configs]
    print(profile_table(runs))
    if args.json:
        save_json(runs, args.json)
    return 0


def _cmd_max_context(args) -> int:
    from .load import load
    from .memory.profile import find_max_context, profile_table, save_json

    model = load(args.model, device=args.device)
    limit = int(args.limit_gib * GiB) if args.limit_gib else None
    result = find_max_context(model, _config(args), new_tokens=args.new_tokens, resolution=args.resolution,
                              low=args.low, high=args.high, limit_bytes=limit, record=False)
    print(profile_table(result.tries))
    print(f"maximum context: {result.maximum} tokens (resolution {result.resolution})")
    if args.json:
        save_json(result, args.json)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mom", description="Long-context inference within GPU memory, measured.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="baseline vs mom on the embedded default; HTML report + table")
    demo.add_argument("--model", default=None, help="default: llama-3.1-8b on a GPU, tiny-llama on CPU")
    demo.add_argument("--context", type=int, default=None)
    demo.add_argument("--new-tokens", type=int, default=None)
    demo.add_argument("--device", default=None)
    demo.add_argument("--limit-gib", type=float, default=None)
    demo.add_argument("--out", default="mom-report.html")
    demo.set_defaults(run=_cmd_demo)
    prof = sub.add_parser("profile", help="one measured run (prefill + greedy decode)")
    _run_args(prof, context_default=4096)
    prof.set_defaults(run=_cmd_profile)
    search = sub.add_parser("max-context", help="largest context that runs (OOM-safe search)")
    _run_args(search, context_default=None)
    search.add_argument("--resolution", type=int, default=8192)
    search.add_argument("--low", type=int, default=None)
    search.add_argument("--high", type=int, default=None)
    search.set_defaults(run=_cmd_max_context)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (MomConfigError, ValueError, RuntimeError, MemoryError) as error:
        print(f"mom {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
