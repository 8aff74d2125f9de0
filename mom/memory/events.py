"""Plain data of the measurement layer: MemoryEvent, Profile, MaxContextResult; byte formatting.

Everything here is a dataclass of numbers and strings, so plots, tables, JSON and notebooks
consume the same values and nothing here imports torch or widgets. Bytes are ints; shown to
people only through `format_bytes` (binary units: GiB = 2**30).
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


def gib(n: float | int | None) -> float | None:
    return None if n is None else n / GiB


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
    elapsed_s: seconds from the start of the run to the end of the call.
    duration_s: seconds the call took (synchronized only when the recorder asks for timing).
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
    elapsed_s: float = 0.0
    duration_s: float = 0.0
    piece: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Profile:
    """One measured run (prefill + decode) of a model under a MomConfig.

    peak_gpu_bytes is the device high-water mark of the whole run, weights included.
    An out-of-memory error is a result: oom=True, error holds the message, numbers are what
    was measured up to the failure.
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
    events: list[MemoryEvent] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.config.get("label", "") if isinstance(self.config, dict) else str(self.config)

    def to_dict(self, with_events: bool = False) -> dict[str, Any]:
        out = asdict(self)
        if not with_events:
            out.pop("events")
        return out


@dataclass
class MaxContextResult:
    """The largest passing context and every try behind it."""

    maximum: int | None
    resolution: int
    tries: list[Profile] = field(default_factory=list)

    @property
    def first_failure_above(self) -> Profile | None:
        failing = [p for p in self.tries if p.oom and (self.maximum is None or p.context > self.maximum)]
        return min(failing, key=lambda p: p.context, default=None)
