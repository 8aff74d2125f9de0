"""Results files -> table rows (plain dicts) -> markdown: one renderer for the scripts' console
summary, the README (readme_tables.py) and notebook 04, so the three cannot disagree.

Rows are plain data (the notebook makes DataFrames of them); cells over repeated runs are
'median [min-max]' of the runs that passed, "OOM" when none passed (GPU or host wall), "error"
when a run failed otherwise. The paper's numbers come only from benchmarks/anchors/mom_paper.json.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

ANCHORS = Path(__file__).resolve().parent / "anchors" / "mom_paper.json"
# mom's variant that measures what a method of the paper measures (docs/benchmarks.md)
PAPER_METHOD = {"standard": "standard", "hf-offload": "offload", "hf-chunked": "chunked_prefill_8192",
                "mom-paper": "mom"}
PAPER_MAX = {"standard": "standard", "hf-offload": "offload", "hf-chunked": "chunked_prefill", "mom-paper": "mom"}
METRICS = {  # row key: (run key, digits, paper table)
    "peak_gib": ("peak_gib", 2, None),
    "total_s": ("total_s", 2, "table2_total_latency_s"),
    "ttft_s": ("ttft_s", 2, "table3_ttft_s"),
    "decode_tokens_per_s": ("decode_tokens_per_s", 2, "table4_decode_tokens_per_s"),
}


def load_anchors() -> dict:
    return json.loads(ANCHORS.read_text())


def spread(values: list[float], digits: int) -> str:
    """'median [min-max]' (one value: just it)."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def cell(runs: list[dict], key: str, digits: int) -> str:
    ok = [r[key] for r in runs if not r.get("oom") and not r.get("error") and r.get(key) is not None]
    if ok:
        return spread(ok, digits)
    if any(r.get("oom") for r in runs):
        return "OOM"
    return "error" if any(r.get("error") for r in runs) else "-"


def median(runs: list[dict], key: str) -> float | None:
    ok = [r[key] for r in runs if not r.get("oom") and not r.get("error") and r.get(key) is not None]
    return statistics.median(ok) if ok else None


def groups(runs: list[dict], keys=("context", "variant")) -> dict[tuple, list[dict]]:
    """Runs by key, in first-seen order of variants within sorted contexts."""
    out: dict[tuple, list[dict]] = {}
    for r in runs:
        out.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    return dict(sorted(out.items(), key=lambda item: (item[0][0], _first_index(runs, item[0], keys))))


def _first_index(runs, key, keys) -> int:
    return next(i for i, r in enumerate(runs) if tuple(r.get(k) for k in keys) == key)


def header(report: dict, path: Path | None = None, what: str = "") -> str:
    """The card, host, versions, commit and file a table came from."""
    p = report.get("provenance", {})
    host = p.get("host_ram_bytes")
    where = f"; `{path}`" if path is not None else ""
    return (f"{what}`{report.get('model')}`. {p.get('device')}, host {host / 2**30:.0f} GiB, torch {p.get('torch')}, "
            f"transformers {p.get('transformers')}, commit `{str(p.get('commit'))[:12]}`"
            f"{' (tree had uncommitted changes)' if p.get('dirty') else ''}{where}."
            if host else f"{what}`{report.get('model')}`, commit `{str(p.get('commit'))[:12]}`{where}.")


def markdown(columns: list[str], rows: list[dict]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]


def context_label(context: int) -> str:
    return f"{context // 1000}k" if context % 1000 == 0 else f"{context // 1024}k" if context % 1024 == 0 else str(context)


# Tables 1-4 ------------------------------------------------------------------------------------

def paper_rows(report: dict) -> list[dict]:
    """One row per (context, variant): n, peak, peak / standard, total, TTFT, decode tokens/s."""
    by_cell = groups(report["runs"])
    rows = []
    for (context, variant), runs in by_cell.items():
        standard = median(by_cell.get((context, "standard"), []), "peak_gib")
        peak = median(runs, "peak_gib")
        row = dict(context=context_label(context), variant=f"`{variant}`",
                   n=sum(1 for r in runs if not r.get("oom") and not r.get("error")))
        row.update({name: cell(runs, key, digits) for name, (key, digits, _) in METRICS.items()})
        row["peak_vs_standard"] = f"{100 * peak / standard:.1f}%" if peak and standard else "-"
        if variant in TRANSFORMERS_DECODE and any(warm_lengths(report["runs"], r) for r in runs):
            row["decode_tokens_per_s"] += " †"
        rows.append(row)
    return rows


TRANSFORMERS_DECODE = {"standard", "hf", "hf-chunked", "hf-offload", "hf-static"}  # sdpa decode, cuDNN first
WARM_NOTE = ("† decoded K/V lengths that an earlier run of the same process had decoded (the same context): "
             "transformers' sdpa decode reused cuDNN's plans for those lengths (docs/benchmarks.md, \"Cold and "
             "warm lengths\"), so the figure is faster than a first generate() at that length. mom's decode "
             "does not use cuDNN's sdpa.")


def warm_lengths(runs: list[dict], run: dict) -> bool:
    """Whether an earlier run of the process decoded this run's K/V lengths: the run's own record
    (`warm_lengths`, paper_tables.py since the eighth session), else, for files written before it
    (one process each), an earlier run in the file at the same context."""
    if "warm_lengths" in run:
        return bool(run["warm_lengths"])
    if any("warm_lengths" in r for r in runs):
        return False
    index = next(i for i, r in enumerate(runs) if r is run)
    return any(r.get("context") == run.get("context") and not r.get("oom") for r in runs[:index])


PAPER_COLUMNS = ["context", "variant", "n", "peak_gib", "peak_vs_standard", "total_s", "ttft_s", "decode_tokens_per_s"]
PAPER_TITLES = ["context", "variant", "n", "peak GiB", "peak / standard", "total s", "TTFT s", "decode tokens/s"]


def paper_markdown(report: dict, path: Path | None = None) -> list[str]:
    args = report.get("args", {})
    what = (f"Tables 1-4 of the MOM paper measured here: {args.get('new_tokens')} greedy tokens through `generate()` "
            f"(streamer clock), median [min-max] of {args.get('repeats')} round-robin repeats, ")
    rows = [{t: row[c] for t, c in zip(PAPER_TITLES, PAPER_COLUMNS)} for row in paper_rows(report)]
    note = ["", WARM_NOTE] if any("†" in row["decode tokens/s"] for row in rows) else []
    return [header(report, path, what), "", *markdown(PAPER_TITLES, rows), *note, *targets(report)]


def targets(report: dict) -> list[str]:
    """Issue 12's targets at the longest context where both `hf` and `mom` passed (medians)."""
    by_cell = groups(report["runs"])
    both = [c for c, v in by_cell if v == "hf" and median(by_cell.get((c, "mom"), []), "ttft_s")
            and median(by_cell[(c, "hf")], "ttft_s")]
    if not both:
        return []
    context = max(both)
    hf, ours = by_cell[(context, "hf")], by_cell[(context, "mom")]
    ttft = median(ours, "ttft_s") / median(hf, "ttft_s")
    decode = median(ours, "decode_tokens_per_s") / median(hf, "decode_tokens_per_s")
    return ["", f"At {context_label(context)}, medians: TTFT `mom` / `hf` = {ttft:.3f} (target <= 1.03: "
                f"{'met' if ttft <= 1.03 else 'MISSED'}); decode tokens/s `mom` / `hf` = {decode:.3f} "
                f"(target >= 0.95: {'met' if decode >= 0.95 else 'MISSED'})."]


def comparison_rows(report: dict, anchors: dict) -> list[dict]:
    """Measured medians next to the paper's figure for the same method and context (Tables 2-4)."""
    contexts = anchors["contexts"]
    rows = []
    for (context, variant), runs in groups(report["runs"]).items():
        method = PAPER_METHOD.get(variant)
        if method is None or context not in contexts:
            continue
        row = dict(context=context_label(context), variant=f"`{variant}`", paper_method=method)
        for name, (key, digits, table) in METRICS.items():
            if table is None:
                continue
            value, paper = median(runs, key), anchors[table].get(method, [None] * len(contexts))[contexts.index(context)]
            row[name] = f"{value:.{digits}f} / {paper:.{digits}f}" if value is not None and paper is not None else "-"
        rows.append(row)
    return rows


def comparison_markdown(report: dict, anchors: dict) -> list[str]:
    titles = ["context", "variant", "paper method", "total s", "TTFT s", "decode tokens/s"]
    columns = ["context", "variant", "paper_method", "total_s", "ttft_s", "decode_tokens_per_s"]
    rows = [{t: row[c] for t, c in zip(titles, columns)} for row in comparison_rows(report, anchors)]
    intro = (f"Measured here (median, {report.get('provenance', {}).get('device')}) / the paper "
             f"({anchors['hardware']}, {anchors['model']}), per method the paper names; Table 1 of the paper "
             "divides peaks with and without mini-sequences, so compare its ratios only in kind: "
             f"{_table1(anchors)}.")
    return [intro, "", *markdown(titles, rows)] if rows else []


def _table1(anchors: dict) -> str:
    t1 = anchors["table1_peak_ratio_percent"]
    contexts = [context_label(c) for c in anchors["contexts"]]
    return "; ".join(f"{name} " + ", ".join(f"{c} {v:.1f}%" for c, v in zip(contexts, values))
                     for name, values in t1.items())


# Maximum context ---------------------------------------------------------------------------------

def max_context_rows(report: dict, anchors: dict | None = None) -> list[dict]:
    """Per searched variant: the maximum, the failing try above it and its wall, the paper's maximum."""
    paper = (anchors or load_anchors())["max_context_tokens"]
    rows = []
    for variant, found in report.get("searches", {}).items():
        above = found.get("failing_above")
        rows.append(dict(variant=f"`{variant}`", maximum=_tokens(found.get("maximum")),
                         failing=f"{_tokens(above)} ({found.get('wall') or 'error'})" if above else
                         f"search stopped at {_tokens(found.get('stopped_at'))}: {found['error']}"
                         if found.get("error") else "none: every try up to the cap passed",
                         step=_tokens(found.get("resolution")), tries=found.get("tries"),
                         predicted=_search_start(found),
                         paper=_tokens(paper.get(PAPER_MAX.get(variant, ""))),
                         measured=found.get("maximum"), variant_name=variant))
    return rows + [_cut_off_row(report, variant, paper) for variant in _cut_off_variants(report)]


def _search_start(found: dict) -> str:
    """mom.predict's maximum where the search started there; a start given on the command line
    (--start-at: a variant mom.predict does not cover) is marked as such."""
    if found.get("predicted") is not None:
        return _tokens(found["predicted"])
    started = found.get("started_at")
    return "-" if started is None else f"{_tokens(started)} (given)"


def _cut_off_variants(report: dict) -> list[str]:
    """Variants with tries in the file but no finished search (a run cut off by the lease); none
    where the file ran given contexts (`--contexts`) instead of searching."""
    if (report.get("args") or {}).get("contexts"):
        return []
    done = set(report.get("searches", {}))
    return list(dict.fromkeys(r["variant"] for r in report.get("runs", []) if r["variant"] not in done))


def _cut_off_row(report: dict, variant: str, paper: dict) -> dict:
    """What a cut-off search established: the largest passing try (a lower bound, not a maximum)
    and the smallest failing try above it; no measured maximum for the chart."""
    runs = [r for r in report["runs"] if r["variant"] == variant]
    passed = max((r["context"] for r in runs if not r.get("oom") and not r.get("error")), default=None)
    failed = [r for r in runs if (r.get("oom") or r.get("error")) and (passed is None or r["context"] > passed)]
    above = min(failed, key=lambda r: r["context"], default=None)
    return dict(variant=f"`{variant}`", maximum=f">= {_tokens(passed)} (search cut off)",
                failing="-" if above is None else f"{_tokens(above['context'])} ({above.get('wall') or 'error'})",
                step="-", tries=len(runs), predicted="-", paper=_tokens(paper.get(PAPER_MAX.get(variant, ""))),
                measured=None, variant_name=variant)


def max_context_markdown(report: dict, path: Path | None = None) -> list[str]:
    args = report.get("args", {})
    what = (f"Maximum context per variant: prefill + {args.get('new_tokens')} greedy tokens through `generate()`, "
            "each backed by a passing run at the maximum and a failing run one step above it, ")
    titles = ["variant", "maximum (tokens)", "fails at (wall)", "step", "tries", "mom.predict (search start)",
              "paper (A100 80GB)"]
    columns = ["variant", "maximum", "failing", "step", "tries", "predicted", "paper"]
    rows = [{t: row[c] for t, c in zip(titles, columns)} for row in max_context_rows(report)]
    return [header(report, path, what), "", *markdown(titles, rows)]


MAX_CONTEXT_VARIANTS = ("standard", "hf", "hf-offload", "hf-chunked", "mom-paper", "mom")  # issue 12's order


def max_context_summary_rows(found: list[tuple[str, dict]], anchors: dict | None = None) -> list[dict]:
    """Every variant's maximum in one table, from several max_context files (`found`: (name, report),
    oldest first): per variant the newest finished search, else the newest cut-off one, each row
    naming the commit and file it came from; a variant no file searched reads "not measured yet"."""
    anchors = anchors or load_anchors()
    chosen: dict[str, tuple[dict, str, dict]] = {}
    for name, report in found:
        for row in max_context_rows(report, anchors):
            variant, finished = row["variant_name"], row["measured"] is not None
            if finished or variant not in chosen or chosen[variant][0]["measured"] is None:
                chosen[variant] = (row, name, report)
    rows = []
    for variant in [*MAX_CONTEXT_VARIANTS, *sorted(set(chosen) - set(MAX_CONTEXT_VARIANTS))]:
        if variant not in chosen:
            rows.append(dict(variant=f"`{variant}`", maximum="not measured yet", failing="-", step="-", tries="-",
                             predicted="-", paper=_tokens(anchors["max_context_tokens"].get(PAPER_MAX.get(variant, ""))),
                             run="-"))
            continue
        row, name, report = chosen[variant]
        commit = str((report.get("provenance") or {}).get("commit"))[:12]
        rows.append({**row, "run": f"`{commit}`, `{name}`"})
    return rows


def max_context_summary_markdown(found: list[tuple[str, dict]]) -> list[str]:
    """`max_context_summary_rows` as markdown, with what every row stands on."""
    if not found:
        return []
    cards = sorted({str((r.get("provenance") or {}).get("device")) for _, r in found})
    new_tokens = (found[-1][1].get("args") or {}).get("new_tokens")
    titles = ["variant", "maximum (tokens)", "fails at (wall)", "step", "mom.predict (search start)",
              "paper (A100 80GB)", "commit, file"]
    columns = ["variant", "maximum", "failing", "step", "predicted", "paper", "run"]
    rows = [{t: row[c] for t, c in zip(titles, columns)} for row in max_context_summary_rows(found)]
    return [f"Every variant's maximum context, `{found[-1][1].get('model')}` on {', '.join(cards)}: prefill + {new_tokens} "
            "greedy tokens through `generate()`, a passing run at the maximum and a failing run one step above it (the host "
            "wall: the guard's refusal), from the newest search of each variant; each search's file in full below.",
            "", *markdown(titles, rows)]


def _tokens(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


# Families ----------------------------------------------------------------------------------------

def families_rows(report: dict) -> list[dict]:
    """Per (model, context): hf and mom peak, TTFT, decode; the bf16 verdict and token agreement."""
    runs = report["runs"]
    rows = []
    for (name, context), group in groups(runs, ("model", "context")).items():
        timed = {v: [r for r in group if r.get("kind") == "timing" and r["variant"] == v] for v in ("hf", "mom")}
        exact = next((r for r in group if r.get("kind") == "exactness"), None)
        agree = next((r for r in group if r.get("kind") == "agreement"), None)
        row = dict(model=f"`{name}`", context=context_label(context))
        for v, rs in timed.items():
            row.update({f"{v}_{k}": cell(rs, k, d) for k, d in (("peak_gib", 2), ("ttft_s", 2),
                                                                 ("decode_tokens_per_s", 2))})
        row["verdict"] = _verdict(exact)
        row["tokens"] = ("-" if agree is None else "identical" if agree["identical"] else
                         f"differ from token {agree['first_divergence']} of {agree['compared']}")
        rows.append(row)
    return rows


def _verdict(exact: dict | None) -> str:
    if exact is None:
        return "-"
    if exact.get("oom") or exact.get("error"):
        return "OOM" if exact.get("oom") else "error"
    text = f"{'pass' if exact['passed'] else 'FAIL'} (worst ratio {exact['worst_ratio']:.2f})"
    check = exact.get("reference_check")
    if check:
        text += (f"; mom-fp32 reference vs unpatched fp32: relative error {check['relative_error']:.1e}, "
                 f"tokens {'identical' if check['tokens_identical'] else 'DIFFER'}")
    return text


def families_markdown(report: dict, path: Path | None = None) -> list[str]:
    args = report.get("args", {})
    what = (f"Other families, `hf` against `mom` through `generate()` ({args.get('new_tokens')} greedy tokens); "
            f"bf16 verdict over {args.get('exact_tokens')} teacher-forced steps against an fp32 reference "
            "(mom/exactness.py; benchmarks/families.py says how the reference is made), ")
    titles = ["model", "context", "hf peak GiB", "mom peak GiB", "hf TTFT s", "mom TTFT s", "hf decode tok/s",
              "mom decode tok/s", "bf16 verdict", "greedy tokens (bf16, mom vs hf)"]
    columns = ["model", "context", "hf_peak_gib", "mom_peak_gib", "hf_ttft_s", "mom_ttft_s",
               "hf_decode_tokens_per_s", "mom_decode_tokens_per_s", "verdict", "tokens"]
    rows = [{t: row[c] for t, c in zip(titles, columns)} for row in families_rows(report)]
    return [header(report, path, what).replace(f"`{report.get('model')}`", "models as listed"), "",
            *markdown(titles, rows)]


# Peers -------------------------------------------------------------------------------------------

def peers_rows(report: dict) -> list[dict]:
    """Per (context, variant): n, new tokens, peak, TTFT, decode s/token; the compile warm-up apart."""
    runs = report["runs"]
    warmups = {r["context"]: r.get("compile_warmup_s") for r in runs if r.get("kind") == "compile"}
    rows = []
    for (context, variant), rs in groups([r for r in runs if r.get("kind") == "timing"]).items():
        warm = warmups.get(context) if variant == "hf-static-compile" else None
        rows.append(dict(context=context_label(context), variant=f"`{variant}`",
                         n=sum(1 for r in rs if not r.get("oom") and not r.get("error")),
                         tokens=rs[0]["new_tokens"], peak_gib=cell(rs, "peak_gib", 2), ttft_s=cell(rs, "ttft_s", 2),
                         decode_s_per_token=cell(rs, "decode_s_per_token", 4),
                         compile_s=f"{warm:.1f}" if warm is not None else ""))
    return rows


def peers_markdown(report: dict, path: Path | None = None) -> list[str]:
    what = ("What a user would pick instead, through `generate()` in the same call: transformers' offloaded and "
            "static caches (static compiled by `generate()`; the first call at each context, compiling, timed "
            "apart), median [min-max] of round-robin repeats, ")
    titles = ["context", "variant", "n", "new tokens", "peak GiB", "TTFT s", "decode s/token", "compile warm-up s"]
    columns = ["context", "variant", "n", "tokens", "peak_gib", "ttft_s", "decode_s_per_token", "compile_s"]
    rows = [{t: row[c] for t, c in zip(titles, columns)} for row in peers_rows(report)]
    return [header(report, path, what), "", *markdown(titles, rows)]
