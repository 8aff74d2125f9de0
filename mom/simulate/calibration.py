"""What fake tensors cannot see, and the host's cost of eager decode, calibrated once from committed H100 measurements.

Fake tensors show every tensor an op returns, not what a kernel allocates for itself. Seen from
`max_memory_allocated`, that is one block held for the whole run: cuBLAS's workspace (taken
through the caching allocator at the first matmul and kept), plus flash attention's and
generate()'s small buffers. mom's CUDA-vs-tracker comparison found a constant ~33 MiB
(benchmarks/NOTES.md, recorder overhead, llama-3.2-1b at 16k). Against the H100 runs of
llama-3.1-8b (benchmarks/results/history/2026-11-26_h100_offload_{128k_final,256k}.json, _mom_704k.json)
the fake-tensor peaks with no allowance are short by 31-64 MiB: -1 MiB for hf at 128k (peak in
an MLP), -8 MiB for mom at 704k, -63 MiB for mom's prefill at 128k and 256k (peak in the o_proj
pass after attention; what holds the second 32 MiB there is not identified). One constant of
64 MiB, held from the first matmul to the end, put every one of them within +0.1% / -0.01% with
the engine they were measured on (commit 690919e; tests/simulate/test_accuracy.py keeps what
still applies). Every prediction lists it in its `calibration`.

The "auto" offload budgets are not written out here: the engine's placement asks its copier for
free device memory, and the prediction answers from the allocator model (seams.py).

The second calibration, the host's seconds per decoder layer of an eager decode step, is below
(`host_cost`, with its rule); speed.py uses it and lists it in every prediction's `calibration`.
"""

from __future__ import annotations

import functools
import json
import statistics
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

from .allocator import Block
from .probe import AllocatorProbe

MiB = 1 << 20
GiB = 1 << 30

UNSEEN_BYTES = 64 * MiB  # cuBLAS workspace and kernels' own buffers, held from the first matmul
UNSEEN_SOURCE = "H100 runs of llama-3.1-8b, benchmarks/results/history/2026-11-26_h100_*.json"


def hold_unseen(probe: AllocatorProbe) -> Block:
    """Allocate the unseen block on the probe's allocator; keep the returned block alive."""
    return probe.malloc(UNSEEN_BYTES)


def describe() -> dict[str, Any]:
    """The calibrated figures a prediction used, with their sources."""
    return {"unseen_bytes": UNSEEN_BYTES, "source": UNSEEN_SOURCE}


# -- decode: the host's cost per decoder layer of an eager step ---------------------------------
#
# Eager decode through generate() is bound by the host: Python launches about a thousand small
# kernels per step of an 8B model, ~0.8 ms per decoder layer, while reading the weights and the
# K/V takes 5-11 ms on an H100. The cost per layer depends on the Python that runs per layer:
# transformers' own decoder layer and DynamicCache ("hf"), or mom's patched forward and MomCache
# ("mom"). It is read off the committed H100 decode repeats (packaged in data/decode_h100.json,
# extracted from the results file by `decode_reference`, kept equal to it by a test):
#   per-layer cost = median over the runs (every round of every variant) of one path at the
#                    file's shortest context, of (that run's median step) / (decoder layers).
# At the shortest context the HBM roofline is well under a third of the measured step, so the
# step is the host's; the longer context is kept out of the fit and checks it (speed.py).
# The median, not a least-squares mean: one round in three ran 2-3x slower on that host
# (benchmarks/NOTES.md, 2026-11-28) and a mean would follow it. min/max of the same values give
# the range.

DECODE_FILE = "decode_h100.json"
DECODE_SCHEMA = "mom.decode_host/1"
DECODE_SOURCE = "benchmarks/results/2026-11-28_h100_decode_repeats.json"


@dataclass(frozen=True)
class HostCost:
    """The host's seconds per decoder layer of one eager decode path, and where they come from."""

    path: str  # "hf" or "mom"
    seconds_per_layer: float  # the median (module comment)
    low_per_layer: float  # the fastest run's
    high_per_layer: float  # the slowest run's
    runs: int
    context: int
    card: str
    source: str
    commit: str

    def describe(self) -> dict[str, Any]:
        """The figures and their source, for a Prediction's `calibration`."""
        return {**asdict(self), "rule": "median over runs of (median decode step) / layers at the shortest context"}


def eager_path(variant: str) -> str | None:
    """Which eager decode path a benchmark variant ran: "hf", "mom", or None (another code path)."""
    return "hf" if variant == "hf" else "mom" if variant.startswith("mom") else None


def decode_reference(results: dict[str, Any], source: str = DECODE_SOURCE) -> dict[str, Any]:
    """The packaged decode file's content from a decode_repeats results file (benchmarks/decode_repeats.py):
    the median step of every generate() run that passed, with the card, commit and layer count."""
    from .fake import model_config

    hf_config, _ = model_config(results["model"])
    runs = [dict(variant=r["variant"], context=r["context"], round=r["round"],
                 median_s_per_token=r["decode_median_s_per_token"])
            for r in results["runs"] if r.get("clock") == "generate+streamer" and not r.get("oom")]
    return dict(schema=DECODE_SCHEMA, source=source, card=results["provenance"]["device"],
                commit=results["provenance"]["commit"], model=results["model"],
                layers=hf_config.num_hidden_layers, runs=runs)


@functools.cache
def _packaged(name: str, schema: str) -> dict[str, Any]:
    """A calibration file packaged under data/, checked to be of `schema`."""
    data = json.loads((resources.files(__package__) / "data" / name).read_text())
    if data.get("schema") != schema:
        raise ValueError(f"{name} is not a {schema} file")
    return data


def _packaged_decode() -> dict[str, Any]:
    return _packaged(DECODE_FILE, DECODE_SCHEMA)


def host_cost(path: str, data: dict[str, Any] | None = None) -> HostCost:
    """The calibrated host cost per layer of eager decode on `path` ("hf" or "mom").

    Args:
        path: the eager decode path (`eager_path` of a variant).
        data: a decode reference (`decode_reference`); None: the packaged one.

    Raises:
        ValueError: no run of that path in the data.
    """
    data = data or _packaged_decode()
    shortest = min(r["context"] for r in data["runs"])
    per_layer = [r["median_s_per_token"] / data["layers"] for r in data["runs"]
                 if r["context"] == shortest and eager_path(r["variant"]) == path]
    if not per_layer:
        raise ValueError(f"no {path!r} decode runs in {data['source']}")
    return HostCost(path, statistics.median(per_layer), min(per_layer), max(per_layer), len(per_layer), shortest,
                    data["card"], data["source"], data["commit"])


# -- decode: the graph path's step ----------------------------------------------------------
#
# A replayed step (engine/graph_decode.py) is the GPU's reads plus a fixed cost per step, flat in
# the context: generate()'s and mom's Python around the launch (generate() waits for each token,
# so it adds, with the launch of the graph itself) and the graph's own per-kernel costs (12
# kernels per layer with the fused Triton kernels, GEMVs short of the copy rate). The run splits
# them (graph.replay() alone: 7.07 ms at 4k, 1.9 ms over the reads; through generate() 0.58 ms
# more), but the sum is what a user sees and what is fitted. Read off the committed H100
# decode_speed run of the fused flash-varlen step, every run at lengths never decoded before as
# a user's generate() runs (packaged in
# data/decode_graph_h100.json, extracted by `graph_reference`, kept equal to the results file by
# a test):
#   weights read at the device-copy bandwidth measured in that run; K/V read at the rate the
#   replayed step grows with its K/V between the shortest and the longest context (2.96 TB/s;
#   `_kv_growth_rate`), else, with one context, at the rate the step's attention kernel
#   (flash-varlen; the prefix flash kernel in files before it) measured alone (2.69 TB/s), both
#   as shares of the card's table bandwidth, so another card scales by its own. Until the tenth
#   session the kernel's own rate was used, and the 128k step came out 4% high on llama and
#   6-14% high on qwen2.5-7b and mistral-nemo-12b at 128k (results/2026-12-07_h100_predict_accuracy_
#   {qwen_fresh,nemo}.json, cd6f000); with the growth rate 4% and 10%;
#   per-step overhead = median over the runs at the shortest context of (median step - reads),
#   split by the run's graph.replay() alone (files that time it): the replay's excess over the
#   reads is the graph's kernels, a cost per layer (12 kernels a Llama layer), and the rest,
#   step - replay, is generate()'s and mom's Python and the launch, a cost per step. A model of
#   another depth scales the first by its layers; files without the replay keep it per step.
# Both contexts are in the fit; the other families' runs (never fitted) check it (tests/simulate).

GRAPH_FILE = "decode_graph_h100.json"
GRAPH_SCHEMA = "mom.decode_graph/1"
GRAPH_SOURCE = "benchmarks/results/2026-12-07_h100_decode_speed_fused.json"


@dataclass(frozen=True)
class GraphCost:
    """The graph path's step: read shares of the card's HBM bandwidth and the per-step overhead."""

    weights_share: float  # device-copy bandwidth / the card's table bandwidth
    kv_share: float  # the prefix kernel's K/V read rate / the card's table bandwidth
    overhead_s: float  # the median (module comment), for the calibration model's `layers`
    low_s: float
    high_s: float
    runs: int
    context: int
    card: str
    source: str
    commit: str
    layers: int = 0  # the calibration model's decoder layers (0: no replay timed, all per step)
    per_layer_s: float = 0.0  # the graph's kernels per layer: (replay - reads) / layers

    def overhead_for(self, layers: int) -> float:
        """The per-step overhead of a model of `layers` decoder layers (module comment)."""
        return self.overhead_s + self.per_layer_s * (layers - self.layers)

    def step_seconds(self, weights: int, kv_device: int, hbm_bytes_per_s: float, layers: int | None = None) -> float:
        """A replayed step on a card of `hbm_bytes_per_s` (its table bandwidth), of a model of
        `layers` decoder layers (None: the calibration model's)."""
        overhead = self.overhead_for(self.layers if layers is None else layers)
        return _reads_seconds(weights, kv_device, hbm_bytes_per_s, self.weights_share, self.kv_share) + overhead

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "rule": "weights at the measured copy rate, K/V at the rate the step grows with "
                                        "them, plus the median overhead of the runs at the shortest context"}


def graph_reference(results: dict[str, Any], table_hbm_bytes_per_s: float,
                    source: str = GRAPH_SOURCE) -> dict[str, Any]:
    """The packaged graph-decode file's content from a decode_speed results file
    (benchmarks/decode_speed.py): the `mom` runs that took the graph path, with bytes per step."""
    longest = max(results["kernels"], key=lambda k: k["context"])
    kernel = longest.get("mom_varlen_flash", longest["mom_prefix_flash"])  # the step's attention kernel
    runs = [dict(context=r["context"], round=r["round"], median_s_per_token=r["decode_median_s_per_token"],
                 **{k: results["bytes_per_step"][str(r["context"])][k] for k in ("weights", "kv")})
            for r in results["runs"] if r["variant"] == "mom" and isinstance(r.get("round"), int)
            and (r.get("decode") or {}).get("graph_steps")]
    shortest = min(r["context"] for r in runs)
    replays = [r["replay_ms"] / 1e3 for r in results.get("graph_replay", []) if r["context"] == shortest
               and "replay_ms" in r and r.get("kernels", "triton") == "triton"]  # the step the runs took
    from ..presets import PRESETS

    return dict(schema=GRAPH_SCHEMA, source=source, card=results["provenance"]["device"],
                commit=results["provenance"]["commit"], model=results["model"],
                layers=PRESETS[results["model"]].config["num_hidden_layers"],
                table_hbm_bytes_per_s=table_hbm_bytes_per_s,
                copy_bytes_per_s=results["hbm"]["copy_gb_per_s"] * 1e9,
                kv_kernel_bytes_per_s=kernel["gb_per_s"] * 1e9, runs=runs,
                replay_s=statistics.median(replays) if replays else None)


def _packaged_graph() -> dict[str, Any]:
    return _packaged(GRAPH_FILE, GRAPH_SCHEMA)


def graph_cost(data: dict[str, Any] | None = None) -> GraphCost:
    """The calibrated graph-path step (module comment); `data`: a `graph_reference`, None: the packaged one."""
    data = data or _packaged_graph()
    weights_share = data["copy_bytes_per_s"] / data["table_hbm_bytes_per_s"]
    kv_share = (_kv_growth_rate(data["runs"]) or data["kv_kernel_bytes_per_s"]) / data["table_hbm_bytes_per_s"]
    shortest, hbm = min(r["context"] for r in data["runs"]), data["table_hbm_bytes_per_s"]
    reads = {r["context"]: _reads_seconds(r["weights"], r["kv"], hbm, weights_share, kv_share) for r in data["runs"]}
    overheads = [r["median_s_per_token"] - reads[r["context"]] for r in data["runs"] if r["context"] == shortest]
    layers, per_layer = 0, 0.0
    if data.get("replay_s") is not None:  # the graph's kernels, per layer (module comment)
        layers = data["layers"]
        per_layer = max(0.0, data["replay_s"] - reads[shortest]) / layers
    return GraphCost(weights_share, kv_share, statistics.median(overheads), min(overheads), max(overheads),
                     len(overheads), shortest, data["card"], data["source"], data["commit"], layers, per_layer)


def _kv_growth_rate(runs: list[dict[str, Any]]) -> float | None:
    """Bytes per second at which the replayed step grows with its K/V: between the median steps at
    the shortest and the longest context (same weights); None with one context or no growth."""
    steps = {}
    for r in runs:
        steps.setdefault(r["context"], []).append(r)
    if len(steps) < 2:
        return None
    short, long = steps[min(steps)], steps[max(steps)]
    grown = statistics.median(r["median_s_per_token"] for r in long) - statistics.median(r["median_s_per_token"] for r in short)
    if grown <= 0 or long[0]["weights"] != short[0]["weights"]:
        return None
    return (long[0]["kv"] - short[0]["kv"]) / grown


def _reads_seconds(weights: int, kv: int, hbm_bytes_per_s: float, weights_share: float, kv_share: float) -> float:
    """Seconds to read the weights and the K/V at their shares of a card's table bandwidth."""
    return weights / (hbm_bytes_per_s * weights_share) + kv / (hbm_bytes_per_s * kv_share)


# -- decode: sdpa's cuDNN plan per new key length, and the eager step's GPU rates --------------
#
# On an H100 with torch 2.11 and cuDNN 9.19, sdpa tries cuDNN first, and cuDNN builds an
# execution plan for each new key length: every eager decode step of transformers' own path
# (`MomConfig()`) at a length the process has not decoded before pays for one. A user's
# generate() decodes only new lengths. mom's eager paths run decode without cuDNN's sdpa
# (engine/decode_attention.py), so they do not pay it. Measured by benchmarks/decode_split.py
# --fresh twice in one lease, with sdpa's default backends and with cuDNN's sdpa off for the
# whole process: cold cost = `hf`'s wall step with cuDNN minus without, per (context, round);
# the median is the term, min/max its range (packaged in data/decode_cold_h100.json, extracted by
# `cold_reference`, kept equal to the results files by a test). It applies on the cards whose
# sdpa prefers cuDNN (gpus.GPU.cudnn_sdpa_first).
#
# The same files give the eager step's GPU rates from the GPU's busy time per step (kernel time,
# torch.profiler; round 0): K/V at the rate `mom-eager`'s busy time grows with the context
# (MomCache writes one token, sdpa reads the K/V once); the weights at what is left of
# `mom-eager`'s 4k step; transformers' DynamicCache, whose torch.cat copies the cache each step,
# in extra reads of the cache from the growth of `hf`'s busy time (`eager_device_rates`).

COLD_FILE = "decode_cold_h100.json"
COLD_SCHEMA = "mom.decode_cold/1"
COLD_SOURCES = ("benchmarks/results/2026-12-07_h100_decode_split_fresh.json",
                "benchmarks/results/2026-12-07_h100_decode_split_fresh_nocudnn.json")


@dataclass(frozen=True)
class ColdCost:
    """Seconds a decode step spends on cuDNN's plan for a key length new to the process."""

    seconds: float  # the median (module comment)
    low_s: float
    high_s: float
    runs: int
    card: str
    source: str
    commit: str

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "rule": "median over (context, round) of hf's wall step with cuDNN's sdpa "
                                        "minus without, at never-decoded lengths"}


def _steps(report: dict[str, Any], variant: str, key: str) -> dict[tuple, float]:
    return {(r["context"], r["round"]): r[key] for r in report["runs"]
            if r["variant"] == variant and r.get(key) and not r.get("error")}


def cold_reference(with_cudnn: dict[str, Any], without_cudnn: dict[str, Any],
                   sources: tuple[str, str] = COLD_SOURCES) -> dict[str, Any]:
    """The packaged cold-cost file's content from two decode_split --fresh results files."""
    if not (with_cudnn["args"].get("fresh") and without_cudnn["args"].get("fresh")):
        raise ValueError("the cold cost needs decode_split runs at never-decoded lengths (--fresh)")
    cold, warm = _steps(with_cudnn, "hf", "wall_step_s"), _steps(without_cudnn, "hf", "wall_step_s")
    pairs = [dict(context=c, round=r, with_cudnn_s=cold[c, r], without_cudnn_s=warm[c, r])
             for c, r in sorted(cold) if (c, r) in warm]
    busy = {v: {str(c): s for (c, r), s in _steps(with_cudnn, v, "busy_step_s").items() if r == 0}
            for v in ("hf", "mom-eager")}
    return dict(schema=COLD_SCHEMA, sources=list(sources), card=with_cudnn["provenance"]["device"],
                commit=with_cudnn["provenance"]["commit"], model=with_cudnn["args"]["model"],
                pairs=pairs, busy_step_s=busy)


def _packaged_cold() -> dict[str, Any]:
    return _packaged(COLD_FILE, COLD_SCHEMA)


def cold_cost(data: dict[str, Any] | None = None) -> ColdCost:
    """The calibrated cold-length cost per decode step (module comment); `data`: a `cold_reference`."""
    data = data or _packaged_cold()
    extra = [p["with_cudnn_s"] - p["without_cudnn_s"] for p in data["pairs"]]
    return ColdCost(statistics.median(extra), min(extra), max(extra), len(extra), data["card"],
                    data["sources"][0], data["commit"])


def eager_device_rates(weights: int, kv_bytes_per_token: int, table_hbm_bytes_per_s: float,
                       data: dict[str, Any] | None = None) -> dict[str, float]:
    """The eager step's GPU rates as shares of the card's table bandwidth, and DynamicCache's copy
    in reads of the cache (module comment), from the busy times of a `cold_reference`."""
    busy = (data or _packaged_cold())["busy_step_s"]
    short, long = sorted(int(c) for c in busy["mom-eager"])
    kv_growth = (long - short) * kv_bytes_per_token
    kv_rate = kv_growth / (busy["mom-eager"][str(long)] - busy["mom-eager"][str(short)])
    weights_rate = weights / (busy["mom-eager"][str(short)] - short * kv_bytes_per_token / kv_rate)
    hf_growth = busy["hf"][str(long)] - busy["hf"][str(short)]
    return dict(weights_share=weights_rate / table_hbm_bytes_per_s, kv_share=kv_rate / table_hbm_bytes_per_s,
                cat_traffic=hf_growth * kv_rate / kv_growth - 1)
