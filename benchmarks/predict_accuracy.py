"""Predicted vs measured on one GPU: peak memory, OOM, TTFT and decode of llama-3.1-8b (issue 13).

    MOM_COMMIT=$(git rev-parse HEAD) python benchmarks/predict_accuracy.py --out $OUT/predict_accuracy.json

One process, well under 10 minutes on an H100: contexts 32k and 128k, then 256k while the time
budget lasts; variants hf, mom-none, mom-auto, mom-stream, mom-paper (configs as in
benchmarks/harness.py). Each run is `mom.profile(record=False)`: model.generate() over a seeded
random prompt with 32 greedy tokens, peak = max_memory_allocated over prefill and decode, an
out-of-memory is a result. Each prediction is `mom.predict` of the same run on this GPU's row
of the table (H100-80GB, H200-141GB, ...) with the exact memory torch reports. The JSON is rewritten after every run, so a cut-off run
keeps what it measured; the commit comes from $MOM_COMMIT (the device copy has no .git).

Decode is checked apart (`decode` in the JSON), on the clock the speed model is calibrated on
(benchmarks/results/2026-11-28_h100_decode_repeats.json): generate() with a streamer, variants
interleaved over `--decode-rounds` rounds at `--decode-contexts`; per variant and context the
median over rounds of each round's median step against the predicted step, its range and its
path (graph or eager; the graph path is calibrated on benchmarks/results/2026-12-07_h100_decode_speed.json).
The main sweep also records which decode path each measured and predicted run took.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate_clock import FRESH_HELP, fresh_length, measure_generate  # noqa: E402

import mom  # noqa: E402
from mom.simulate import GPUS  # noqa: E402

GiB = 2**30
VARIANTS = {
    "hf": mom.MomConfig(),
    "mom-none": mom.MomConfig(mini_sequence_size=4096),
    "mom-auto": mom.MomConfig(mini_sequence_size=4096, offload="auto", decode_graph=True),
    "mom-stream": mom.MomConfig(mini_sequence_size=4096, offload="stream"),
    "mom-paper": mom.MomConfig.paper(),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="llama-3.1-8b")
    parser.add_argument("--contexts", default="32768,131072,262144")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--device", default="cuda", help="cpu only to smoke-test this script on a tiny preset")
    parser.add_argument("--decode-contexts", default="4096,131072", help="'' to skip the decode check")
    parser.add_argument("--decode-rounds", type=int, default=3)
    parser.add_argument("--fresh", action="store_true", help="the decode check with " + FRESH_HELP)
    parser.add_argument("--budget-s", type=float, default=540, help="start no run after this many seconds")
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "predict_accuracy.json"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    cuda = args.device.startswith("cuda")
    card = this_card() if cuda else GPUS["H100-80GB"]
    report = dict(commit=os.environ.get("MOM_COMMIT", "unknown"), environment=_environment() if cuda else {},
                  model=args.model, gpu_model=card.name, args=vars(args), runs=[])
    model = mom.load(args.model, device=args.device)
    for name in args.variants.split(","):  # warm kernels and code paths
        mom.profile(model, VARIANTS[name], context=4096, new_tokens=3, record=False)
    for context in (int(c) for c in args.contexts.split(",")):
        for name in args.variants.split(","):
            if time.perf_counter() - started > args.budget_s:
                report["runs"].append(dict(variant=name, context=context, skipped="time budget"))
                continue
            report["runs"].append(_compare(model, args.model, name, context, args.new_tokens, card))
            _write(report, args.out)
            print(_line(report["runs"][-1]), flush=True)
    if args.decode_contexts and cuda:
        report["decode"] = _decode_check(model, args, card, started)
        _write(report, args.out)
    report["wall_s"] = time.perf_counter() - started
    _write(report, args.out)
    return 0


def _compare(model, model_name: str, variant: str, context: int, new_tokens: int, card) -> dict:
    record = dict(variant=variant, context=context)
    try:
        measured = mom.profile(model, VARIANTS[variant], context=context, new_tokens=new_tokens, record=False)
        record["measured"] = _figures(measured)
    except Exception as error:  # anything but an OOM: recorded, the sweep goes on
        record["measured"] = dict(error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc(limit=4))
    start = time.perf_counter()
    predicted = mom.predict(model_name, VARIANTS[variant], context=context, new_tokens=new_tokens, gpu=card)
    record["predicted"] = dict(_figures(predicted), seconds=time.perf_counter() - start,
                               ttft_range_s=predicted.ttft_range_s,
                               decode_s_per_token_range=predicted.decode_s_per_token_range,
                               calibration=predicted.calibration)
    record["errors_pct"] = _errors(record["measured"], record["predicted"])
    return record


def _figures(p) -> dict:
    decode = 1 / p.decode_tokens_per_s if p.decode_tokens_per_s else None
    return dict(oom=p.oom, error=p.error and p.error[:300], peak_gib=p.peak_gpu_bytes / GiB,
                prefill_peak_gib=p.prefill_peak_bytes / GiB, ttft_s=p.ttft_s, decode_s_per_token=decode,
                decode_path=p.decode_path)


def _decode_check(model, args, card, started: float) -> list[dict]:
    """Rounds of generate() per (context, variant), interleaved; then each against its prediction."""
    cases = [(int(c), v) for c in args.decode_contexts.split(",") for v in args.variants.split(",")]
    rounds: dict = {case: [] for case in cases}
    index = 0
    for _ in range(args.decode_rounds):
        for context, variant in cases:
            if time.perf_counter() - started < args.budget_s:
                config = VARIANTS[variant] if variant != "hf" else None
                tokens = fresh_length(context, index, args.new_tokens) if args.fresh else context
                index += 1
                run = measure_generate(model, variant, config, tokens, args.new_tokens)
                if not run["oom"] and run.get("decode_median_s_per_token"):
                    rounds[(context, variant)].append(run["decode_median_s_per_token"])
    return [_decode_record(args.model, variant, context, args.new_tokens, card, rounds[(context, variant)])
            for context, variant in cases]


def _decode_record(model_name: str, variant: str, context: int, new_tokens: int, card, medians: list) -> dict:
    """A streamer's median step against the predicted steady step: the median has no first-step
    reload, so the mean (decode_tokens_per_s, the reload spread over the steps) is kept beside it."""
    predicted = mom.predict(model_name, VARIANTS[variant], context=context, new_tokens=new_tokens, gpu=card)
    step = predicted.decode_step_s
    spread = predicted.decode_reload_s / max(new_tokens - 1, 1)
    low, high = (predicted.decode_s_per_token_range or (None, None))
    record = dict(variant=variant, context=context, clock="generate+streamer", round_medians_s=medians,
                  predicted_s=step, predicted_mean_s=1 / predicted.decode_tokens_per_s if step else None,
                  predicted_reload_s=predicted.decode_reload_s,
                  predicted_range_s=(low - spread, high - spread) if step else None,
                  predicted_path=predicted.decode_path, calibration=predicted.calibration.get("decode_host"))
    if medians and step:
        measured = statistics.median(medians)
        record.update(measured_median_s=measured, error_pct=100 * (step - measured) / measured,
                      within_15_pct=abs(step / measured - 1) <= 0.15,
                      in_range=record["predicted_range_s"][0] <= measured <= record["predicted_range_s"][1])
    print(f"decode {context:>7} {variant:<10} measured {record.get('measured_median_s')} predicted {step} "
          f"({predicted.decode_path}) error {record.get('error_pct')}", flush=True)
    return record


def _errors(measured: dict, predicted: dict) -> dict:
    out = {"oom_agrees": measured.get("oom") == predicted.get("oom")}
    for key in ("peak_gib", "prefill_peak_gib", "ttft_s", "decode_s_per_token"):
        m, p = measured.get(key), predicted.get(key)
        if m and p and not measured.get("oom"):
            out[key] = 100 * (p - m) / m
    return out


def this_card():
    """This GPU's row of the table (by name; the H100's speeds when none matches), with its exact memory."""
    name, total = torch.cuda.get_device_name(), torch.cuda.get_device_properties(0).total_memory
    row = next((card for key, card in GPUS.items() if key.split("-")[0] in name and
                abs(card.total_bytes - total) < 8 * GiB), GPUS["H100-80GB"])
    return dataclasses.replace(row, total_bytes=total)


def _environment() -> dict:
    import transformers

    props = torch.cuda.get_device_properties(0)
    return dict(card=torch.cuda.get_device_name(), gpu_total_gib=props.total_memory / GiB, torch=torch.__version__,
                transformers=transformers.__version__, python=sys.version.split()[0])


def _write(report: dict, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=1, default=str) + "\n")


def _line(run: dict) -> str:
    m, p, e = run.get("measured", {}), run.get("predicted", {}), run.get("errors_pct", {})
    def show(d):
        return "OOM" if d.get("oom") else f"{d.get('peak_gib', 0):.2f} GiB"
    return (f"{run['context']:>7} {run['variant']:<10} measured {show(m):>10} predicted {show(p):>10} "
            f"peak {e.get('peak_gib', float('nan')):+.2f}% ttft {e.get('ttft_s', float('nan')):+.1f}% "
            f"decode {e.get('decode_s_per_token', float('nan')):+.1f}% oom agrees {e.get('oom_agrees')}")


if __name__ == "__main__":
    sys.exit(main())
