"""Where an eager decode step's time goes: the GPU's kernels, or the host waiting to launch them.

Issue 13's eager decode model gives transformers' DynamicCache a device term (CAT_TRAFFIC in
mom/simulate/speed.py) fitted on `hf` at 128k on one host (60 ms). `mom-none` keeps the same
cache and ran 22.7-28.4 ms at 128k on two other cards, and `hf` is flat in context on three
hosts (benchmarks/NOTES.md, 2026-12-07): the fit took host time for device time. This script
measures the split directly, per variant and context:

- wall: the decode step through `model.generate()` on the streamer clock (generate_clock.py),
  median over the steps of a run, then over `--rounds` runs;
- busy: the GPU's kernel time per decode step, from a second, profiled run of the same call
  (torch.profiler, CUDA activity): the union of the kernels' intervals between the first
  token's stamp and the last, over the steps. wall - busy is time the GPU spent waiting for
  the host. The profiler slows the host, not the kernels: busy comes from the profiled run,
  wall from the unprofiled ones.
- `hf` runs twice, with the 2D attention mask generate() builds from the prompt and without
  one, since a mask can change which attention kernel sdpa picks.

    MOM_COMMIT=<full hash> python benchmarks/decode_split.py --out $OUT/decode_split.json

On a CPU (`--device cpu --model tiny-llama`) it runs end to end with busy=None, which is what
the test suite does.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runfile  # noqa: E402
from generate_clock import FRESH_HELP, StampingStreamer, device_of, free_memory, fresh_length, prompt  # noqa: E402

import mom  # noqa: E402
from mom.memory.provenance import provenance  # noqa: E402

PHASE = "mom-decode-phase"  # the profiler range from the first token to the end
VARIANTS = {  # name: (MomConfig or None for plain transformers, pass the 2D attention mask)
    "hf": (None, True),
    "hf-nomask": (None, False),
    "mom-none": (mom.MomConfig(mini_sequence_size=4096), True),
    "mom-eager": (mom.MomConfig(mini_sequence_size=4096, offload="auto", decode_graph=False), True),
}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="llama-3.1-8b")
    parser.add_argument("--contexts", default="4096,131072")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=17, help="16 decode steps after the first token")
    parser.add_argument("--fresh", action="store_true", help=FRESH_HELP)
    parser.add_argument("--sdpa", default="default", choices=("default", "no-cudnn"),
                        help="no-cudnn: sdpa's cuDNN backend left out (torch.nn.attention.sdpa_kernel), to test "
                             "whether first-time lengths are slow from cuDNN building a plan per new shape")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    model = mom.load(args.model, device=args.device)
    report = dict(kind="decode_split", provenance=provenance(device_of(model).type), args=vars(args), runs=[],
                  started=time.strftime("%Y-%m-%dT%H:%M:%S"))
    index = 0
    with sdpa_backends(args.sdpa):
        for round_index in range(args.rounds):
            for context in (int(c) for c in args.contexts.split(",")):
                for name in args.variants.split(","):
                    tokens = fresh_length(context, index, args.new_tokens) if args.fresh else context
                    run = dict(variant=name, context=context, prompt_tokens=tokens, round=round_index,
                               **measure(model, name, tokens, args.new_tokens, profiled=round_index == 0))
                    index += 1
                    report["runs"].append(run)
                    runfile.save(args.out, report)
                    print(_line(run), flush=True)
    report["summary"] = summary(report["runs"])
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    runfile.save(args.out, report)
    return report


def sdpa_backends(choice: str):
    """A context in which sdpa picks among all its backends ("default") or all but cuDNN ("no-cudnn")."""
    if choice == "default":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


@torch.no_grad()
def measure(model, name: str, context: int, new_tokens: int, profiled: bool) -> dict:
    """The wall step of one generate() run, and (when `profiled`) the GPU's busy time per step
    from a second, profiled run. A failure is a result."""
    config, masked = VARIANTS[name]
    ids = prompt(model, context)
    handle = mom.enable(model, config) if config is not None else None
    try:
        free_memory()
        wall = _generate(model, ids, new_tokens, masked)
        out = dict(wall_step_s=statistics.median(wall), wall_steps_s=wall, error=None)
        if profiled:
            out["busy_step_s"] = _busy_per_step(model, ids, new_tokens, masked)
        return out
    except Exception as error:  # an OOM or any failure: recorded, the sweep goes on
        return dict(error=f"{type(error).__name__}: {str(error).splitlines()[0]}")
    finally:
        if handle is not None:
            handle.restore()
        free_memory()


def _generate(model, ids, new_tokens: int, masked: bool, streamer=None) -> list[float]:
    streamer = streamer or StampingStreamer(device_of(model))
    model.generate(ids, attention_mask=torch.ones_like(ids) if masked else None, max_new_tokens=new_tokens,
                   min_new_tokens=new_tokens, do_sample=False, pad_token_id=0, streamer=streamer)
    stamps = streamer.stamps
    return [b - a for a, b in zip(stamps[1:], stamps[2:])]


class _MarkingStreamer(StampingStreamer):
    """The streamer clock, also opening a profiler range at the first token (the decode phase)."""

    def __init__(self, device):
        super().__init__(device)
        self.decode = torch.autograd.profiler.record_function(PHASE)

    def put(self, value) -> None:
        super().put(value)
        if len(self.stamps) == 2:
            self.decode.__enter__()

    def end(self) -> None:
        if len(self.stamps) >= 2:
            self.decode.__exit__(None, None, None)


def _busy_per_step(model, ids, new_tokens: int, masked: bool) -> float | None:
    """GPU kernel time per decode step: the union of the device events inside the decode phase
    (the first token's stamp to the end), over the steps. None on a CPU, which has no device
    events; the profiled run and the phase are still taken there, so the test suite checks them."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device_of(model).type == "cuda"
    streamer = _MarkingStreamer(device_of(model))
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        steps = len(_generate(model, ids, new_tokens, masked, streamer))
    events = prof.events()
    [phase] = [e for e in events if e.name == PHASE and e.device_type == torch.autograd.DeviceType.CPU]
    if not cuda or not steps:
        return None
    start, end = phase.time_range.start, phase.time_range.end
    kernels = sorted((e.time_range.start, e.time_range.end) for e in events
                     if e.device_type == torch.autograd.DeviceType.CUDA and e.name != PHASE
                     and not getattr(e, "is_user_annotation", False) and start <= e.time_range.start <= end)
    return _union_us(kernels) / 1e6 / steps


def _union_us(intervals: list[tuple[float, float]]) -> float:
    """Total length of the union of sorted intervals (kernels on several streams may overlap)."""
    total, current_start, current_end = 0.0, None, None
    for a, b in intervals:
        if current_end is None or a > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = a, b
        else:
            current_end = max(current_end, b)
    return total + (current_end - current_start if current_end is not None else 0.0)


def summary(runs: list[dict]) -> list[dict]:
    """Per (variant, context): median wall step over rounds, busy step, and the host's share."""
    out = []
    for key in dict.fromkeys((r["variant"], r["context"]) for r in runs):
        group = [r for r in runs if (r["variant"], r["context"]) == key and not r.get("error")]
        if not group:
            continue
        wall = statistics.median(r["wall_step_s"] for r in group)
        busy = next((r["busy_step_s"] for r in group if r.get("busy_step_s") is not None), None)
        out.append(dict(variant=key[0], context=key[1], wall_step_s=wall, busy_step_s=busy,
                        gpu_waiting_s=None if busy is None else wall - busy, rounds=len(group)))
    return out


def markdown(report: dict, path: str) -> list[str]:
    """Each (context, variant): the wall step of each round and the GPU's busy time per step, as README lines.
    Round 0 decodes lengths the process has not decoded before; later rounds repeat them."""
    import tables

    args = report["args"]
    options = "".join([", every run at lengths not decoded before (--fresh)" if args.get("fresh") else "",
                       ", sdpa without cuDNN" if args.get("sdpa") == "no-cudnn" else ""])
    what = (f"Eager decode step through `generate()` (streamer clock, median over {args['new_tokens'] - 1} steps) "
            f"against the GPU's kernel time per step (torch.profiler, a separate profiled run){options}, ")
    rounds = sorted({r["round"] for r in report["runs"]})
    titles = ["context", "variant", *[f"wall ms, round {i}" for i in rounds], "busy ms"]
    rows = []
    for key in dict.fromkeys((r["context"], r["variant"]) for r in report["runs"]):
        group = {r["round"]: r for r in report["runs"] if (r["context"], r["variant"]) == key}
        busy = next((r["busy_step_s"] for r in group.values() if r.get("busy_step_s") is not None), None)
        row = {"context": tables.context_label(key[0]), "variant": f"`{key[1]}`", "busy ms": _ms(busy)}
        row.update({f"wall ms, round {i}": "error" if group.get(i, {}).get("error") else _ms(group.get(i, {}).get("wall_step_s"))
                    for i in rounds})
        rows.append(row)
    return [tables.header({**report, "model": args["model"]}, path, what), "", *tables.markdown(titles, rows), "",
            ("Every round decodes K/V lengths this process has not decoded before (--fresh). busy is from round 0."
             if args.get("fresh") else
             "Round 0 decodes K/V lengths this process has not decoded before (each variant's first run at that "
             "context, or its first with a new K/V layout); round 1 repeats the same lengths. busy is from round 0.")]


def _ms(seconds: float | None) -> str:
    return f"{seconds * 1e3:.2f}" if seconds is not None else "-"


def _line(run: dict) -> str:
    if run.get("error"):
        return f"{run['context']:>7} {run['variant']:<10} error {run['error']}"
    busy = run.get("busy_step_s")
    return (f"{run['context']:>7} {run['variant']:<10} round {run['round']} wall {run['wall_step_s'] * 1e3:.2f} ms"
            + (f" busy {busy * 1e3:.2f} ms" if busy is not None else ""))


if __name__ == "__main__":
    main()
