"""The physical limit of a card and a host: how many tokens of K/V all the memory there is can hold.

mom's ceiling is GPU memory and host RAM together (issue 14): K/V that does not fit on the card
can live in pinned host memory and be streamed. No placement beats the box itself, so the
Explorer draws this limit next to the maximum context measured or predicted for a config:

    S_max = (G - W - T(S_max) + H) / k

G the card's usable memory (`GPU.usable_bytes`: total less the CUDA context), W the weights,
T(S) the device transients of a run of S tokens, H usable host RAM (the engine's host guard
uses `HOST_RAM_MARGIN` of it), k the bytes of K and V per token over all full-attention layers.

T is not a constant: with a fixed number of mini-sequences every piece, the residual stream and
the attention's q and output grow with the prompt. T(S) = a + b S is read off two predictions
of `offload="stream"` (the mode that keeps the least on the device: the weights, the transients
and two layers' K/V in flight, counted here as transients) at two contexts, which makes the
limit linear and closed-form:

    S_max = (G - W - a + H) / (k + b)

It is an upper bound, not a promise: it assumes every byte that is neither weights nor
transients holds K/V, with no fragmentation between the two places.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..config import MomConfig
from ..engine import families
from ..engine.host_guard import HOST_RAM_MARGIN
from ..memory.events import format_bytes
from .fake import model_config
from .gpus import GPU, resolve_gpu

REFERENCE_CONTEXTS = (32768, 65536)  # short enough to fit small cards; far enough apart to fit a slope


@dataclass(frozen=True)
class PhysicalLimit:
    """The limit and every term of its formula, in bytes (tokens for `tokens`)."""

    tokens: int
    gpu: str
    usable_gpu_bytes: int
    weights_bytes: int
    transient_bytes: int  # a: what the transients hold at any length
    transient_bytes_per_token: float  # b: what they add per prompt token
    usable_host_bytes: int
    kv_bytes_per_token: int

    def formula(self) -> str:
        """The formula with this card's numbers, for a label or a notebook."""
        return (f"({format_bytes(self.usable_gpu_bytes)} usable on {self.gpu} - {format_bytes(self.weights_bytes)} "
                f"weights - {format_bytes(self.transient_bytes)} - {self.transient_bytes_per_token / 1024:.1f} KiB/token "
                f"transients + {format_bytes(self.usable_host_bytes)} usable host RAM) / "
                f"{self.kv_bytes_per_token / 1024:.1f} KiB of K/V per token = {self.tokens:,} tokens")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def physical_max_context(
    model: Any,
    gpu: str | int | GPU = "H100-80GB",
    host_bytes: int = 0,
    mini_sequences: int = 16,
    new_tokens: int = 32,
    batch: int = 1,
    dtype: torch.dtype = torch.bfloat16,
    transients: tuple[int, float] | None = None,
) -> PhysicalLimit:
    """The longest context whose K/V fit the card and the host together (the module docstring's formula).

    Args:
        model: as for `mom.predict` (a preset name, config, folder, hub id or model).
        gpu: a card of `mom.simulate.GPUS`, a size ("custom-24GiB") or bytes.
        host_bytes: host RAM in bytes (0: the card alone); `HOST_RAM_MARGIN` of it is usable.
        mini_sequences: M of the offload="stream" runs the transients are read from.
        new_tokens: decode steps of those runs (decode's K/V growth is part of the peak).
        batch, dtype: as for `mom.predict`.
        transients: (a, b) given instead of predicted: bytes, and bytes per token.

    Returns:
        A PhysicalLimit: `tokens` (0 when the weights alone fill the card) and the terms.

    Raises:
        ValueError: host_bytes below 0, or mini_sequences or batch below 1.
    """
    if not isinstance(host_bytes, int) or host_bytes < 0:
        raise ValueError(f"host_bytes must be a whole number of bytes >= 0 (0: the card alone), got {host_bytes!r}")
    if mini_sequences < 1 or batch < 1:
        raise ValueError(f"mini_sequences and batch must be >= 1, got {mini_sequences} and {batch}")
    card = resolve_gpu(gpu)
    config, _ = model_config(model)
    weights, a, b = _weights_and_transients(config, card, mini_sequences, new_tokens, batch, dtype, transients)
    kv = kv_bytes_per_token(config, dtype, batch)
    usable_host = int(HOST_RAM_MARGIN * host_bytes)
    tokens = max(0, int((card.usable_bytes - weights - a + usable_host) // (kv + b)))
    return PhysicalLimit(tokens=tokens, gpu=card.name, usable_gpu_bytes=card.usable_bytes, weights_bytes=weights,
                         transient_bytes=int(a), transient_bytes_per_token=float(b), usable_host_bytes=usable_host,
                         kv_bytes_per_token=kv)


def kv_bytes_per_token(config, dtype: torch.dtype = torch.bfloat16, batch: int = 1) -> int:
    """Bytes of K and V per prompt token over the layers a MomCache holds (full attention)."""
    _, kv_heads, head_dim = families.kv_geometry_of_config(config)
    return 2 * len(families.offloadable_layers(config)) * kv_heads * head_dim * dtype.itemsize * batch


def _weights_and_transients(config, card: GPU, mini_sequences: int, new_tokens: int, batch: int,
                            dtype: torch.dtype, given: tuple[int, float] | None) -> tuple[int, int, float]:
    """(W, a, b): the weights, and T(S) = a + b S fitted through two stream predictions."""
    from ..memory.sizes import weight_bytes
    from .fake import fake_model
    from .runner import predict

    if given is not None:
        return weight_bytes(fake_model(config, "", dtype).model, meta=True), int(given[0]), float(given[1])
    stream = MomConfig(mini_sequences=mini_sequences, offload="stream")
    short, long = (predict(config, stream, context, new_tokens, batch, card, dtype=dtype, every_piece=False)
                   for context in REFERENCE_CONTEXTS)
    if short.oom or long.oom:  # the card is too small for the references: transients as far as seen
        return short.weights_bytes, max(0, short.peak_gpu_bytes - short.weights_bytes), 0.0
    t_short, t_long = (p.peak_gpu_bytes - p.weights_bytes for p in (short, long))
    slope = max(0.0, (t_long - t_short) / (long.context - short.context))
    return short.weights_bytes, int(t_short - slope * short.context), slope
