"""Plain data of the measurement layer: MemoryEvent, Profile, MaxContextResult; byte formatting.

Everything here is a dataclass of numbers and strings, so plots, tables, JSON and notebooks
consume the same values and nothing here imports torch or widgets. Bytes are ints; shown to
people only through `format_bytes` (binary units: GiB = 2**30). `events_frame` and
`layer_table` turn events into pandas tables (pandas imported on use).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

GiB = 1 << 30
MiB = 1 << 20
KiB = 1 << 10


def format_bytes(n: float | int | None, digits: int = 2) -> str:
    """1536 -> '1.50 KiB'; binary units everywhere."""
    if n is None:
        return "-"
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            return f"{sign}{n / size:.{digits}f} {unit}"
    return f"{sign}{int(n)} B"


@dataclass
class MemoryEvent:
    """One hooked module call.

    phase: "prefill" or "decode"; step: 0 in prefill, n for the n-th decode step (1-based).
    layer: decoder layer index, or None for embedding / final norm / LM head.
    module: "embedding", "layer", "attention", "mlp", "mlp_piece", "norm", "lm_head".
    piece: mini-sequence piece index for "mlp_piece" events, else None.
    bytes_before / bytes_after: device bytes allocated around the call.
    peak_bytes: the device high-water mark reached inside the call.
    reserved_bytes: allocator reserve (CUDA) or equal to allocated (tracker).
    kv_gpu_bytes / kv_host_bytes: bytes held by the KV cache on the device / in host memory.
    kv_layer_gpu_bytes / kv_layer_host_bytes: the same for this event's layer only (None
        for events outside a decoder layer).
    elapsed_s: seconds from the start of the run to the end of the call.
    duration_s: seconds the call took (synchronized only when the recorder asks for timing).
    kind: "call" for a finished call; "oom" for the call in which an allocation failed (the
        innermost hooked module open at the failure, at most one per run). For it,
        bytes_after is the device bytes in use when the allocation was asked for and
        requested_bytes its size (None when the error did not say), so `attempted_bytes`
        is the bar that hit the limit.
    device: on a model spread over several devices (a device map), the device the call ran on
        and whose counters the byte fields are ("cuda:1"); None on a single-device model.
    """

    phase: str
    step: int
    layer: int | None
    module: str
    bytes_before: int
    bytes_after: int
    peak_bytes: int
    reserved_bytes: int = 0
    kv_gpu_bytes: int = 0
    kv_host_bytes: int = 0
    kv_layer_gpu_bytes: int | None = None  # this event's layer: its own K/V on the device...
    kv_layer_host_bytes: int | None = None  # ...and in host memory, at the end of the call
    elapsed_s: float = 0.0
    duration_s: float = 0.0
    piece: int | None = None
    kind: str = "call"
    requested_bytes: int | None = None
    device: str | None = None  # the device whose counters these are, on a model spread over several

    @property
    def attempted_bytes(self) -> int:
        """Bytes in use plus the failed request (an "oom" event); bytes_after for a call."""
        return self.bytes_after + (self.requested_bytes or 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Profile:
    """One measured run (prefill + decode) of a model under a MomConfig.

    peak_gpu_bytes is the device high-water mark of the whole run, weights included.
    peak_host_bytes is the larger of the KV cache's host bytes (needs recording) and the host
    memory the probe sees (the tracker's host tier; torch's pinned caching allocator on CUDA).
    prefill_peak_bytes is the high-water mark up to the first token's logits.
    An out-of-memory error is a result: oom=True, oom_kind says which wall ("device": the
    device memory limit; "host": host RAM, e.g. mom's host-RAM guard), error holds the message,
    numbers are what was measured up to the failure, and the events end with the failing
    attempt (kind "oom") when it happened inside a hooked module.
    A run stopped through a Cancel token is a result too: cancelled=True, events up to the stop.
    """

    model_name: str
    config: dict[str, Any]
    context: int
    new_tokens: int
    batch: int = 1
    backend: str = "cuda"  # "cuda" (allocator statistics) or "tracker" (CPU tensor accounting)
    device_name: str = ""
    device_limit_bytes: int | None = None
    weights_bytes: int = 0
    peak_gpu_bytes: int = 0
    peak_host_bytes: int = 0
    prefill_peak_bytes: int = 0
    ttft_s: float | None = None
    decode_tokens_per_s: float | None = None
    oom: bool = False
    error: str | None = None
    oom_kind: str | None = None  # "device" or "host" when oom
    cancelled: bool = False
    events: list[MemoryEvent] = field(default_factory=list)
    seed: int = 0
    start_bytes: int = 0  # device bytes allocated when the run began (weights and anything else)
    layer_weight_bytes: list[int] = field(default_factory=list)
    decode_path: str | None = None  # which decode path ran (engine/graph_decode.py), e.g. "eager (hooks ...)"
    peak_by_device: dict[str, int] = field(default_factory=dict)  # each device's peak ("cuda:1"); {} on one device
    layer_devices: list[str] = field(default_factory=list)  # each decoder layer's device; [] on one device

    @property
    def label(self) -> str:
        return self.config.get("label", "") if isinstance(self.config, dict) else str(self.config)

    @property
    def passed(self) -> bool:
        """The run finished: no out-of-memory, not cancelled."""
        return not self.oom and not self.cancelled

    def to_dict(self, with_events: bool = False) -> dict[str, Any]:
        out = asdict(self)
        if not with_events:
            out.pop("events")
        return out

    def __repr__(self) -> str:
        """One line: a Profile holds thousands of events, and a notebook shows the last expression's
        repr (the events are in `events`, `frame()` and `to_dict(with_events=True)`)."""
        if self.cancelled:
            outcome = "cancelled"
        elif self.oom:
            outcome = f"out of memory ({self.oom_kind or 'device'})"
        else:
            outcome = f"peak {format_bytes(self.peak_gpu_bytes)}"
            if self.ttft_s is not None:
                outcome += f", TTFT {self.ttft_s:.2f} s"
            if self.decode_tokens_per_s:
                outcome += f", decode {self.decode_tokens_per_s:.1f} tokens/s"
        where = self.device_name or self.backend
        return (f"{type(self).__name__}({self.model_name or 'model'}, {self.label or 'unlabelled'}, "
                f"{self.context:,} + {self.new_tokens} tokens on {where}: {outcome}; {len(self.events):,} events)")

    def _repr_html_(self) -> str:
        """In a notebook: the same metric table the report and the Explorer show."""
        from .tables import html_table, metric_rows

        return html_table(metric_rows(self), caption=repr(self))

    def frame(self):
        """The events as a pandas DataFrame (see `events_frame`)."""
        return events_frame(self.events)

    def layer_table(self, phase: str = "prefill"):
        """One row per decoder layer (see `layer_table`)."""
        return layer_table(self.events, self.layer_weight_bytes, phase)


@dataclass
class MaxContextResult:
    """The largest passing context and every try behind it.

    `maximum` is the longest context that fits only when `limit_reached`: otherwise every try
    up to the cap `high` passed (or the search was cancelled) and the real limit lies above.
    """

    maximum: int | None
    resolution: int
    tries: list[Profile] = field(default_factory=list)
    high: int | None = None  # the cap: the largest context the search would try

    @property
    def limit_reached(self) -> bool:
        """Some try ran out of memory (device or host): the search found a wall below the cap."""
        return any(p.oom for p in self.tries)

    @property
    def cancelled(self) -> bool:
        """The search was stopped through its Cancel token (its last try is the cancelled one)."""
        return any(p.cancelled for p in self.tries)

    @property
    def first_failure_above(self) -> Profile | None:
        failing = [p for p in self.tries if p.oom and (self.maximum is None or p.context > self.maximum)]
        return min(failing, key=lambda p: p.context, default=None)

    @property
    def wall(self) -> str | None:
        """Which wall stopped the search: 'device', 'host', or None (no limit reached)."""
        failure = self.first_failure_above
        return failure.oom_kind if failure is not None else None

    def __repr__(self) -> str:
        """One line, with one short line per try (see Profile.__repr__)."""
        if self.cancelled:
            found = f"cancelled, longest passing so far {self.maximum}"
        elif not self.limit_reached:
            found = f"no limit reached up to {self.high}"
        else:
            found = f"maximum {self.maximum} tokens" + (f" ({self.wall} wall)" if self.wall else "")
        return (f"MaxContextResult({found}, resolution {self.resolution}, {len(self.tries)} tries: "
                f"{[p.context for p in self.tries]})")

    def to_dict(self, with_events: bool = False) -> dict[str, Any]:
        return {
            "maximum": self.maximum,
            "resolution": self.resolution,
            "high": self.high,
            "limit_reached": self.limit_reached,
            "wall": self.wall,
            "cancelled": self.cancelled,
            "tries": [p.to_dict(with_events) for p in self.tries],
        }


EVENT_COLUMNS = tuple(MemoryEvent.__dataclass_fields__)
LAYER_COLUMNS = (
    "layer", "weights_bytes", "bytes_before", "peak_bytes", "activation_peak_bytes",
    "attention_peak_bytes", "mlp_peak_bytes", "kv_gpu_bytes", "kv_host_bytes", "duration_s",
)


def events_frame(events: list[MemoryEvent]):
    """A pandas DataFrame with one row per event and the MemoryEvent fields as columns."""
    import pandas as pd

    frame = pd.DataFrame([e.to_dict() for e in events], columns=list(EVENT_COLUMNS))
    # nullable: None for whole-model modules
    return frame.astype({"layer": "Int64", "piece": "Int64", "kv_layer_gpu_bytes": "Int64",
                         "kv_layer_host_bytes": "Int64", "requested_bytes": "Int64"})


def layer_table(events: list[MemoryEvent], layer_weight_bytes: list[int] | None = None, phase: str = "prefill"):
    """Per decoder layer, over the events of one phase ("prefill" or "decode"):

    weights_bytes (the layer's parameters), bytes_before (device bytes entering the layer, first
    call), peak_bytes (device high-water mark inside it, max over calls), activation_peak_bytes
    (peak minus bytes before, max over calls), attention_peak_bytes / mlp_peak_bytes (the same
    peaks of its attention and MLP), kv_gpu_bytes / kv_host_bytes (KV cache, all layers, after
    the layer's last call), duration_s (summed). Finished calls only: an "oom" event is left out.
    """
    import pandas as pd

    frame = events_frame([e for e in events if e.phase == phase and e.layer is not None and e.kind == "call"])
    if frame.empty:
        return pd.DataFrame(columns=list(LAYER_COLUMNS))
    frame["activation"] = frame["peak_bytes"] - frame["bytes_before"]
    layers = frame[frame["module"] == "layer"].groupby("layer")
    table = pd.DataFrame({
        "bytes_before": layers["bytes_before"].first(),
        "peak_bytes": layers["peak_bytes"].max(),
        "activation_peak_bytes": layers["activation"].max(),
        "kv_gpu_bytes": layers["kv_gpu_bytes"].last(),
        "kv_host_bytes": layers["kv_host_bytes"].last(),
        "duration_s": layers["duration_s"].sum(),
    })
    for module in ("attention", "mlp"):
        table[f"{module}_peak_bytes"] = frame[frame["module"] == module].groupby("layer")["peak_bytes"].max()
    weights = list(layer_weight_bytes or [])
    table["weights_bytes"] = [weights[i] if i < len(weights) else 0 for i in table.index]
    table = table.reset_index()
    table[["attention_peak_bytes", "mlp_peak_bytes"]] = table[["attention_peak_bytes", "mlp_peak_bytes"]].fillna(0)
    return table.astype({"attention_peak_bytes": "int64", "mlp_peak_bytes": "int64"})[list(LAYER_COLUMNS)]
