"""`mom plan`: mom.plan from the terminal (a table, or JSON).

    mom plan --model llama-3.1-70b --gpu H100-80GB --gpus 2 4 --host-gib 256 --context 262144 [--json plan.json]

The maximum-context searches run one offload mode per process (`--workers`, default one per
core; simulate/parallel.py): the command is a single-threaded process, where forking is safe.

Registered by mom/cli.py with `add_plan_command`; everything else about the command lives here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .gpus import GPUS

GiB = 1 << 30


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
        return value

    return parse


def add_plan_command(sub) -> None:
    """Add the `plan` subcommand to the CLI's subparsers."""
    parser = sub.add_parser("plan", help="predict (no GPU needed) which configurations fit a card, ranked by speed, "
                                         "and each offload mode's maximum context")
    parser.add_argument("--model", default="llama-3.1-8b", metavar="NAME",
                        help="a preset (`mom presets`), a local config or model folder, or a hub id (default: llama-3.1-8b)")
    parser.add_argument("--gpu", default="H100-80GB", metavar="CARD",
                        help=f"one of {', '.join(GPUS)}, or a size such as custom-24GiB (default: H100-80GB)")
    parser.add_argument("--gpus", type=_positive(int), nargs="+", default=[1], metavar="N",
                        help="spread the model over N cards of --gpu (an even split of its layers); several "
                             "counts compare them (default: 1)")
    parser.add_argument("--host-gib", type=_positive(float), default=None, metavar="GIB",
                        help="host RAM for an offloaded KV cache, in GiB (default: unlimited)")
    parser.add_argument("--context", type=_positive(int), default=131072, metavar="N", help="prompt tokens (default: 131072)")
    parser.add_argument("--new-tokens", type=_positive(int), default=32, metavar="N", help="greedy tokens (default: 32)")
    parser.add_argument("--mini-sequences", "-M", type=_positive(int), default=16, metavar="M",
                        help="M of the mom configurations compared (default: 16)")
    parser.add_argument("--resolution", type=_positive(int), default=8192, metavar="N",
                        help="step of the maximum-context search (default: 8192)")
    parser.add_argument("--no-max-context", action="store_true", help="skip the maximum-context search")
    parser.add_argument("--workers", type=_positive(int), default=None, metavar="N",
                        help="processes for the maximum-context searches, one offload mode each "
                             "(default: one per CPU core; 1 searches in this process)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the plan as JSON to this file")
    parser.set_defaults(run=run_plan)


def run_plan(args) -> int:
    """Print the plan's table; write its JSON when asked. Returns 0, or 1 when nothing fits."""
    from .gpus import resolve_gpu
    from .plan import plan

    resolve_gpu(args.gpu)  # an unknown card is an error before anything is built
    out = Path(args.json) if args.json else None
    if out is not None and out.is_dir():
        raise ValueError(f"--json {args.json} is a directory; give a file name such as plan.json")
    host = int(args.host_gib * GiB) if args.host_gib is not None else None
    result = plan(args.model, gpu=args.gpu, host_bytes=host, context=args.context, new_tokens=args.new_tokens,
                  mini_sequences=args.mini_sequences, max_contexts=not args.no_max_context,
                  resolution=args.resolution, gpus=args.gpus, workers=args.workers)
    print(result.table())
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result.to_dict(), indent=1) + "\n", encoding="utf-8")
    return 0 if result.rows else 1
