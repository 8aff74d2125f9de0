"""Issue 9's decode evidence on one card in one process: generate() with a streamer clock,
baseline and mom in the same call, variants interleaved round-robin over `--rounds` rounds (so
order and warm-up effects show as spread), plus the manual loop of harness.measure beside it.

    MOM_COMMIT=<full hash> python benchmarks/decode_repeats.py --contexts 4096,131072 \
        --variants hf,mom-paper,mom-prefill,mom-auto --rounds 3 --out $OUT/decode_repeats.json

The order probe (`--after-offload`) runs hf-offload (4 tokens) right before one more mom-paper
run, the order in which mom-paper decoded 2x slower than mom-prefill in the first milestone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from generate_clock import measure_generate  # noqa: E402

import mom  # noqa: E402
from mom.memory.provenance import provenance  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="llama-3.1-8b")
    parser.add_argument("--contexts", default="4096,131072")
    parser.add_argument("--variants", default="hf,mom-paper,mom-prefill,mom-auto")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--manual", default="hf,mom-auto", help="variants also timed by the manual loop, once")
    parser.add_argument("--after-offload", action="store_true")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    model = mom.load(args.model, device="cuda")
    report = dict(provenance=provenance("cuda"), environment=harness.environment(), model=args.model,
                  started=time.strftime("%Y-%m-%dT%H:%M:%S"), args=vars(args), runs=[])
    variants = args.variants.split(",")
    save = lambda: Path(args.out).write_text(json.dumps(report, indent=1))  # noqa: E731
    for variant in variants:  # warm every path once
        measure_generate(model, variant, harness.VARIANTS.get(variant), 2048, new_tokens=4)
    for context in [int(c) for c in args.contexts.split(",")]:
        for round_ in range(args.rounds):
            for variant in variants:
                record = measure_generate(model, variant, harness.VARIANTS.get(variant), context, args.new_tokens)
                record["round"] = round_
                report["runs"].append(record)
                save()
                _print(record)
        for variant in filter(None, args.manual.split(",")):
            record = harness.measure(model, variant, context, args.new_tokens)
            record["clock"] = "manual loop"
            report["runs"].append(record)
            save()
            _print(record)
    if args.after_offload:
        context = max(int(c) for c in args.contexts.split(","))
        for variant, tokens in (("hf-offload", 4), ("mom-paper", args.new_tokens)):
            record = measure_generate(model, variant, harness.VARIANTS.get(variant), context, tokens)
            record["round"] = "after-offload"
            report["runs"].append(record)
            save()
            _print(record)
    report["summary"] = summarize(report["runs"])
    save()
    for line in report["summary"]:
        print(line)


def _print(record: dict) -> None:
    keep = ("variant", "context", "clock", "round", "ttft_s", "decode_s_per_token", "decode_median_s_per_token",
            "peak_gib", "prefill_peak_gib", "oom", "error")
    print(json.dumps({k: record.get(k) for k in keep}), flush=True)


def repeated_runs(runs: list[dict]) -> dict[tuple[int, str], list[dict]]:
    """The round-robin generate() runs that finished, by (context, variant), sorted."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        if r.get("clock") == "generate+streamer" and isinstance(r.get("round"), int) and r.get("ttft_s"):
            groups.setdefault((r["context"], r["variant"]), []).append(r)
    return dict(sorted(groups.items()))


def spread(runs: list[dict], key: str, digits: int) -> str:
    """'median [min-max]' of one figure over repeated runs."""
    values = [r[key] for r in runs]
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def summarize(runs: list[dict]) -> list[str]:
    """Median and spread (min-max) of TTFT and decode per (context, variant), generate() clock."""
    return [f"{context:>7} {variant:<12} n={len(rs)} TTFT {spread(rs, 'ttft_s', 3)} s  "
            f"decode {spread(rs, 'decode_s_per_token', 4)} s/token  peak {max(r['peak_gib'] for r in rs):.2f} GiB"
            for (context, variant), rs in repeated_runs(runs).items()]


if __name__ == "__main__":
    main()
