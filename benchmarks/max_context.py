"""Maximum context of a mom variant whose wall is host RAM: run at the guard's maximum (must
pass: prefill + 32 greedy tokens) and one step above (must fail, refused by the host-RAM guard).

    python benchmarks/max_context.py --variant mom --step 16384 --out max_mom.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

import mom  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="llama-3.1-8b")
    parser.add_argument("--variant", default="mom")
    parser.add_argument("--step", type=int, default=16384)
    parser.add_argument("--contexts", default=None, help="explicit contexts instead of the guard's maximum")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    model = mom.load(args.model, device="cuda")
    report = dict(environment=harness.environment(), model=args.model, args=vars(args), runs=[])
    if args.contexts:
        contexts = [int(c) for c in args.contexts.split(",")]
    else:
        maximum = harness.host_guard_maximum(model, args.step)
        report["host_guard_maximum"] = maximum
        contexts = [maximum + args.step, maximum]  # the refusal first: it costs nothing
    for context in contexts:
        record = harness.measure(model, args.variant, context, args.new_tokens)
        report["runs"].append(record)
        Path(args.out).write_text(json.dumps(report, indent=1))
        print(json.dumps({k: v for k, v in record.items() if k not in ("tokens", "decode_step_s", "tiers")}), flush=True)


if __name__ == "__main__":
    main()
