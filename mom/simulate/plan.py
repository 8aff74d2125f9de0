"""mom.plan: which configurations fit a model on a card, ranked by predicted speed, and how far
each offload mode reaches.

Candidates: plain Hugging Face, and mom with M mini-sequences (default 16) in each offload mode
("none", "prefill", "stream", "auto"; "auto" with the budget it finds itself, or the one given).
A fixed piece count, not a piece size, keeps a prediction's cost independent of the context
(the op count is layers x pieces), which is what makes the maximum-context search take seconds.

Ranking: predicted time of the whole run, TTFT + (new_tokens - 1) decode steps. The maximum
context of each mode is searched over predictions (reach.py: the host wall where it is
arithmetic, else the bracket search of memory/search.py, grown from the mode's prediction at the
planned context): the answer is a predicted pass whose neighbour one step up is a predicted
failure. The search stops at `high`; a mode that passes there shows ">= high" in the table
(`max_context_capped`). The searches may run one mode per process (`workers`; parallel.py).

Several GPUs (`gpus=2` or `gpus=(1, 2, 4)`): every candidate is predicted on each count of cards
(devices.py's even split), rows are grouped by count (fewest cards first, fastest first within),
and a row fits when every card's peak does. With one count, `max_context` is keyed by the mode;
with several, by "<mode> on <N> GPUs" ("on 1 GPU").

Nothing fits: the plan's next question is answered too, "how many of these cards would it
take?" (`fewest_gpus`): from the first count the weights could fit (their bytes over a card's),
up to FEWEST_GPUS_UP_TO, the first count at which "auto" or "stream" (the two that hold the least
on the cards) is predicted to run at the planned context. A few predictions: llama-3.1-70b at 256k
on H100-80GB (3 cards) takes three, and its whole plan 4 s on 2 cores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..config import MomConfig
from ..engine.host_guard import HOST_RAM_MARGIN, host_bytes_needed
from ..memory.events import MaxContextResult, format_bytes
from . import parallel, reach
from .fake import model_config
from .gpus import GPU, resolve_gpu
from .runner import Prediction, predict

NEAR_THE_WALL = 1 << 29  # reserve within 0.5 GiB of the card: the allocator model's error there decides
NEAR_THE_WALL_NOTE = (
    "* the allocator's reserve peaks within 0.5 GiB of the card: what runs out is the reserve (allocated "
    "plus cached blocks stranded by fragmentation), and the card's fragmentation can differ from the "
    "model's by more than that (an H100 ran the baseline out of memory at 229,376 tokens with 0.18 GiB "
    "predicted left, benchmarks/results/2026-12-07_h100_max_context_hf.json)")
DEFAULT_HIGH = 4 << 20  # 4M tokens: beyond any card in the table for an 8B model
FEWEST_GPUS_UP_TO = 8  # the cards of one host (an HGX box): where the search for the fewest stops


def near_the_wall(usable_bytes: int, reserved_bytes: int) -> bool:
    """Whether the allocator's reserve peak comes within NEAR_THE_WALL of the card's usable memory."""
    return usable_bytes - reserved_bytes < NEAR_THE_WALL


@dataclass
class PlanRow:
    """One candidate configuration at the planned context."""

    label: str
    config: dict[str, Any]
    fits: bool
    peak_gpu_bytes: int
    peak_host_bytes: int
    ttft_s: float | None
    decode_s_per_token: float | None
    total_s: float | None
    wall: str | None = None  # the Profile's oom_kind: "device" or "host"
    error: str | None = None
    gpus: int = 1
    peak_by_device: dict[str, int] = field(default_factory=dict)  # each card's peak, on several
    peak_reserved_bytes: int = 0  # the caching allocator's reserve at its high-water mark (the fullest card)


@dataclass
class Plan:
    """mom.plan's answer: rows that fit (fastest first), rows that do not, maximum contexts."""

    model: str
    gpu: str
    usable_bytes: int
    host_bytes: int | None
    context: int
    new_tokens: int
    rows: list[PlanRow] = field(default_factory=list)
    rejected: list[PlanRow] = field(default_factory=list)
    max_context: dict[str, int | None] = field(default_factory=dict)
    max_context_capped: list[str] = field(default_factory=list)  # keys whose maximum is the search's cap, not a wall
    resolution: int = 8192
    gpus: list[int] = field(default_factory=lambda: [1])
    fewest_gpus: PlanRow | None = None  # nothing fits: the first count of cards where a config does
    fewest_gpus_searched: int | None = None  # the counts searched for it went up to this one

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        """A plain-text table for a terminal."""
        several = self.gpus != [1]
        header = ("config", *(("GPUs",) if several else ()), "fits", "peak GPU" + (" (each)" if several else ""),
                  "reserved", "peak host", "TTFT s", "decode s/tok", "max context")
        lines = [header]
        for row in self.rows + self.rejected:
            mode = row.config.get("offload", "none") if row.label != "baseline" else "baseline"
            key = reach_key(mode, row.gpus, self.gpus)
            furthest = self.max_context.get(key)
            close = row.fits and near_the_wall(self.usable_bytes, row.peak_reserved_bytes)
            lines.append((row.label, *((str(row.gpus),) if several else ()), "yes" if row.fits else f"no ({row.wall})",
                          _peaks(row), format_bytes(row.peak_reserved_bytes) + (" *" if close else ""),
                          format_bytes(row.peak_host_bytes), _fmt(row.ttft_s, 2),
                          _fmt(row.decode_s_per_token, 3), _reach_cell(furthest, key in self.max_context_capped)))
        widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
        text = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in lines]
        text.insert(1, "  ".join("-" * w for w in widths))
        title = (f"{self.model} on {_cards(self.gpus, self.gpu)} ({format_bytes(self.usable_bytes)} usable each), host "
                 f"{format_bytes(self.host_bytes) if self.host_bytes else 'unlimited'}, context {self.context:,} "
                 f"+ {self.new_tokens} tokens (predicted)")
        if any(near_the_wall(self.usable_bytes, row.peak_reserved_bytes) for row in self.rows):
            text.append(NEAR_THE_WALL_NOTE)
        if not self.rows and all((row.error or "").startswith("the weights do not fit") for row in self.rejected):
            text.append(f"the weights alone ({format_bytes(self.rejected[0].peak_gpu_bytes)}) do not fit this card: "
                        "no configuration can run; a larger card, more cards (gpus=N), or a quantized model "
                        "is needed")
        if not self.rows:
            text.append(self._fewest_line())
        return "\n".join([title, *text])

    def _fewest_line(self) -> str:
        if self.fewest_gpus_searched is None:
            return "the fewest cards that fit were not searched (plan(fewest_gpus=False))"
        row = self.fewest_gpus
        if row is None:
            return (f"no count of {self.gpu} up to {self.fewest_gpus_searched} runs this context: a shorter context, "
                    "more host RAM, a larger card or a quantized model is needed")
        speed = f", TTFT {_fmt(row.ttft_s, 2)} s, decode {_fmt(row.decode_s_per_token, 3)} s/token"
        return (f"the fewest that fit: {row.gpus}x {self.gpu}, with {row.label} (peak {_peaks(row)} per card{speed}); "
                f"--gpus {row.gpus} (plan(gpus={row.gpus})) compares every configuration there")


def candidates(mini_sequences: int = 16, kv_gpu_budget: int | None = None) -> list[MomConfig]:
    """The configurations plan() compares."""
    configs = [MomConfig()]
    for mode in ("none", "prefill", "stream", "auto"):
        budget = kv_gpu_budget if mode == "auto" else None
        configs.append(MomConfig(mini_sequences=mini_sequences, offload=mode, kv_gpu_budget=budget))
    return configs


def plan(
    model: Any,
    gpu: str | int | GPU = "H100-80GB",
    host_bytes: int | None = None,
    context: int = 131072,
    new_tokens: int = 32,
    batch: int = 1,
    mini_sequences: int = 16,
    kv_gpu_budget: int | None = None,
    max_contexts: bool = True,
    resolution: int = 8192,
    high: int = DEFAULT_HIGH,
    gpus: int | Sequence[int] = 1,
    workers: int | None = 1,
    fewest_gpus: bool = True,
) -> Plan:
    """Rank the configurations that fit, and find each offload mode's maximum context.

    Args:
        model: as for `mom.predict` (a preset name, config, folder, hub id or model).
        gpu: a card of `mom.simulate.GPUS`, a size ("custom-24GiB") or bytes.
        host_bytes: host RAM for offloaded caches; None: unlimited.
        context, new_tokens, batch: the run to plan for.
        mini_sequences: M of the mom candidates.
        kv_gpu_budget: bytes of K/V the "auto" candidate keeps on the GPU (None: what fits).
        max_contexts: also search each mode's maximum context.
        resolution, high: step and cap of that search.
        gpus: how many cards of `gpu` the model is spread over (an even split of its layers), or
            several counts to compare (rows per count).
        workers: processes for the maximum-context searches, one mode each (parallel.py); None:
            one per CPU core, at most one per search. 1 (the default) searches in this process.
        fewest_gpus: when nothing fits, find the fewest cards of `gpu` that would run the planned
            context (the module docstring).

    Returns:
        A Plan; `plan.table()` prints it, `plan.to_dict()` is its JSON.

    Raises:
        ValueError: a GPU count below 1 (or none), or a worker count below 1.
    """
    card = resolve_gpu(gpu)
    counts = gpu_counts(gpus)
    parallel.worker_count(workers, 1)  # a bad count is refused before anything is predicted
    config, name = model_config(model)
    result = Plan(model=name, gpu=card.name, usable_bytes=card.usable_bytes, host_bytes=host_bytes,
                  context=context, new_tokens=new_tokens, resolution=resolution, gpus=counts)
    searches = []  # each mode's maximum-context search, from its prediction at `context`
    for count in counts:
        for cfg in candidates(mini_sequences, kv_gpu_budget):
            prediction = predict(config, cfg, context, new_tokens, batch, card, host_bytes, gpus=count,
                                 every_piece=False)
            row = _row(prediction, cfg)
            (result.rows if row.fits else result.rejected).append(row)
            mode = "baseline" if cfg.is_baseline else cfg.offload
            searches.append((reach_key(mode, count, counts), (config, cfg, card, host_bytes, new_tokens, batch,
                                                              resolution, high, count, prediction)))
    result.rows.sort(key=lambda r: (r.gpus, r.total_s if r.total_s is not None else float("inf")))
    if fewest_gpus and not result.rows:
        result.fewest_gpus_searched = FEWEST_GPUS_UP_TO
        result.fewest_gpus = _fewest_gpus(config, card, host_bytes, context, new_tokens, batch, mini_sequences,
                                          kv_gpu_budget, after=max(counts), weights=prediction.weights_bytes)
    if max_contexts:
        for key, (maximum, limit_reached) in parallel.run_searches(_search_one, searches, workers):
            result.max_context[key] = maximum
            if maximum is not None and not limit_reached:
                result.max_context_capped.append(key)
    return result


def _fewest_gpus(config, card: GPU, host_bytes: int | None, context: int, new_tokens: int, batch: int,
                 mini_sequences: int, kv_gpu_budget: int | None, after: int, weights: int) -> PlanRow | None:
    """The row of the first count of cards above `after` where "auto" or "stream" runs, or None."""
    first = max(after + 1, -(-weights // card.usable_bytes))  # no count below the weights' own share
    for count in range(first, min(FEWEST_GPUS_UP_TO, config.num_hidden_layers) + 1):
        for mode in ("auto", "stream"):
            cfg = MomConfig(mini_sequences=mini_sequences, offload=mode,
                            kv_gpu_budget=kv_gpu_budget if mode == "auto" else None)
            prediction = predict(config, cfg, context, new_tokens, batch, card, host_bytes, gpus=count,
                                 every_piece=False)
            if not prediction.oom:
                return _row(prediction, cfg)
    return None


def _search_one(config, cfg, card, host_bytes, new_tokens, batch, resolution, high, count, known):
    """One mode's maximum-context search for plan(): (maximum, limit_reached), small to send back."""
    found = find_max_context(config, cfg, card, host_bytes, new_tokens, batch, resolution, high, gpus=count,
                             known=known)
    return found.maximum, found.limit_reached


def gpu_counts(gpus: int | Sequence[int]) -> list[int]:
    """The GPU counts to plan for, in order, each checked."""
    counts = [gpus] if isinstance(gpus, int) else list(gpus)
    if not counts or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in counts):
        raise ValueError(f"gpus must be a count of GPUs >= 1, or several such counts, got {gpus!r}")
    return sorted(set(counts))


def reach_key(mode: str, count: int, counts: list[int]) -> str:
    """The key of a mode's maximum context in `Plan.max_context` (the module docstring's rule)."""
    return mode if len(counts) == 1 else f"{mode} on {count} GPU{'s' if count > 1 else ''}"


def _row(p: Prediction, cfg: MomConfig) -> PlanRow:
    decode = 1 / p.decode_tokens_per_s * p.batch if p.decode_tokens_per_s else None
    total = None if p.oom or p.ttft_s is None else p.ttft_s + (decode or 0) * max(p.new_tokens - 1, 0)
    return PlanRow(label=cfg.describe(), config=asdict(cfg), fits=not p.oom, peak_gpu_bytes=p.peak_gpu_bytes,
                   peak_host_bytes=p.peak_host_bytes, ttft_s=p.ttft_s, decode_s_per_token=decode, total_s=total,
                   wall=p.oom_kind, error=p.error, gpus=p.gpus, peak_by_device=dict(p.peak_by_device),
                   peak_reserved_bytes=p.peak_reserved_bytes)


def _peaks(row: PlanRow) -> str:
    """One card's peak, or each card's ("66.2 / 65.8 GiB")."""
    if not row.peak_by_device:
        return format_bytes(row.peak_gpu_bytes)
    return " / ".join(f"{peak / (1 << 30):.1f}" for peak in row.peak_by_device.values()) + " GiB"


def _cards(counts: list[int], name: str) -> str:
    if counts == [1]:
        return name
    return f"{' or '.join(map(str, counts))}x {name}"


def max_context(model: Any, config: MomConfig, gpu: str | int | GPU = "H100-80GB", host_bytes: int | None = None,
                new_tokens: int = 32, batch: int = 1, resolution: int = 8192, high: int = DEFAULT_HIGH,
                gpus: int | None = None, logits_to_keep: int = 1, prefill_chunk_size: int | None = None) -> int | None:
    """The largest multiple of `resolution` up to `high` predicted to run; None if one step does not."""
    return find_max_context(model, config, gpu, host_bytes, new_tokens, batch, resolution, high, gpus=gpus,
                            logits_to_keep=logits_to_keep, prefill_chunk_size=prefill_chunk_size).maximum


def find_max_context(model: Any, config: MomConfig, gpu: str | int | GPU = "H100-80GB", host_bytes: int | None = None,
                     new_tokens: int = 32, batch: int = 1, resolution: int = 8192, high: int = DEFAULT_HIGH,
                     on_try: Callable[[Prediction], None] | None = None, gpus: int | None = None,
                     device_map: str | dict | None = None, logits_to_keep: int = 1,
                     prefill_chunk_size: int | None = None, known: Prediction | None = None) -> MaxContextResult:
    """`mom.find_max_context` over predictions: the same MaxContextResult, its tries Predictions.

    Args:
        model, config, gpu, host_bytes, new_tokens, batch: as for `mom.predict`.
        resolution, high: the step of the answer and the largest context tried (lowered to the
            host-RAM wall of an offloaded cache, which is arithmetic).
        on_try: called with each Prediction as it is made (the Explorer's progress).
        gpus, device_map: several cards, as for `mom.predict` (a try passes when every card's does).
        logits_to_keep, prefill_chunk_size: the prefill, as for `mom.predict`.
        known: a prediction of this configuration already made (mom.plan's at the planned
            context): the search starts from it (reach.py).
    """
    card = resolve_gpu(gpu)
    hf_config, _ = model_config(model)
    _check_known(known, config, new_tokens, batch, card, gpus, logits_to_keep, prefill_chunk_size)
    high = high // resolution * resolution
    if high < resolution:
        return MaxContextResult(maximum=None, resolution=resolution, high=high)

    def predict_at(context: int) -> Prediction:
        prediction = predict(hf_config, config, context, new_tokens, batch, card, host_bytes, gpus=gpus,
                             device_map=device_map, logits_to_keep=logits_to_keep,
                             prefill_chunk_size=prefill_chunk_size, every_piece=False)
        if on_try is not None:
            on_try(prediction)
        return prediction

    return reach.search(predict_at, card.usable_bytes, resolution, high,
                        host_top=_host_wall(hf_config, config, batch, host_bytes, resolution), known=known)


def _check_known(known: Prediction | None, config: MomConfig, new_tokens: int, batch: int, card: GPU,
                 gpus: int | None, logits_to_keep: int, prefill_chunk_size: int | None) -> None:
    """A `known` prediction must be of the searched run: else its pass or failure says nothing."""
    if known is None:
        return
    ours = (asdict(config), new_tokens, batch, card.name, gpus or 1, logits_to_keep, prefill_chunk_size)
    settings = {key: value for key, value in known.config.items() if key != "label"}  # Profile.config adds a label
    theirs = (settings, known.new_tokens, known.batch, known.gpu, known.gpus, known.logits_to_keep,
              known.prefill_chunk_size)
    if ours != theirs:
        raise ValueError("`known` was predicted for another run (its config, new_tokens, batch, card, GPU count or prefill "
                         "differ from the search's): pass a prediction of this search's own run, or none")


def _host_wall(hf_config, config: MomConfig, batch: int, host_bytes: int | None, resolution: int) -> int:
    """Largest context whose K/V pass the engine's host-RAM rule with every layer on the host (as
    "prefill" and "stream" place them); unbounded without a limit, or for "auto", whose host share
    depends on what the GPU keeps (the predictions find that wall)."""
    if config.offload in ("none", "auto") or host_bytes is None:
        return DEFAULT_HIGH * 4
    import torch

    def fits(context: int) -> bool:
        return host_bytes_needed(hf_config, torch.bfloat16, batch, context) <= HOST_RAM_MARGIN * host_bytes

    low, high = 0, resolution
    while fits(high):
        low, high = high, high * 2
    while high - low > resolution:
        middle = (low + high) // 2 // resolution * resolution
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def _reach_cell(tokens: int | None, capped: bool) -> str:
    """A maximum context for the table: '>= N' where the search stopped at its cap with no wall below."""
    if tokens is None:
        return "-"
    return f">= {tokens:,}" if capped else f"{tokens:,}"


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
