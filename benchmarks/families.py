"""Two more families (qwen2.5-7b, mistral-nemo-12b) at 32k-128k: `hf` against `mom` through
generate() (peak, TTFT, decode), and greedy-token agreement judged by the bf16 criterion of
mom/exactness.py.

    MOM_COMMIT=$(git rev-parse HEAD) python benchmarks/families.py --out /tmp/mom-runs/families.json --detach
    python benchmarks/families.py --out /tmp/mom-runs/families.json --poll --wait 540   # until finished

Why the criterion needs care: two bf16 runs of the same unpatched model disagree after a few
tokens, so "mom's tokens equal hf's" is the wrong test. mom/exactness.py feeds every model the
fp32 reference's own greedy continuation and requires mom's largest logit error against the
fp32 reference to stay within 1.5x the unpatched bf16 model's error (plus one bf16 unit). The
bf16 token sequences of the timed runs are compared too (first divergence), for information.

What an fp32 reference costs at 128k, and what is done: the reference is the same weights cast
to fp32 in place (bf16 -> fp32 -> bf16 is exact, so no second copy). Unpatched fp32 does not
fit an 80 GB card at 128k: mistral-nemo-12b is 49 GB of fp32 weights, its fp32 K/V 320 KiB per
token (40 GiB at 128k) and its fp32 MLP intermediates 22 GB. So the reference at every context
is fp32 *with mom* (4096-token mini-sequences, offload="auto": the K/V that does not fit stays
in host RAM), which matches the unpatched model within 1e-5 in fp32 (tests/test_exactness.py).
Because a reference computed by mom could share a mom bug, it is checked on the real shapes at
the smallest context (32k, where unpatched fp32 fits: about 66 GB for nemo) against the
unpatched fp32 model (`reference_check`: mom/exactness.fp32_mismatch). TF32 is off for the
reference. fp32 prefill runs at about 1/10 of bf16 speed: about 3-5 minutes at 128k for nemo.
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
from generate_clock import PAPER_PIECE, free_memory, measure_generate, prompt  # noqa: E402

import mom  # noqa: E402
from mom.engine import families  # noqa: E402
from mom.exactness import bf16_verdict, fp32_mismatch, teacher_forced_logits  # noqa: E402

KIND = "families"
MODELS = "qwen2.5-7b,mistral-nemo-12b"
CONTEXTS = "32768,65536,98304,131072"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    runfile.add_arguments(parser, model=MODELS)
    parser.add_argument("--contexts", default=CONTEXTS)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1, help="timed generate() runs per variant and context")
    parser.add_argument("--exact-tokens", type=int, default=32, help="teacher-forced steps of the bf16 verdict")
    parser.add_argument("--piece", type=int, default=PAPER_PIECE, help="mom's mini-sequence size")
    parser.add_argument("--dtype", default="bf16")
    parser.add_argument("--no-exactness", action="store_true")
    return parser.parse_args(argv)


def mom_config(args) -> mom.MomConfig:
    return mom.MomConfig(mini_sequence_size=args.piece, offload="auto")


def timing(args, model, name: str, context: int, report: dict) -> None:
    """hf and mom through generate(), round-robin over repeats; skips runs already recorded."""
    for repeat in range(args.repeats):
        for variant, config in (("hf", None), ("mom", mom_config(args))):
            if _recorded(report, name, "timing", context, variant, repeat):
                continue
            record = measure_generate(model, variant, config, context, args.new_tokens, settle_s=args.settle)
            record.update(model=name, kind="timing", repeat=repeat)
            _append(args, report, record)


@torch.no_grad()
def reference(model, ids: torch.Tensor, steps: int, config) -> tuple[torch.Tensor, torch.Tensor]:
    """The fp32 model's own greedy continuation [1, steps] and its logits [steps + 1, 1, V] (one prefill)."""
    handle = mom.enable(model, config) if config is not None else None
    try:
        name = families.cache_in_call(model, {})[0]
        out = model(ids, use_cache=True, logits_to_keep=1)
        logits, tokens = [out.logits[:, -1].float().cpu()], []
        for _ in range(steps):
            tokens.append(logits[-1].argmax(-1, keepdim=True).to(ids.device))
            cache = out.cache if "cache" in out else out.past_key_values
            out = model(tokens[-1], use_cache=True, **{name: cache})
            logits.append(out.logits[:, -1].float().cpu())
        return torch.cat(tokens, dim=1), torch.stack(logits)
    finally:
        if handle is not None:
            handle.restore()


def exactness(args, model, name: str, context: int, check: bool) -> dict:
    """The bf16 verdict at one context (and, if `check`, the mom-fp32 reference against unpatched fp32)."""
    record = dict(model=name, kind="exactness", context=context, variant="mom", oom=False, error=None,
                  reference="fp32 with mom (mini-sequences, offload=auto), TF32 off")
    ids, dtype = prompt(model, context), model.dtype
    try:
        continuation, ref = _fp32(model, lambda: reference(model, ids, args.exact_tokens, mom_config(args)))
        if check:
            plain = _fp32(model, lambda: teacher_forced_logits(model, ids, continuation).cpu())
            record["reference_check"] = reference_check(ref, plain)
        baseline = teacher_forced_logits(model, ids, continuation).cpu()
        with mom.enable(model, mom_config(args)):  # the handle restores the model on exit, even on error
            ours = teacher_forced_logits(model, ids, continuation).cpu()
        verdict = bf16_verdict(ref, baseline, ours)
        record.update(passed=verdict.passed, summary=verdict.summary(), worst_ratio=verdict.worst_ratio,
                      failing_steps=verdict.failing_steps, mom_error=verdict.mom_error,
                      baseline_error=verdict.baseline_error, floor=verdict.floor)
    except torch.OutOfMemoryError as error:
        record.update(oom=True, wall="gpu", error=str(error).splitlines()[0])
    except Exception as error:  # recorded; the sweep goes on
        record.update(error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc(limit=4))
    finally:
        model.to(dtype)
        free_memory(args.settle)
    return record


def reference_check(mom_fp32: torch.Tensor, plain_fp32: torch.Tensor) -> dict:
    """How far the mom-fp32 reference is from the unpatched fp32 model (logits [T, B, V])."""
    scale = plain_fp32.abs().max().clamp_min(1e-12)
    return dict(relative_error=((mom_fp32 - plain_fp32).abs().max() / scale).item(),
                tokens_identical=bool(torch.equal(mom_fp32.argmax(-1), plain_fp32.argmax(-1))),
                within_1e5=fp32_mismatch(mom_fp32, plain_fp32) is None)


def _fp32(model, compute):
    """Run `compute` with the model's weights cast to fp32 in place and TF32 off."""
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    dtype = model.dtype
    try:
        free_memory()
        model.float()
        return compute()
    finally:
        model.to(dtype)
        torch.backends.cuda.matmul.allow_tf32 = tf32


def agreement(report: dict, name: str, context: int) -> dict | None:
    """Where the bf16 greedy tokens of the first timed mom run leave hf's (None: identical)."""
    runs = {r["variant"]: r for r in report["runs"] if r.get("model") == name and r.get("kind") == "timing"
            and r["context"] == context and r.get("tokens")}
    if "hf" not in runs or "mom" not in runs:
        return None
    a, b = runs["hf"]["tokens"], runs["mom"]["tokens"]
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    return dict(model=name, kind="agreement", context=context, variant="mom", identical=first is None,
                first_divergence=first, compared=min(len(a), len(b)))


def _recorded(report: dict, name: str, kind: str, context: int, variant: str = "mom", repeat: int | None = None):
    return any(r.get("model") == name and r.get("kind") == kind and r["context"] == context
               and r["variant"] == variant and (repeat is None or r.get("repeat") == repeat) for r in report["runs"])


def _append(args, report: dict, record: dict) -> None:
    report["runs"].append(record)
    runfile.save(args.out, report)
    print(runfile.brief(record), flush=True)


def estimate_lines(args) -> list[str]:
    contexts = [int(c) for c in args.contexts.split(",")]
    total = 0.0
    for name in args.model.split(","):
        s = estimate.shape(name)
        total += estimate.LOAD_S + args.repeats * sum(estimate.run_s(s, v, c, args.new_tokens)
                                                      for c in contexts for v in ("hf", "mom"))
        if not args.no_exactness:  # fp32 reference, 2 bf16 teacher-forced prefills, the 32k check
            total += sum(estimate.prefill_s(s, c, "fp32") + 2 * estimate.prefill_s(s, c) for c in contexts)
            total += estimate.prefill_s(s, min(contexts), "fp32")
    return estimate.lines(f"families ({args.model})", total)


def run_model(args, name: str, report: dict) -> None:
    start = time.perf_counter()
    model = mom.load(name, device=args.device, dtype=args.dtype)
    report.setdefault("load_s", {})[name] = time.perf_counter() - start
    contexts = [int(c) for c in args.contexts.split(",")]
    for context in contexts:
        timing(args, model, name, context, report)
        if not _recorded(report, name, "agreement", context) and agreement(report, name, context):
            _append(args, report, agreement(report, name, context))
        if not args.no_exactness and not _recorded(report, name, "exactness", context):
            _append(args, report, exactness(args, model, name, context, check=context == min(contexts)))
    del model
    free_memory()


def main(argv: list[str] | None = None) -> dict | None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if runfile.control(args, [__file__, *argv], lambda: estimate_lines(args)):
        return None
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    report = runfile.open_report(args, KIND, device)
    for name in args.model.split(","):
        run_model(args, name, report)
    return runfile.finish(args, report, tables.families_markdown)


if __name__ == "__main__":
    main()
