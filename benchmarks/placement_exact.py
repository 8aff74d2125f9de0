"""Issue 14's exactness check: K/V placed half on the GPU, half on the host, against all on the GPU.

    MOM_COMMIT=$(git rev-parse HEAD) python benchmarks/placement_exact.py --out /tmp/mom-runs/placement_exact.json

Why: issue 14 places each layer's K/V before prefill, on the GPU or on the host (offload="auto",
the host layers streamed at decode), and runs a million tokens that the unpatched model cannot
run. So exactness is checked where both fit, against mom itself with every layer on the GPU:

1. reference: mom with offload="none" (mini-sequences of `--piece`), its own greedy
   continuation of `--exact-tokens` steps and its logits [T+1, 1, V] from one prefill;
2. baseline: the same config again, teacher-forced on that continuation. bf16 on a GPU is not
   reproducible run to run, so this is the noise floor (it may be exactly 0);
3. candidate: offload="auto" with `kv_gpu_budget` set to hold exactly half of the layers at
   this context (decode's growth room included, engine/placement.py), teacher-forced too;
4. mom/exactness.bf16_verdict(reference, baseline, candidate): the candidate's largest logit
   error per step at most 1.5x the baseline's plus one bf16 unit. Also recorded: each layer's
   placement before prefill and decode tier in the candidate, and whether its greedy tokens
   are the reference's.

The context (default) is the largest `mom.plan` predicts for offload="none" on this card (about
a minute of CPU); a run out of memory there steps down 16,384 tokens, at most 3 times. Results
as benchmarks/runfile.py writes them (saved after every run, resumable, --detach/--poll).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import estimate  # noqa: E402
import runfile  # noqa: E402
import tables  # noqa: E402
from families import reference  # noqa: E402
from generate_clock import PAPER_PIECE, free_memory, prompt  # noqa: E402

import mom  # noqa: E402
from mom.engine import families, placement  # noqa: E402
from mom.engine.host_guard import HostMemoryError  # noqa: E402
from mom.exactness import bf16_verdict, teacher_forced_logits  # noqa: E402

KIND = "placement_exact"
STEP = 16384  # the prediction's resolution, and the step down after an out-of-memory
STEPS_DOWN = 3


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    runfile.add_arguments(parser)
    parser.add_argument("--context", type=int, default=None, help="default: mom-none's predicted maximum here")
    parser.add_argument("--exact-tokens", type=int, default=8, help="teacher-forced steps of the bf16 verdict")
    parser.add_argument("--piece", type=int, default=PAPER_PIECE, help="mom's mini-sequence size")
    return parser.parse_args(argv)


def none_config(args) -> mom.MomConfig:
    return mom.MomConfig(mini_sequence_size=args.piece)


def target_context(args) -> int:
    """--context, or (once; kept in args) the largest context mom-none is predicted to run on this card."""
    if args.context is None:
        from predict_accuracy import this_card  # this GPU's row of mom.simulate.GPUS, with its exact memory

        from mom.simulate import GPUS
        from mom.simulate.plan import max_context

        card = this_card() if torch.cuda.is_available() else GPUS["H100-80GB"]
        begun = time.perf_counter()
        args.context = max_context(args.model, none_config(args), card, new_tokens=args.exact_tokens + 1,
                                   resolution=STEP)
        if args.context is None:
            sys.exit(f"mom-none is predicted not to run {STEP:,} tokens of {args.model} on {card.name}")
        args.predicted_on = card.name
        print(f"predicted maximum context of mom-none on {card.name}: {args.context:,} "
              f"({time.perf_counter() - begun:.0f} s)", flush=True)
    return args.context


def half_budget(model, context: int) -> int:
    """Bytes of `kv_gpu_budget` that hold exactly half of the layers' K/V at `context`."""
    layers = len(families.offloadable_layers(model.config))
    return layers // 2 * placement.layer_kv_bytes_of(model.config, model.dtype, 1, context)


def check(args, model, context: int) -> dict:
    """Reference, baseline and candidate at one context, and the verdict; an OOM is a result."""
    budget = half_budget(model, context)
    record = dict(context=context, variant="mom-auto-half", kv_gpu_budget=budget, oom=False, error=None)
    ids = prompt(model, context)
    try:
        record["stage"] = "reference"
        continuation, ref = reference(model, ids, args.exact_tokens, none_config(args))
        free_memory(args.settle)
        record["stage"] = "baseline"
        with mom.enable(model, none_config(args)):
            baseline = teacher_forced_logits(model, ids, continuation).cpu()
        free_memory(args.settle)
        record["stage"] = "candidate"
        config = mom.MomConfig(mini_sequence_size=args.piece, offload="auto", kv_gpu_budget=budget)
        ours, layers = candidate(model, ids, continuation, config)
        record.update(layers, **verdict(ref, baseline, ours), stage="done")
    except torch.OutOfMemoryError as error:
        record.update(oom=True, wall="gpu", error=str(error).splitlines()[0])
    except HostMemoryError as error:
        record.update(oom=True, wall="host", error=str(error))
    except Exception as error:  # recorded; the JSON keeps it
        record.update(error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc(limit=4))
    finally:
        free_memory(args.settle)
    return record


def candidate(model, ids, continuation, config) -> tuple[torch.Tensor, dict]:
    """Teacher-forced logits under `config`, and where its cache put each layer."""
    with mom.enable(model, config) as handle:
        kept = _kept_caches(handle)
        logits = teacher_forced_logits(model, ids, continuation).cpu()
        layers = kept[0].mom_layers()
        placed, tiers = [layer.placement for layer in layers], [layer.tier for layer in layers]
        kept.clear()
    return logits, dict(placement=placed, tiers=tiers, gpu_layers=placed.count("device"),
                        host_layers=placed.count("host"))


def _kept_caches(handle) -> list:
    """The MomCaches `handle` makes from now on, held so their layers can be read after the run."""
    kept, make = [], handle.offload.cache_for

    def cache_for(call, current):
        cache = make(call, current)
        if cache is not None:
            kept.append(cache)
        return cache

    handle.offload.cache_for = cache_for
    return kept


def verdict(ref: torch.Tensor, baseline: torch.Tensor, ours: torch.Tensor) -> dict:
    v = bf16_verdict(ref, baseline, ours)
    return dict(passed=v.passed, summary=v.summary(), worst_ratio=v.worst_ratio, failing_steps=v.failing_steps,
                mom_error=v.mom_error, baseline_error=v.baseline_error, floor=v.floor,
                tokens_identical=torch.equal(ours.argmax(-1), ref.argmax(-1)),
                baseline_tokens_identical=torch.equal(baseline.argmax(-1), ref.argmax(-1)))


def estimate_lines(args) -> list[str]:
    s, context = estimate.shape(args.model), target_context(args)
    total = estimate.LOAD_S + 3 * (estimate.prefill_s(s, context) + args.exact_tokens * estimate.DECODE_S)
    return estimate.lines(f"placement_exact ({args.model}, {context:,} tokens)", total)


def markdown(report: dict) -> list[str]:
    what = (f"Issue 14: offload=\"auto\" with half of the layers' K/V on the GPU against offload=\"none\"; bf16 "
            f"verdict over {report['args'].get('exact_tokens')} teacher-forced steps (mom/exactness.py), ")
    titles = ["context", "passed", "worst ratio", "max error (candidate / baseline / floor)", "tokens identical",
              "GPU / host layers"]
    rows = [{"context": f"{r['context']:,}", "passed": "OOM" if r["oom"] else r.get("passed", "error"),
             "worst ratio": f"{r['worst_ratio']:.3g}" if r.get("worst_ratio") is not None else "-",
             titles[3]: f"{max(r['mom_error']):.3g} / {max(r['baseline_error']):.3g} / {r['floor']:.3g}"
             if "floor" in r else "-",
             "tokens identical": r.get("tokens_identical", "-"),
             "GPU / host layers": f"{r['gpu_layers']} / {r['host_layers']}" if "gpu_layers" in r else "-"}
            for r in report["runs"]]
    return [tables.header(report, None, what), "", *tables.markdown(titles, rows)]


def main(argv: list[str] | None = None) -> dict | None:
    started = runfile.start(argv, parse, __file__, KIND, estimate_lines)
    if started is None:
        return None
    args, model, report = started
    for step in range(STEPS_DOWN + 1):
        context = target_context(args) - step * STEP
        if context <= 0:
            break
        record = next((r for r in report["runs"] if r["context"] == context), None)
        if record is None:
            report["planned"] = step + 1
            record = check(args, model, context)
            report["runs"].append(record)
            runfile.save(args.out, report)
            print(runfile.brief(record), flush=True)
        if not record["oom"]:
            break
    return runfile.finish(args, report, markdown)


if __name__ == "__main__":
    main()
