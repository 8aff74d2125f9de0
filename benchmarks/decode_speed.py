"""Issue 15's evidence: decode through generate() against the memory bound, in one call.

Variants, each through `model.generate()` with the streamer clock of generate_clock.py:
  hf          Hugging Face eager decode (GPU DynamicCache)
  hf-static-compile   `cache_implementation="static"`, which generate() compiles (torch.compile,
              mode reduce-overhead); the first call per context is the compile, timed apart
  mom         mini-sequences of 4096, trim, offload="auto", decode_graph=True
  mom-torch-kernels  `mom` with the graph step's torch kernels instead of its fused Triton ones
              (MOM_DECODE_KERNELS=torch): what the fusion buys, in the same call
  mom-eager   the same with decode_graph=False
  mom-stream  offload="stream": every layer's K/V crosses the host link each step

Beside them, in the same process: the HBM bandwidth (a device-to-device copy), the pinned
host-to-device bandwidth, the bytes one decode step must read (weights but the embedding
table, plus the K/V at that context), hence the HBM bound per token; and the one-query
attention kernel's read rate at each context, for the prefix kernel mom's graph uses and for
sdpa as Hugging Face calls it.

    MOM_COMMIT=<full hash> python benchmarks/decode_speed.py --contexts 4096,131072 --out $OUT/decode_speed.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from generate_clock import FRESH_HELP, fresh_length, measure_generate, prompt  # noqa: E402

import mom  # noqa: E402
from mom.engine import decode_kernels, families  # noqa: E402
from mom.engine.patch import handle_of  # noqa: E402
from mom.memory.provenance import provenance  # noqa: E402

GiB = 2**30
VARIANTS = {
    "hf": None,
    "hf-static-compile": None,
    "mom": mom.MomConfig(mini_sequence_size=4096, offload="auto", decode_graph=True),
    "mom-torch-kernels": mom.MomConfig(mini_sequence_size=4096, offload="auto", decode_graph=True),
    "mom-eager": mom.MomConfig(mini_sequence_size=4096, offload="auto", decode_graph=False),
    "mom-stream": mom.MomConfig(mini_sequence_size=4096, offload="stream"),
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="llama-3.1-8b")
    parser.add_argument("--contexts", default="4096,131072")
    parser.add_argument("--variants", default="hf,hf-static-compile,mom,mom-eager,mom-stream")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--once", default="mom-eager,mom-stream", help="variants run in one round only")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--fresh", action="store_true",
                        help=FRESH_HELP + "; static-compile keeps the context (its cache length is fixed, and a new "
                             "one recompiles)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    model = mom.load(args.model, device="cuda")
    report = dict(provenance=provenance("cuda"), environment=harness.environment(), model=args.model,
                  started=time.strftime("%Y-%m-%dT%H:%M:%S"), args=vars(args), runs=[],
                  hbm=harness.hbm_bandwidth(), host_link=harness.pinned_bandwidth(gib=2.0), kernels=[])
    save = lambda: Path(args.out).write_text(json.dumps(report, indent=1))  # noqa: E731
    save()
    variants = args.variants.split(",")
    once = set(args.once.split(","))
    index = 0
    for context in [int(c) for c in args.contexts.split(",")]:
        report["kernels"].append(one_query_kernels(model, context))
        report.setdefault("graph_replay", []).append(graph_replay(model, context))
        if "mom-torch-kernels" in variants:
            with _torch_kernels():
                report["graph_replay"].append(dict(graph_replay(model, context), kernels="torch"))
        torch.cuda.empty_cache()  # the kernels' K/V went with the call
        report.setdefault("bytes_per_step", {})[str(context)] = step_bytes(model, context)
        save()
        if "hf-static-compile" in variants:  # the compile, timed apart
            record = _run(model, "hf-static-compile", context, args.new_tokens)
            record["round"] = "compile"
            report["runs"].append(record)
            save()
        for round_ in range(args.rounds):
            for variant in variants:
                if variant in once and round_ > 0:
                    continue
                fresh = args.fresh and variant != "hf-static-compile"
                tokens = fresh_length(context, index, args.new_tokens) if fresh else context
                index += 1
                record = _run(model, variant, tokens, args.new_tokens)
                record.update(round=round_, context=context, prompt_tokens=tokens)
                report["runs"].append(record)
                save()
                print(json.dumps({k: record.get(k) for k in ("variant", "context", "round", "ttft_s",
                      "decode_s_per_token", "decode_median_s_per_token", "decode", "peak_gib", "error")}), flush=True)
    report["summary"] = summarize(report)
    save()
    print("\n".join(report["summary"]))


def _run(model, variant: str, context: int, new_tokens: int) -> dict:
    with _torch_kernels() if variant == "mom-torch-kernels" else contextlib.nullcontext():
        record = measure_generate(model, variant, VARIANTS.get(variant), context, new_tokens)
    assert handle_of(model) is None
    return record


@contextlib.contextmanager
def _torch_kernels():
    """The graph step with torch's kernels (decode_kernels.StepKernels reads this per handle)."""
    previous = os.environ.get("MOM_DECODE_KERNELS")
    os.environ["MOM_DECODE_KERNELS"] = "torch"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MOM_DECODE_KERNELS"]
        else:
            os.environ["MOM_DECODE_KERNELS"] = previous


def step_bytes(model, context: int) -> dict:
    """Bytes one decode step reads: every weight but the embedding table (one row of it is
    read), plus each layer's K/V up to `context`."""
    embedding = families.embedding(model).weight
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) - embedding.numel() * embedding.element_size()
    kv = context * families.kv_bytes_per_token(model)
    return dict(weights=weights, kv=kv, total=weights + kv)


@torch.no_grad()
def one_query_kernels(model, context: int, repeats: int = 20) -> dict:
    """One layer's one-query attention over `context` keys: mom's prefix kernel and sdpa (GQA)."""
    _, kv_heads, head_dim = families.kv_geometry(model)
    heads = model.config.num_attention_heads
    keys, values = (torch.randn(1, kv_heads, context, head_dim, device="cuda", dtype=model.dtype) for _ in range(2))
    q = torch.randn(1, heads, 1, head_dim, device="cuda", dtype=model.dtype)
    grouped = q.reshape(1, kv_heads, heads // kv_heads, head_dim)
    used = torch.full((1,), context, dtype=torch.int32, device="cuda")
    rows = (torch.arange(2, dtype=torch.int32, device="cuda"), torch.arange(2, dtype=torch.int32, device="cuda") * kv_heads * context)
    calls = {
        "mom_prefix_flash": lambda: decode_kernels.prefix_attention(grouped, keys, values, head_dim**-0.5),
        "mom_varlen_flash": lambda: decode_kernels.varlen_attention(q, keys, values, used, rows, head_dim**-0.5),
        "sdpa_gqa": lambda: torch.nn.functional.scaled_dot_product_attention(q, keys, values, enable_gqa=True),
    }
    out = dict(context=context, kv_bytes=2 * keys.numel() * keys.element_size())
    for name, call in calls.items():
        call()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            call()
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1000 / repeats
        out[name] = dict(ms=seconds * 1e3, gb_per_s=out["kv_bytes"] / seconds / 1e9)
    return out


def graph_replay(model, context: int, repeats: int = 50) -> dict:
    """`_graph_replay`, a failure recorded rather than raised (the run goes on)."""
    try:
        return _graph_replay(model, context, repeats)
    except Exception as error:  # an out-of-memory included: the JSON says so
        return dict(context=context, error=f"{type(error).__name__}: {error}")
    finally:
        torch.cuda.empty_cache()


@torch.no_grad()
def _graph_replay(model, context: int, repeats: int) -> dict:
    """The captured step alone: `graph.replay()` timed by CUDA events, no generate() around it.
    Against the step through generate(), this splits the per-step excess over the HBM bound
    into the graph's own time and the host's. Replays rewrite the same slot: nothing grows."""
    ids = prompt(model, context)
    name = families.cache_in_call(model, {})[0]
    with mom.enable(model, VARIANTS["mom"]) as handle:
        out = model(ids, use_cache=True, logits_to_keep=1)
        for _ in range(2):  # the first step plans the tiers (eager), the second captures
            cache = out.cache if "cache" in out else out.past_key_values
            out = model(out.logits[:, -1:].argmax(-1), use_cache=True, **{name: cache})
        step = handle.decode._step
        if step is None or step.graph is None:
            return dict(context=context, error=f"no captured step ({handle.decode.stats()})")
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        step.graph.replay()
        start.record()
        for _ in range(repeats):
            step.graph.replay()
        end.record()
        end.synchronize()
        kernels = handle.decode.stats()["kernels"]
        del out, cache, step
    return dict(context=context, replay_ms=start.elapsed_time(end) / repeats, repeats=repeats, kernels=kernels)


def summarize(report: dict) -> list[str]:
    lines = []
    bw = report["hbm"]["copy_gb_per_s"] * 1e9
    for context, nbytes in report.get("bytes_per_step", {}).items():
        bound = nbytes["total"] / bw
        lines.append(f"{context:>7} HBM bound {bound * 1e3:.2f} ms/token ({nbytes['total'] / GiB:.2f} GiB per step)")
        for replay in report.get("graph_replay", []):
            if str(replay["context"]) == context and "replay_ms" in replay:
                lines.append(f"{context:>7} graph.replay() alone, {replay.get('kernels')} kernels: {replay['replay_ms']:.2f} ms "
                             f"= {replay['replay_ms'] / 1e3 / bound:.2f}x bound")
        groups: dict[str, list] = {}
        for r in report["runs"]:
            if str(r["context"]) == context and isinstance(r.get("round"), int) and r.get("decode_median_s_per_token"):
                groups.setdefault(r["variant"], []).append(r)
        for variant, runs in groups.items():
            medians = [r["decode_median_s_per_token"] for r in runs]
            m = statistics.median(medians)
            lines.append(f"{context:>7} {variant:<10} n={len(runs)} decode median {m * 1e3:.2f} ms/token "
                         f"[{min(medians) * 1e3:.2f}-{max(medians) * 1e3:.2f}] = {m / bound:.2f}x bound; "
                         f"TTFT {statistics.median(r['ttft_s'] for r in runs):.2f} s")
    return lines


if __name__ == "__main__":
    main()
