"""`mom demo | profile | predict | max-context | presets | plan`: the terminal face of the functions notebooks call.

Every command prints a table and can write JSON, so each number it shows can be reproduced and
kept. GPU benchmarks live in benchmarks/bench.py (a script, not part of the installed package).

Every mistake is answered before any model is built: numbers are checked by argparse (a
positive count, a positive GiB limit), output paths are checked to be writable files, and the
model name is checked by `mom.load` from its text first (a preset typo gets "did you mean").
A limit is either left out (no limit) or a positive number of GiB: 0 and negative limits are
errors, here as in the API and the Explorer. Errors print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
from pathlib import Path

from . import checks
from .config import OFFLOAD_MODES, MomConfig, MomConfigError
from .memory.events import GiB, format_bytes

LIMIT_HELP = ("pretend device memory of CPU runs, in GiB (the tensor tracker's limit; e.g. 0.004 for about 4 MiB "
              "on a tiny preset); a positive number, leave it out for no limit; not for CUDA, where the card is "
              "the limit")
CPU_TIMING_NOTE = ("note: on CPU the tensor tracker hooks every allocation, so TTFT and decode rates are not "
                   "meaningful; the memory columns are")


def _count(text: str) -> int:
    try:
        return checks.count(int(text), "value")
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}") from None


def _gib(text: str) -> float:
    try:
        value = float(text)
        checks.limit_from_gib(value, "value")
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number of GiB, got {text!r}; leave the option out "
                                         "for no limit") from None
    return value


def _budget_gib(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of GiB, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more GiB, got {text!r}")
    return value


def _config(args) -> MomConfig:
    budget = int(args.kv_gpu_budget_gib * GiB) if args.kv_gpu_budget_gib is not None else None
    return MomConfig(mini_sequences=args.mini_sequences, mini_sequence_size=args.mini_sequence_size,
                     offload=args.offload, kv_gpu_budget=budget,
                     trim_last_layer=False if args.no_trim else None)


def _run_args(parser: argparse.ArgumentParser) -> None:
    """The options of a measured run: the model and mom's config, the device and the limit, JSON."""
    _config_args(parser, default_model="tiny-llama", offload_note="; offload needs CUDA")
    parser.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when available)")
    parser.add_argument("--limit-gib", type=_gib, default=None, metavar="GIB", help=LIMIT_HELP)
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="also write the results as JSON to this file (checked before the run)")


def _config_args(parser: argparse.ArgumentParser, default_model: str, offload_note: str = "") -> None:
    """The model, mom's config and the new tokens: what a measured run and a prediction share."""
    parser.add_argument("--model", default=default_model, metavar="NAME",
                        help="a preset (`mom presets`), a local model directory, or a hub id org/name "
                             f"(default: {default_model})")
    parser.add_argument("--mini-sequences", "-M", type=_count, default=None, metavar="M",
                        help="M: run token-wise blocks over the prompt in M pieces")
    parser.add_argument("--mini-sequence-size", "-C", type=_count, default=None, metavar="C",
                        help="C: run token-wise blocks in pieces of C tokens (give -M or -C, not both)")
    parser.add_argument("--offload", choices=OFFLOAD_MODES, default="none",
                        help="where the KV cache lives: none (GPU), prefill (the paper: offload during prefill, "
                             f"reload for decode), stream, auto (GPU while it fits){offload_note}")
    parser.add_argument("--kv-gpu-budget-gib", type=_budget_gib, default=None, metavar="GIB",
                        help='GiB of KV cache kept on the GPU with --offload auto (default: what fits)')
    parser.add_argument("--no-trim", action="store_true",
                        help="run the full last layer (by default a mom config trims it to the last position)")
    parser.add_argument("--new-tokens", type=_count, default=32, metavar="N", help="greedy tokens after the prompt (default: 32)")


def _output(path: str | None, option: str, example: str = "mom.json") -> Path | None:
    return None if path is None else checks.check_output_path(path, option, example)


def _limit(args) -> int | None:
    """--limit-gib in bytes, refused on CUDA (where the card is the limit) before anything loads."""
    from .load import default_device

    limit = checks.limit_from_gib(args.limit_gib)
    if limit is not None and (checks.check_device(args.device) or default_device()).type == "cuda":
        raise ValueError("--limit-gib caps the CPU tensor tracker; on a GPU the card is the limit (add --device cpu "
                         "to run against a pretend limit)")
    return limit


def _table(runs) -> str:
    from .memory.profile import profile_table

    table = profile_table(runs)
    if any(p.backend == "tracker" for p in runs):
        table += "\n" + CPU_TIMING_NOTE
    return table


def _cmd_demo(args) -> int:
    from .explore.demo import run_demo

    out = _output(args.out, "--out", "mom-report.html")
    result = run_demo(model=args.model, context=args.context, new_tokens=args.new_tokens, path=out,
                      device=args.device, limit_bytes=_limit(args))
    print(result.table)
    print(f"report: {result.path}")
    return 0


def _cmd_profile(args) -> int:
    from .load import load
    from .memory.profile import profile, save_json

    out = _output(args.json, "--json")
    limit = _limit(args)
    configs = ([MomConfig()] if args.baseline else []) + [_config(args)]
    model = load(args.model, device=args.device)
    runs = [profile(model, cfg, args.context, args.new_tokens, limit_bytes=limit, record=False) for cfg in configs]
    print(_table(runs))
    if out is not None:
        save_json(runs, out)
    return 0


def _cmd_predict(args) -> int:
    from .memory.profile import save_json
    from .simulate import predict, resolve_gpu
    from .simulate.explain import predicted, prediction_lines

    card = resolve_gpu(args.gpu)  # an unknown card is an error before anything is built
    out, report = _output(args.json, "--json"), _output(args.report, "--report", "mom-predicted.html")
    if report is not None and importlib.util.find_spec("plotly") is None:
        raise RuntimeError("--report draws with plotly, which is not installed: pip install plotly "
                           "(or the notebooks extra, pip install -e '.[notebooks]')")
    host = int(args.host_gib * GiB) if args.host_gib is not None else None
    configs = ([MomConfig()] if args.baseline else []) + [_config(args)]
    runs = [predict(args.model, cfg, args.context, args.new_tokens, gpu=card, host_bytes=host,
                    gpus=args.gpus if args.gpus > 1 else None) for cfg in configs]
    host_words = f"{args.host_gib:g} GiB of host RAM" if host is not None else "unlimited host RAM"
    print(f"{runs[-1].model_name}, {predicted(card, args.gpus)}, {host_words} (mom.predict: no GPU used)")
    print(_table(runs))
    for run in runs:
        lines = ([f"out of memory ({run.oom_kind}){_where(run.oom_event)}: {run.error}"] if run.oom else [])
        lines += prediction_lines(run)
        print(f"{run.label}: " + "\n  ".join(lines))
    if out is not None:
        save_json(runs, out)
    if report is not None:
        print(f"report: {_predicted_report(runs, report, card, args)}")
    return 0


def _where(event) -> str:
    """' in layer 3's mlp, prefill': where a predicted run runs out (nothing when it is not known)."""
    if event is None:
        return ""
    if event.module == "weights":
        return " placing the weights"
    inside = event.module
    if event.layer is not None:
        inside = f"layer {event.layer}" + (f"'s {event.module}" if event.module != "layer" else "")
    return f" in {inside}, {event.phase}" + (f" step {event.step}" if event.phase == "decode" else "")


def _predicted_report(runs, path: Path, card, args) -> Path:
    """The HTML report of `mom demo`, of predictions: per-layer figures at the real model's size."""
    import torch

    from .explore.live import model_weights_by_layer
    from .explore.report import write_report
    from .simulate.explain import predicted
    from .simulate.fake import fake_model, model_config

    config, name = model_config(args.model)
    weights = model_weights_by_layer(fake_model(config, name, torch.bfloat16).model)  # predict()'s dtype
    note = (f"{predicted(card, args.gpus)} by mom.predict (mom's own code on shape-only tensors, no GPU): "
            f"mom predict --model {args.model} --gpu {args.gpu} --context {args.context}")
    return write_report(runs, path, title=f"{name}: predicted memory", weights_by_layer=weights,
                        device_limit_bytes=card.usable_bytes, note=note)


def _cmd_max_context(args) -> int:
    from .load import default_device, load
    from .memory.profile import find_max_context, save_json

    out = _output(args.json, "--json")
    limit = _limit(args)
    if (checks.check_device(args.device) or default_device()).type != "cuda" and limit is None:
        raise ValueError("on CPU, max-context needs --limit-gib (the pretend device memory, e.g. 0.004): without "
                         "a limit every context up to the model's maximum passes")
    configs = ([MomConfig()] if args.baseline else []) + [_config(args)]
    model = load(args.model, device=args.device)
    results = [find_max_context(model, cfg, new_tokens=args.new_tokens, resolution=args.resolution, low=args.low,
                                high=args.high, limit_bytes=limit, record=False) for cfg in configs]
    print(_table([run for result in results for run in result.tries]))
    for cfg, result in zip(configs, results):
        print(f"{cfg.describe()}: {_maximum_line(result)}")
    if out is not None and len(results) == 1:
        save_json(results[0], out)
    elif out is not None:  # baseline first, then the config asked for
        out.write_text(json.dumps([result.to_dict() for result in results], indent=1) + "\n", encoding="utf-8")
    return 0 if all(result.maximum is not None for result in results) else 1


def _maximum_line(result) -> str:
    if result.maximum is None:
        first = result.tries[0] if result.tries else None
        at = f" (even {first.context} tokens ran out of memory)" if first is not None else ""
        return f"no context fits{at}; raise --limit-gib, lower --low or --resolution, or use more mini-sequences"
    if not result.limit_reached:
        return (f"every try up to the cap passed: maximum context is at least {result.maximum} tokens "
                "(raise --high to look further)")
    return f"maximum context {result.maximum} tokens (resolution {result.resolution})"


def _cmd_presets(args) -> int:
    from .load import kv_bytes_per_token_of, parameter_count, preset_config
    from .presets import PRESETS

    rows = [("preset", "family", "parameters", "layers", "KV/token (bf16)", "max positions", "architecture of")]
    for name, preset in PRESETS.items():
        config = preset_config(preset)
        rows.append((name, preset.model_type, f"{parameter_count(config):,}", str(config.num_hidden_layers),
                     format_bytes(kv_bytes_per_token_of(config)), f"{config.max_position_embeddings:,}", preset.note))
    print(_align(rows))
    return 0


def _align(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i in (0, 1, len(row) - 1) else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _version() -> str:
    from . import __version__

    return f"mom {__version__}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mom", description="Long-context inference within GPU memory, measured.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="{demo,profile,predict,max-context,presets,plan}")
    demo = sub.add_parser("demo", help="baseline vs mom on the embedded default; HTML report + table")
    demo.add_argument("--model", default=None, metavar="NAME",
                      help="a preset, local directory or hub id (default: llama-3.1-8b on a GPU, tiny-llama on CPU)")
    demo.add_argument("--context", type=_count, default=None, metavar="N",
                      help="prompt tokens (default: 131072 on a GPU, 8192 on CPU)")
    demo.add_argument("--new-tokens", type=_count, default=None, metavar="N",
                      help="greedy tokens after the prompt (default: 32 on a GPU, 8 on CPU)")
    demo.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when available)")
    demo.add_argument("--limit-gib", type=_gib, default=None, metavar="GIB", help=LIMIT_HELP)
    demo.add_argument("--out", default="mom-report.html", metavar="PATH",
                      help="the HTML report to write (default: mom-report.html; checked before the run)")
    demo.set_defaults(run=_cmd_demo)
    prof = sub.add_parser("profile", help="one measured run (prefill + greedy decode)")
    _run_args(prof)
    prof.add_argument("--context", type=_count, default=4096, metavar="N", help="prompt tokens (default: 4096)")
    prof.add_argument("--baseline", action="store_true", help="also run plain Hugging Face, side by side")
    prof.set_defaults(run=_cmd_profile)
    pred = sub.add_parser("predict", help="predict one run on a chosen GPU, no GPU needed (mom.predict: mom's own "
                                          "code on shape-only tensors)")
    _config_args(pred, default_model="llama-3.1-8b")
    pred.add_argument("--context", type=_count, default=131072, metavar="N", help="prompt tokens (default: 131072)")
    from .simulate.gpus import GPUS

    pred.add_argument("--gpu", default="H100-80GB", metavar="CARD",
                      help=f"one of {', '.join(GPUS)}, or a size such as custom-24GiB (default: H100-80GB)")
    pred.add_argument("--gpus", type=_count, default=1, metavar="N",
                      help="spread the model over N cards of --gpu (an even split of its layers; default: 1)")
    pred.add_argument("--host-gib", type=_gib, default=None, metavar="GIB",
                      help="host RAM for an offloaded KV cache, in GiB (default: unlimited)")
    pred.add_argument("--baseline", action="store_true", help="also predict plain Hugging Face, side by side")
    pred.add_argument("--json", default=None, metavar="PATH", help="also write the predictions as JSON to this file")
    pred.add_argument("--report", default=None, metavar="PATH",
                      help="also write the HTML report (per-layer figures, as `mom demo` writes) to this file")
    pred.set_defaults(run=_cmd_predict)
    search = sub.add_parser("max-context", help="largest context that runs (OOM-safe search)")
    _run_args(search)
    search.add_argument("--resolution", type=_count, default=8192, metavar="N",
                        help="step between contexts tried; the answer is exact to one step (default: 8192)")
    search.add_argument("--low", type=_count, default=None, metavar="N", help="first context tried (default: one step)")
    search.add_argument("--high", type=_count, default=None, metavar="N",
                        help="largest context tried (default: the model's max_position_embeddings)")
    search.add_argument("--baseline", action="store_true",
                        help="also search plain Hugging Face (a second search), and report both maxima")
    search.set_defaults(run=_cmd_max_context)
    presets = sub.add_parser("presets", help="list the presets: parameters, layers, KV bytes per token, max positions")
    presets.set_defaults(run=_cmd_presets)
    from .simulate.cli import add_plan_command

    add_plan_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (MomConfigError, ValueError, TypeError, RuntimeError, MemoryError, ConnectionError) as error:
        print(f"mom {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
