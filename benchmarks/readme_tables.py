"""Write the README's results section from the results files (no hand-copied numbers).

    python benchmarks/readme_tables.py            # rewrites README.md between the markers

Only results that name a known commit (a 40-hex provenance hash) are used; each table says the
card, the commit and the file it came from. Files under results/history/ are never read.
A file's kind is its `kind` field (the scripts of issue 12: paper_tables, max_context, families,
peers; rendered by tables.py, which notebook 04 uses too), else a name in the file's name
(the older decode_repeats and predict_accuracy files). Tables 1-4 come with the comparison
against the paper's numbers (benchmarks/anchors/mom_paper.json).
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BEGIN, END = "<!-- results:begin (benchmarks/readme_tables.py) -->", "<!-- results:end -->"
HASH = re.compile(r"^[0-9a-f]{40}$")


def shown(path: Path) -> Path:
    """A results file as the README names it: relative to the repository when inside it."""
    try:
        return path.relative_to(ROOT)
    except ValueError:
        return Path(path.name)


def known_commit(report: dict) -> str | None:
    commit = ((report.get("provenance") or {}).get("commit") or (report.get("environment") or {}).get("commit")
              or report.get("commit"))
    return commit if commit and HASH.match(commit) else None


def decode_table(path: Path, report: dict) -> list[str]:
    from decode_repeats import repeated_runs, spread

    groups = repeated_runs(report["runs"])
    prov = report["provenance"]
    lines = [f"TTFT and decode through `model.generate()` with a streamer clock, `{report['model']}` bf16, "
             f"{report['args']['new_tokens']} greedy tokens, variants interleaved over {report['args']['rounds']} "
             f"rounds in one process: median [min-max]. {prov['device']}, host {prov['host_ram_bytes'] / 2**30:.0f} GiB, "
             f"torch {prov['torch']}, transformers {prov['transformers']}, commit `{prov['commit'][:12]}`"
             f"{' (tree had uncommitted changes)' if prov.get('dirty') else ''}; `{shown(path)}`.", "",
             "| context | variant | n | TTFT s | decode s/token | peak GiB (prefill) |", "|---|---|---|---|---|---|"]
    for (context, variant), rs in groups.items():
        lines.append(f"| {context // 1024}k | `{variant}` | {len(rs)} | {spread(rs, 'ttft_s', 2)} | "
                     f"{spread(rs, 'decode_s_per_token', 4)} | "
                     f"{max(r['peak_gib'] for r in rs):.2f} ({max(r['prefill_peak_gib'] for r in rs):.2f}) |")
    return lines


def decode_speed_table(path: Path, report: dict) -> list[str]:
    """Issue 15: decode per variant against the HBM bound measured in the same process."""
    prov, bandwidth = report["provenance"], report["hbm"]["copy_gb_per_s"] * 1e9
    lines = [f"Decode through `model.generate()` with a streamer clock against the HBM bound (bytes one step "
             f"reads / device-copy bandwidth {bandwidth / 1e9:.0f} GB/s, measured in the same process), "
             f"`{report['model']}` bf16, {report['args']['new_tokens']} greedy tokens, median of each run's median "
             f"step over the rounds [min-max]. {prov['device']}, host {prov['host_ram_bytes'] / 2**30:.0f} GiB, "
             f"torch {prov['torch']}, transformers {prov['transformers']}, commit `{prov['commit'][:12]}`; "
             f"`{shown(path)}`.", "",
             "| context | variant | n | decode ms/token | x HBM bound | speed-up over `hf` (same round) | TTFT s | decode path |",
             "|---|---|---|---|---|---|---|---|"]
    for context, nbytes in report.get("bytes_per_step", {}).items():
        bound = nbytes["total"] / bandwidth
        groups: dict[str, list] = {}
        for run in report["runs"]:
            if str(run["context"]) == context and isinstance(run.get("round"), int) and run.get("decode_median_s_per_token"):
                groups.setdefault(run["variant"], []).append(run)
        medians = {v: statistics.median(r["decode_median_s_per_token"] for r in rs) for v, rs in groups.items()}
        lines.append(f"| {int(context) // 1024}k | HBM bound | | {bound * 1e3:.2f} | 1.00 | | | |")
        for replay in report.get("graph_replay", []):
            if str(replay["context"]) == context and "replay_ms" in replay:
                label = "" if replay.get("kernels") in (None, "triton") else " (torch kernels)"
                lines.append(f"| {int(context) // 1024}k | `graph.replay()` alone{label} | {replay['repeats']} | "
                             f"{replay['replay_ms']:.2f} | {replay['replay_ms'] / 1e3 / bound:.2f} | | | |")
        for variant, runs in groups.items():
            steps = [r["decode_median_s_per_token"] * 1e3 for r in runs]
            speedup = _paired_speedup(groups.get("hf", []), runs)
            lines.append(f"| {int(context) // 1024}k | `{variant}` | {len(runs)} | {medians[variant] * 1e3:.2f} "
                         f"[{min(steps):.2f}-{max(steps):.2f}] | {medians[variant] / bound:.2f} | {speedup} | "
                         f"{statistics.median(r['ttft_s'] for r in runs):.2f} | {_decode_path(runs[-1])} |")
    compiles = [r for r in report["runs"] if r.get("round") == "compile" and r.get("ttft_s")]
    captures = [r["decode"]["capture_seconds"] for r in report["runs"] if (r.get("decode") or {}).get("captures")]
    if compiles or captures:
        lines += ["", "First-call costs, apart from the table: " + "; ".join(
            [f"`hf-static-compile` first call at {r['context'] // 1024}k (its compile): {_first_call(r)}" for r in compiles]
            + ([f"mom graph capture {min(captures):.2f}-{max(captures):.2f} s per run"] if captures else [])) + "."]
    return lines


def _first_call(run: dict) -> str:
    """A compiling first call: its whole generate() (the compile runs inside the decode steps), then TTFT."""
    total = f"{run['total_s']:.1f} s in all, " if run.get("total_s") else ""
    return f"{total}TTFT {run['ttft_s']:.1f} s"


def _paired_speedup(hf_runs: list[dict], runs: list[dict]) -> str:
    """Median over rounds of hf's step / this variant's step in the same round: a variant run in
    round 0 only meets hf's round 0 (the first, often slowest, round), not hf's median."""
    by_round = {r["round"]: r["decode_median_s_per_token"] for r in hf_runs}
    ratios = [by_round[r["round"]] / r["decode_median_s_per_token"] for r in runs if r["round"] in by_round]
    return f"{statistics.median(ratios):.2f}x" if ratios else ""


def _decode_path(run: dict) -> str:
    stats = run.get("decode")
    if not stats:
        return "eager"
    return f"graph {stats['graph_steps']}, eager {stats['eager_steps']}"


def predict_table(path: Path, report: dict) -> list[str]:
    env = report["environment"]
    lines = [f"`mom.predict` (run on fake tensors, on a CPU) against the measured run (`mom.profile`, "
             f"`generate()` with {report['args']['new_tokens']} greedy tokens), `{report['model']}` bf16. "
             f"{env['card']} ({env['gpu_total_gib']:.0f} GiB), torch {env['torch']}, transformers "
             f"{env['transformers']}, commit `{report['commit'][:12]}`; `{shown(path)}`. "
             "Decode: mean step of the measured run, and the path it took.", "",
             "| context | variant | peak GiB measured | predicted | error | TTFT s measured | predicted | error "
             "| decode ms/token measured | predicted | error | path |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in report["runs"]:
        measured, predicted, errors = run.get("measured"), run.get("predicted"), run.get("errors_pct")
        if not (measured and predicted and errors) or measured.get("oom") or measured.get("error"):
            continue
        lines.append(f"| {run['context'] // 1024}k | `{run['variant']}` | {measured['peak_gib']:.2f} | "
                     f"{predicted['peak_gib']:.2f} | {errors['peak_gib']:+.2f}% | {measured['ttft_s']:.2f} | "
                     f"{predicted['ttft_s']:.2f} | {errors['ttft_s']:+.1f}% | {_ms(measured.get('decode_s_per_token'))} | "
                     f"{_ms(predicted.get('decode_s_per_token'))} | {_pct(errors.get('decode_s_per_token'))} | "
                     f"{(measured.get('decode_path') or 'eager').split(':')[0]} |")
    ooms = [r for r in report["runs"] if (r.get("measured") or {}).get("oom")]
    for run in ooms:
        agrees = "predicted too" if run["predicted"].get("oom") else "NOT predicted"
        lines.append(f"| {run['context'] // 1024}k | `{run['variant']}` | out of memory | {agrees} | | | | | | | | |")
    return lines + _decode_check_lines(report.get("decode") or [])


def _decode_check_lines(records: list[dict]) -> list[str]:
    """The decode check (streamer clock, median of the rounds' medians) against the predicted step."""
    rows = [r for r in records if r.get("measured_median_s")]
    if not rows:
        return []
    lines = ["", "Decode on the streamer clock (median over rounds of each round's median step) against the "
             "predicted step and its range:", "",
             "| context | variant | measured ms/token | predicted | error | in range | path predicted |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        low, high = r["predicted_range_s"]
        lines.append(f"| {r['context'] // 1024}k | `{r['variant']}` | {_ms(r['measured_median_s'])} | "
                     f"{_ms(r['predicted_s'])} [{_ms(low)}-{_ms(high)}] | {_pct(r['error_pct'])} | "
                     f"{'yes' if r['in_range'] else 'no'} | {r['predicted_path'].split(' (')[0]} |")
    return lines


def _ms(seconds: float | None) -> str:
    return f"{seconds * 1e3:.1f}" if seconds else "-"


def _pct(value: float | None) -> str:
    return f"{value:+.1f}%" if value is not None else "-"


def placement_exact_table(path: Path, report: dict) -> list[str]:
    import placement_exact

    return placement_exact.markdown(report) + ["", f"File: `{shown(path)}`."]


def paper_tables_table(path: Path, report: dict) -> list[str]:
    import tables

    name = shown(path)
    return tables.paper_markdown(report, name) + [""] + tables.comparison_markdown(report, tables.load_anchors())


def million_table(path: Path, report: dict) -> list[str]:
    import million

    return million.markdown(report, shown(path))


def decode_split_table(path: Path, report: dict) -> list[str]:
    import decode_split

    return decode_split.markdown(report, shown(path))


def predict_speed_table(path: Path, report: dict) -> list[str]:
    import predict_speed

    return predict_speed.markdown(report, shown(path))


def _rendered(function_name: str):
    def render(path: Path, report: dict) -> list[str]:
        import tables

        return getattr(tables, function_name)(report, shown(path))
    return render


TABLES = {"decode_repeats": decode_table, "decode_speed": decode_speed_table, "predict_accuracy": predict_table,
          "placement_exact": placement_exact_table, "paper_tables": paper_tables_table,
          "million": million_table, "decode_split": decode_split_table, "predict_speed": predict_speed_table,
          "max_context": _rendered("max_context_markdown"), "families": _rendered("families_markdown"),
          "peers": _rendered("peers_markdown")}


def kind_of(path: Path, report: dict) -> str | None:
    """The file's `kind` field, else a table name in its file name."""
    if report.get("kind") in TABLES:
        return report["kind"]
    return next((k for k in TABLES if k in path.name), None)


def results(folder: Path = RESULTS) -> list[tuple[Path, str, dict]]:
    """(path, kind, report) of every results file in `folder` that names a full commit (notebook 04 too)."""
    found = []
    for path in sorted(folder.glob("*.json")):
        report = json.loads(path.read_text())
        kind = kind_of(path, report)
        if kind is not None and known_commit(report) is not None:
            found.append((path, kind, report))
    return found


# The section's order: what the README is read for first. Within a topic, the newest files first.
TOPICS = [
    ("Tables 1-4 of the paper (issue 12)", "paper_tables"),
    ("Maximum context of every variant (issue 12)", "max_context"),
    ("Two more families (issue 12)", "families"),
    ("What a user would pick instead (issue 12)", "peers"),
    ("One million tokens on one H100 (issue 14)", "million"),
    ("Decode at the speed of memory (issue 15)", "decode_speed"),
    ("mom.predict against measured runs (issue 13)", "predict_accuracy"),
    ("mom.predict on a CPU (issue 13)", "predict_speed"),
    ("Exactness with the K/V split between GPU and host (issue 14)", "placement_exact"),
    ("The eager decode step, split (issue 13)", "decode_split"),
    ("The first decode measurements", "decode_repeats"),
]
assert sorted(kind for _, kind in TOPICS) == sorted(TABLES), "every kind of results file has a topic"
# The file a topic opens with where several share a date: the measurement of the code as it is now
# (a results file records its commit but not when it ran, and a CI checkout may be shallow)
HEADLINE = {"decode_speed": "2026-12-07_h100_decode_speed_fused.json",
            "paper_tables": "2026-12-07_h100_paper144k_all3.json"}
PREDICTED_NOTE = ("The predicted columns are what `mom.predict` said at the run's commit; the current code's "
                  "predictions of these runs are checked by tests/simulate.")


def newest_first(found: list[tuple[Path, str, dict]]) -> list[tuple[Path, str, dict]]:
    """By the date that starts each file's name, newest first; within a date, the file that covers
    the most (variant, context) pairs first, then by name. (Not by commit: a CI checkout may be
    shallow, and the README must come out the same there.)"""
    by_name = sorted(found, key=lambda item: item[0].name)
    by_coverage = sorted(by_name, key=lambda item: -_coverage(item[2]))
    return sorted(by_coverage, key=lambda item: item[0].name[:10], reverse=True)


def _coverage(report: dict) -> int:
    runs = report.get("runs")
    if not isinstance(runs, list):
        return 0
    return len({(r.get("variant"), r.get("context")) for r in runs if isinstance(r, dict)})


def _passing_beyond(found: list[tuple[Path, str, dict]]) -> list[str]:
    """A passing run longer than any bracketed maximum (issue 14's one prompt), said beside the table."""
    from max_context_chart import passing_runs

    passing = passing_runs([report for _, kind, report in found if kind == "million"])
    return [f"Beside the searches: `{variant}` passed {tokens:,} tokens with decode on {card} (issue 14's run, below): "
            "a pass, not a bracketed maximum." for variant, (tokens, card) in passing.items()]


def section(folder: Path = RESULTS) -> str:
    """The README's results section from every results file in `folder` that names a full commit,
    under a heading per topic (TOPICS), newest files first."""
    found = results(folder)
    parts = []
    for title, kind in TOPICS:
        mine = newest_first([item for item in found if item[1] == kind])
        mine.sort(key=lambda item: item[0].name != HEADLINE.get(kind))  # stable: the rest keep their order
        if not mine:
            continue
        blocks = [f"### {title}"]
        if kind == "max_context":
            import tables

            oldest_first = [(str(shown(path)), report) for path, _, report in reversed(mine)]
            blocks.append("\n".join(tables.max_context_summary_markdown(oldest_first)))
            blocks += _passing_beyond(found)
        if kind == "predict_accuracy":
            blocks.append(PREDICTED_NOTE)
        blocks += ["\n".join(line.rstrip() for line in TABLES[kind](path, report)) for path, _, report in mine]
        parts.append("\n\n".join(blocks))
    return "\n\n".join(parts) if parts else "No results with a known commit yet."


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        sys.exit(f"README.md has no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{section()}\n{END}{tail}")


if __name__ == "__main__":
    main()
