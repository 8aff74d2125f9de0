"""How fast `mom.predict` answers on a CPU (issue 13): ten predictions of 8B-class models at
contexts up to 720k under 4 minutes together, and the Explorer's 128k prediction under 2 seconds
after the first.

    python benchmarks/predict_speed.py --out benchmarks/results/<date>_cpu_predict_speed.json

Run it on the machine the target names (2 cores, no GPU): it refuses to run with a GPU visible,
since the target is a laptop's. One process, as a user's session is:

- the Explorer first, as a user opens it: the default panel (simulate mode, llama-3.1-8b on a
  simulated H100-80GB at 128k), its Run clicked `--explorer-runs` times; each timed from the click
  to the drawn result (`Explorer.run(wait=True)`). The first pays the imports and the fake
  model's construction; the target is on the ones after it.
- then the ten predictions of CASES, each `mom.predict(...)` timed alone, one after another.
- then `mom plan` as the CLI runs it (`workers=None`: the maximum-context searches one offload
  mode per process, as many processes as cores), for PLANS: every configuration at 128k on an
  H100-80GB with 125 GiB of host RAM, and each offload mode's maximum context.

The JSON holds every time, the machine (CPU count, model name) and the full commit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate_clock import mom_configs  # noqa: E402

import mom  # noqa: E402
from mom.memory.provenance import provenance  # noqa: E402

KIND = "predict_speed"
# (model, variant, context): 8B-class presets of four families, every offload mode, up to 720k
CASES = [
    ("llama-3.1-8b", "hf", 32768),
    ("llama-3.1-8b", "mom", 131072),
    ("llama-3.1-8b", "mom-paper", 262144),
    ("llama-3.1-8b", "mom", 720896),
    ("qwen2.5-7b", "mom", 131072),
    ("qwen2.5-7b", "mom-paper", 524288),
    ("qwen3-8b", "mom-stream", 262144),
    ("qwen3-8b", "mom", 720896),
    ("mistral-7b", "hf", 65536),
    ("mistral-7b", "mom", 720896),
]
TEN_TARGET_S, EXPLORER_TARGET_S = 240.0, 2.0
PLANS = ["llama-3.1-8b", "qwen2.5-7b"]  # `mom plan --model M --host-gib 125`: 128k on an H100-80GB


def config_of(variant: str) -> mom.MomConfig:
    return mom.MomConfig() if variant == "hf" else mom_configs()[variant]


def explorer_runs(count: int) -> list[float]:
    """Seconds from Run to a drawn prediction, for the default panel, `count` times."""
    from mom.explore import Explorer

    panel = Explorer()
    try:
        times = []
        for _ in range(count):
            start = time.perf_counter()
            panel.run(wait=True)
            times.append(time.perf_counter() - start)
            if panel.last_error is not None:
                raise RuntimeError(f"the Explorer's run failed: {panel.message.value}")
        return times
    finally:
        panel.close()


def ten_predictions() -> list[dict]:
    runs = []
    for model, variant, context in CASES:
        start = time.perf_counter()
        predicted = mom.predict(model, config_of(variant), context=context, new_tokens=32, gpu="H100-80GB")
        seconds = time.perf_counter() - start
        runs.append(dict(model=model, variant=variant, context=context, seconds=seconds, oom=predicted.oom,
                         peak_gib=predicted.peak_gpu_bytes / 2**30))
        print(json.dumps(runs[-1]), flush=True)
    return runs


def plans() -> list[dict]:
    """Seconds of a whole `mom plan` (rows and every mode's maximum context) per model of PLANS."""
    from mom.simulate.parallel import worker_count

    runs = []
    for model in PLANS:
        start = time.perf_counter()
        planned = mom.plan(model, gpu="H100-80GB", host_bytes=125 << 30, context=131072, workers=None)
        runs.append(dict(model=model, seconds=time.perf_counter() - start, workers=worker_count(None, 5),
                         max_context=planned.max_context))
        print(json.dumps(runs[-1]), flush=True)
    return runs


def machine() -> dict:
    name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return dict(cpu=name, cpus=os.cpu_count(), torch_threads=torch.get_num_threads())


def markdown(report: dict, path: Path | str | None = None) -> list[str]:
    p, m = report["provenance"], report["machine"]
    where = f"; `{path}`" if path else ""
    ten = sum(r["seconds"] for r in report["runs"])
    later = report["explorer_s"][1:]
    lines = [f"`mom.predict` on a CPU without a GPU: {m['cpus']} cores ({m['cpu']}), torch {p['torch']}, "
             f"transformers {p['transformers']}, commit `{p['commit'][:12]}`{where}.", "",
             "| model | variant | context | seconds | predicted peak GiB |", "|---|---|---|---|---|"]
    lines += [f"| `{r['model']}` | `{r['variant']}` | {r['context']:,} | {r['seconds']:.1f} | "
              f"{'OOM' if r['oom'] else format(r['peak_gib'], '.2f')} |" for r in report["runs"]]
    lines += ["", f"Ten predictions: {ten:.1f} s together (target < {TEN_TARGET_S:.0f} s: "
                  f"{'met' if ten < TEN_TARGET_S else 'MISSED'}). The Explorer's 128k Run: first "
                  f"{report['explorer_s'][0]:.1f} s, then {', '.join(f'{s:.2f}' for s in later)} s (target < "
                  f"{EXPLORER_TARGET_S:.0f} s after the first: {'met' if later and max(later) < EXPLORER_TARGET_S else 'MISSED'})."]
    if report.get("plans"):
        lines += ["", "`mom plan` at 128k on an H100-80GB with 125 GiB of host RAM (every configuration, and each "
                      "offload mode's maximum context searched over predictions, "
                      f"{report['plans'][0]['workers']} processes): "
                  + "; ".join(f"`{r['model']}` {r['seconds']:.1f} s" for r in report["plans"]) + "."]
    return lines


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--explorer-runs", type=int, default=4)
    parser.add_argument("--allow-gpu", action="store_true", help="run even with a GPU visible (not the target's machine)")
    args = parser.parse_args(argv)
    if torch.cuda.is_available() and not args.allow_gpu:
        sys.exit("a GPU is visible: the target is a CPU-only machine (hide it with CUDA_VISIBLE_DEVICES=, "
                 "or pass --allow-gpu)")
    report = dict(kind=KIND, provenance=provenance("cpu"), machine=machine(), args=vars(args))
    report["explorer_s"] = explorer_runs(args.explorer_runs)
    report["runs"] = ten_predictions()
    report["plans"] = plans()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print("\n".join(markdown(report, args.out)))
    return report


if __name__ == "__main__":
    main()
