"""The results file of a long GPU run: written as the run goes, resumable, pollable, detachable.

Why: one command on the GPU machine may run 10 minutes, and several measurements of issue 12
run longer (a 851,968-token prefill alone is about 7 minutes). So every script here
- rewrites its JSON atomically after every run (write a temporary file, then rename), so a run
  cut off at any moment leaves every figure measured so far, and a half-written file never;
- resumes from that JSON: the runs it holds are not run again, as long as the file names the
  same commit and model (mixing code versions in one file would make its provenance a lie);
- can `--detach`: start itself again in a new process session (`setsid`, stdin closed, output
  to `<out>.log`, pid in `<out>.pid`) and return at once, so the run survives the command;
- can `--poll`: print the progress of a detached run (runs done of planned, the last record,
  whether the process still lives, the log's tail), optionally `--wait` up to N seconds for it
  to end, and copy the JSON and log to `--copy-to` (default `$OUT`: the folder a device
  command sends back).

Every report carries `provenance` (mom/memory/provenance.py: full commit hash, dirty flag,
versions, device, host RAM), the script's `args`, `planned` (run count) and `runs`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mom.memory.provenance import provenance

CONTROL_FLAGS = ("--detach", "--poll", "--estimate")


def add_arguments(parser: argparse.ArgumentParser, model: str = "llama-3.1-8b") -> None:
    """The options every long-run script shares."""
    parser.add_argument("--model", default=model, help="a preset (mom.PRESETS); tiny-* runs on a CPU")
    parser.add_argument("--device", default=None, help="default: cuda when available")
    parser.add_argument("--out", required=True, help="results JSON (rewritten after every run; resumed if present)")
    parser.add_argument("--fresh", action="store_true", help="start a new file even if --out exists")
    parser.add_argument("--detach", action="store_true", help="run in a new process session and return at once")
    parser.add_argument("--poll", action="store_true", help="print the progress of the run writing --out")
    parser.add_argument("--wait", type=float, default=0, help="with --poll: wait up to this many seconds for the end")
    parser.add_argument("--copy-to", default=os.environ.get("OUT"), help="with --poll: copy JSON and log here")
    parser.add_argument("--estimate", action="store_true", help="print the estimated GPU wall time and exit")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds of rest after each run (memory freed)")


def control(args, argv: list[str], estimate_lines) -> bool:
    """Handle --estimate / --detach / --poll; True when the caller should stop here."""
    if args.poll:
        poll(Path(args.out), args.wait, args.copy_to)
        return True
    for line in estimate_lines():
        print(line, flush=True)
    if args.estimate:
        return True
    if args.detach:
        detach(Path(args.out), [a for a in argv if a not in CONTROL_FLAGS])
        return True
    return False


def open_report(args, kind: str, device: str) -> dict:
    """The report at args.out to resume (same commit and model), or a new one."""
    prov = provenance(device)
    path = Path(args.out)
    arguments = {k: v for k, v in vars(args).items() if k not in ("detach", "poll", "wait", "copy_to", "estimate")}
    if path.exists() and not args.fresh:
        report = json.loads(path.read_text())
        old = report.get("provenance", {}).get("commit")
        if old != prov["commit"] or report.get("model") != args.model or report.get("kind") != kind:
            sys.exit(f"{path} holds {report.get('kind')} of {report.get('model')} at commit {old}; this run is "
                     f"{kind} of {args.model} at {prov['commit']}: pass --fresh or another --out")
        report.setdefault("resumed", []).append(dict(at=_now(), args=report["args"]))  # the earlier arguments
        report["args"] = arguments
        return report
    return dict(kind=kind, model=args.model, provenance=prov, started=_now(), args=arguments, planned=0, runs=[])


def save(path: str | Path, report: dict) -> None:
    """Atomic rewrite: a reader (or a cut-off) never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    report["updated"] = _now()
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(report, indent=1))
    os.replace(temporary, path)


def detach(out: Path, argv: list[str]) -> int:
    """Start this script again in a new session, output to <out>.log; returns the child's pid."""
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.with_name(out.name + ".log")
    with open(log, "ab") as handle, open(os.devnull, "rb") as devnull:
        child = subprocess.Popen([sys.executable, *argv], stdin=devnull, stdout=handle, stderr=subprocess.STDOUT,
                                 start_new_session=True, cwd=os.getcwd())
    out.with_name(out.name + ".pid").write_text(str(child.pid))
    print(f"detached: pid {child.pid}, log {log}; poll with the same command and --poll [--wait 540]", flush=True)
    return child.pid


def poll(out: Path, wait_s: float = 0, copy_to: str | None = None) -> bool:
    """Print progress of the run writing `out`; wait up to wait_s for it to end. True if it ended."""
    deadline = time.monotonic() + wait_s
    while alive(out) and time.monotonic() < deadline:
        time.sleep(min(10.0, max(deadline - time.monotonic(), 0.1)))
    running = alive(out)
    for line in progress_lines(out, running):
        print(line, flush=True)
    if copy_to:
        for path in (out, out.with_name(out.name + ".log")):
            if path.exists():
                Path(copy_to).mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, Path(copy_to) / path.name)
    return not running


def alive(out: Path) -> bool:
    """Whether the detached process recorded in <out>.pid still runs."""
    pid_file = out.with_name(out.name + ".pid")
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")  # a zombie has ended


def progress_lines(out: Path, running: bool) -> list[str]:
    """A few lines that say how far the run got."""
    lines = [f"{out}: {'running' if running else 'not running'}"]
    if out.exists():
        report = json.loads(out.read_text())
        runs = report.get("runs", [])
        lines.append(f"{len(runs)} of {report.get('planned') or '?'} runs recorded, updated {report.get('updated')}, "
                     f"finished: {report.get('finished', False)}")
        lines += [brief(r) for r in runs[-3:]]
    log = out.with_name(out.name + ".log")
    if log.exists():
        lines += ["log tail:", *log.read_text(errors="replace").splitlines()[-8:]]
    return lines


def brief(record: dict) -> str:
    """One line per run for logs and polls."""
    keep = ("model", "variant", "context", "repeat", "ttft_s", "decode_tokens_per_s", "peak_gib", "passed",
            "identical", "oom", "wall", "error")
    return json.dumps({k: _round(record[k]) for k in keep if record.get(k) is not None})


def _round(value):
    return round(value, 4) if isinstance(value, float) else (value[:120] if isinstance(value, str) else value)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def start(argv: list[str] | None, parse, script: str, kind: str, estimate_lines):
    """The opening every long-run script shares: parse `argv` (None: the command line), handle
    --detach/--poll/--estimate (None when that was all), else load the model and open (or
    resume) the report: (args, model, report). `estimate_lines(args)` gives the estimate."""
    import mom

    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if control(args, [script, *argv], lambda: estimate_lines(args)):
        return None
    begun = time.perf_counter()
    model = mom.load(args.model, device=args.device)
    report = open_report(args, kind, str(model.device))
    report["load_s"] = time.perf_counter() - begun
    return args, model, report


def finish(args, report: dict, markdown) -> dict:
    """Mark the report finished, save it, print its table (`markdown(report)` lines); returns it."""
    report["finished"] = True
    save(args.out, report)
    print("\n".join(markdown(report)))
    return report

