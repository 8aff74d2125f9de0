"""hf vs mom on a model spread over several GPUs: a device map (one process) or tensor parallelism.

    # one process, layers spread by Accelerate (mom.load builds the preset on the cards directly)
    python benchmarks/multi_gpu.py --model llama-3.1-70b --contexts 65536 --out r.json
    # maximum-context bracket: the pass at N and the failure at N + step, for hf and for mom
    python benchmarks/multi_gpu.py --model llama-3.1-70b --bracket 196608,16384 --variants hf --out b.json
    # tensor parallelism: a saved checkpoint (save one with --save DIR), one rank per GPU
    torchrun --nproc-per-node 2 benchmarks/multi_gpu.py --tp --checkpoint DIR --contexts 131072 --out tp.json

Each run: a prompt of `context` random tokens, prefill asking for the last position's logits
(as generate() does), then greedy decode to 32 new tokens. hf is plain Hugging Face on the
same model object; mom is `MomConfig(mini_sequence_size=4096, offload="auto")`. TTFT and
decode are wall times with every GPU synchronized; peaks are each GPU's
`max_memory_allocated` after a reset, weights included. The JSON names the GPU count, each
card, the full commit hash, and per run the per-device peaks, the pass/fail and the error.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import time
import traceback
from pathlib import Path

import torch

import mom

GiB = 2**30
MOM = mom.MomConfig(mini_sequence_size=4096, offload="auto")


def environment() -> dict:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent).stdout.strip()
    cards = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return dict(commit=commit, gpu_count=len(cards), gpus=cards, torch=torch.__version__,
                transformers=__import__("transformers").__version__, world_size=int(os.environ.get("WORLD_SIZE", 1)))


def synchronize_all() -> float:
    for index in range(torch.cuda.device_count()):
        torch.cuda.synchronize(index)
    return time.perf_counter()


def free_all() -> None:
    gc.collect()
    for index in range(torch.cuda.device_count()):
        with torch.cuda.device(index):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(index)


def peaks() -> dict[str, float]:
    return {f"cuda:{i}": torch.cuda.max_memory_allocated(i) / GiB for i in range(torch.cuda.device_count())}


@torch.no_grad()
def run(model, variant: str, context: int, new_tokens: int, seed: int = 0) -> dict:
    """One run: prefill + greedy decode, timed, per-device peaks; an OOM is a result."""
    free_all()
    record = dict(variant=variant, context=context, new_tokens=new_tokens, passed=False)
    generator = torch.Generator().manual_seed(seed)
    first = next(model.parameters()).device if next(model.parameters()).device.type != "meta" else "cuda:0"
    ids = torch.randint(3, model.config.vocab_size, (1, context), generator=generator).to(first)
    handle = mom.enable(model, MOM) if variant == "mom" else None
    try:
        start = synchronize_all()
        out = model(ids, logits_to_keep=1, use_cache=True)
        record["ttft_s"] = synchronize_all() - start
        cache = out["cache"] if "cache" in out else out.past_key_values
        token, tokens, name = out.logits[:, -1:].argmax(-1), [], mom.engine.families.cache_in_call(model, {})[0]
        del out
        start = synchronize_all()
        for _ in range(new_tokens - 1):
            tokens.append(int(token))
            out = model(token, use_cache=True, **{name: cache})
            token = out.logits[:, -1:].argmax(-1)
        tokens.append(int(token))
        steps = max(new_tokens - 1, 1)
        record.update(decode_s_per_token=(synchronize_all() - start) / steps, tokens=tokens, passed=True)
    except (torch.OutOfMemoryError, mom.HostMemoryError) as error:
        record["error"] = f"{type(error).__name__}: {str(error).splitlines()[0]}"
    except Exception:  # noqa: BLE001  (any failure is recorded, the sweep goes on)
        record["error"] = traceback.format_exc(limit=3)
    finally:
        if handle is not None:
            handle.restore()
        record["peak_gib_by_device"] = peaks()
        cache = out = None  # noqa: F841
        free_all()
    return record


def _local_rows(weight) -> int:
    """Rows of a weight held by this rank (a DTensor's local shard under tensor parallelism)."""
    return int(getattr(weight, "to_local", lambda: weight)().shape[0])


def contexts_of(args) -> list[int]:
    if args.bracket:
        top, step = (int(v) for v in args.bracket.split(","))
        return [top + step, top]  # the failure first, then the pass below it
    return [int(c) for c in args.contexts.split(",")]


def load(args):
    if args.tp:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(args.checkpoint, dtype=torch.bfloat16, tp_plan="auto").eval()
    return mom.load(args.model, device_map="auto", dtype=torch.bfloat16)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="llama-3.1-70b")
    parser.add_argument("--contexts", default="65536")
    parser.add_argument("--bracket", default=None, help="N,STEP: run N + STEP (expected to fail) and N (to pass)")
    parser.add_argument("--variants", default="hf,mom")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--tp", action="store_true", help="tensor parallelism (run under torchrun)")
    parser.add_argument("--checkpoint", default=None, help="a saved checkpoint, for --tp")
    parser.add_argument("--save", default=None, help="save the preset with random weights to this folder and stop")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.tp and not args.checkpoint:
        parser.error("--tp loads a checkpoint with from_pretrained(tp_plan='auto'); save one first with --save DIR")
    model = load(args)
    if args.save:
        model.save_pretrained(args.save)
        return
    rank = int(os.environ.get("RANK", 0))
    report = dict(environment=environment(), model=args.model if not args.tp else args.checkpoint,
                  mode="tp" if args.tp else "device_map", device_map=getattr(model, "hf_device_map", None),
                  tp_size=getattr(model, "tp_size", None),
                  q_proj_rows_per_rank=_local_rows(model.model.layers[0].self_attn.q_proj.weight),
                  args=vars(args), runs=[])
    for context in contexts_of(args):
        for variant in args.variants.split(","):
            report["runs"].append(run(model, variant, context, args.new_tokens))
            if rank == 0:
                Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    if rank == 0:
        by_context = {}
        for r in report["runs"]:
            by_context.setdefault(r["context"], {})[r["variant"]] = r.get("tokens")
        report["tokens_equal"] = {c: (v.get("hf") == v.get("mom") if None not in v.values() else None)
                                  for c, v in by_context.items() if len(v) > 1}
        Path(args.out).write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
