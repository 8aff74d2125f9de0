"""Run variants x contexts on one GPU, write JSON, print a table last.

    python benchmarks/bench.py --model llama-3.1-8b --contexts 131072 \
        --variants hf,hf-offload,mom-prefill,mom-stream,mom-auto --new-tokens 32 --out results.json

Every figure is raw and in the JSON (card, versions, commit included); the table is a summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

import mom  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="llama-3.1-8b")
    parser.add_argument("--contexts", default="131072")
    parser.add_argument("--variants", default="hf,mom")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--slow-decode-tokens", type=int, default=4,
                        help="decode tokens timed for hf-offload (seconds per token at long contexts)")
    parser.add_argument("--warmup", type=int, default=4096)
    parser.add_argument("--bandwidth", action="store_true")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    model = mom.load(args.model, device="cuda")
    report = dict(environment=harness.environment(), model=args.model, started=time.strftime("%Y-%m-%dT%H:%M:%S"),
                  args=vars(args), runs=[])
    if args.bandwidth:
        report["bandwidth"] = harness.pinned_bandwidth()
    variants = args.variants.split(",")
    for variant in variants:  # warm every code path once (kernels, allocator, pinned pool setup)
        harness.measure(model, variant, args.warmup, new_tokens=3)
    for context in [int(c) for c in args.contexts.split(",")]:
        for variant in variants:
            decode = args.slow_decode_tokens if variant == "hf-offload" else None
            record = harness.measure(model, variant, context, args.new_tokens, decode_tokens=decode)
            report["runs"].append(record)
            Path(args.out).write_text(json.dumps(report, indent=1))
            print(json.dumps({k: v for k, v in record.items() if k not in ("tokens", "traceback", "decode_step_s", "tiers")}),
                  flush=True)
    _check_tokens(report["runs"])
    Path(args.out).write_text(json.dumps(report, indent=1))
    print_table(report)


def _check_tokens(runs) -> None:
    """Greedy tokens of every variant against hf at the same context (where both ran)."""
    reference = {r["context"]: r.get("tokens") for r in runs if r["variant"] == "hf" and r.get("tokens")}
    for r in runs:
        ref = reference.get(r["context"])
        if ref and r.get("tokens"):
            n = min(len(ref), len(r["tokens"]))
            r["tokens_match_hf"] = r["tokens"][:n] == ref[:n]


def print_table(report) -> None:
    env = report["environment"]
    print(f"\n{env['card']} ({env['gpu_total_gib']:.0f} GiB), host {env['host_ram_gib']:.0f} GiB, "
          f"torch {env['torch']}, transformers {env['transformers']}, model {report['model']}")
    if "bandwidth" in report:
        print("pinned bandwidth GB/s:", {k: round(v, 1) for k, v in report["bandwidth"].items()})
    print(f"{'context':>8} {'variant':<12} {'TTFT s':>8} {'s/token':>8} {'median':>8} {'peak GiB':>9} {'prefill':>8} "
          f"{'KV gpu':>7} {'KV host':>8} {'=hf':>4}")
    for r in report["runs"]:
        if r["oom"] or r.get("error"):
            print(f"{r['context']:>8} {r['variant']:<12} {'OOM' if r['oom'] else 'ERROR: ' + r['error'][:60]}")
            continue
        print(f"{r['context']:>8} {r['variant']:<12} {r['ttft_s']:>8.2f} {r['decode_s_per_token']:>8.4f} "
              f"{r['decode_median_s_per_token']:>8.4f} "
              f"{r['peak_gib']:>9.2f} {r['prefill_peak_gib']:>8.2f} {r['kv_gpu_gib']:>7.2f} {r['kv_host_gib']:>8.2f} "
              f"{str(r.get('tokens_match_hf', '')):>4}")


if __name__ == "__main__":
    main()
