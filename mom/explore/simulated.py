"""What the Explorer's simulate mode needs beside mom.simulate: the card chosen, the words that
mark a prediction as one, and the physical limit, remembered.

Simulate mode draws `mom.predict`'s Profiles with the same figures as measured runs (they carry
the same events); what differs is only what is said about them. Every prediction is named as
such with its card ("predicted on H100-80GB"), and the calibration it rests on (the kernels'
workspaces fake tensors cannot see, simulate/calibration.py) and its speed ranges are spelled out
next to it, since a reader cannot tell a predicted bar from a measured one by looking.

The words themselves are simulate/explain.py's, which `mom predict` prints too.

The physical limit costs two predictions (seconds for an 8B model), so it is kept per
(model, card, host RAM, M, new tokens) rather than recomputed at each search.
"""

from __future__ import annotations

from typing import Any

import torch

from ..memory.events import GiB, format_bytes
from ..simulate import GPU, GPUS, PhysicalLimit, physical_max_context, resolve_gpu
from ..simulate.explain import cards_needed_lines, predicted, prediction_lines, reserve_lines  # noqa: F401
from ..simulate.gpus import CONTEXT_BYTES

CUSTOM = "custom size"
DEFAULT_GPU = "H100-80GB"


def gpu_options() -> list[str]:
    """The GPU dropdown: the table's cards, then a custom size."""
    return [*GPUS, CUSTOM]


def card_of(name: str, custom_gib: float) -> GPU:
    """The card a dropdown value names; CUSTOM is a card of `custom_gib` GiB with the H100's speeds.

    Raises:
        ValueError: an unknown name, or a custom size of 0 or below.
    """
    if name != CUSTOM:
        return resolve_gpu(name)
    if not custom_gib > 0:
        raise ValueError(f"a custom GPU needs a size above 0 GiB, got {custom_gib}")
    return resolve_gpu(int(custom_gib * GiB))


def card_of_device(device: torch.device) -> GPU:
    """The table's card this CUDA device is (its memory within 1%), else a custom card of its size."""
    total = torch.cuda.get_device_properties(device).total_memory
    for card in GPUS.values():
        if abs(card.total_bytes - total) <= 0.01 * total:
            return card
    return resolve_gpu(total)


def card_of_limit(limit_bytes: int) -> GPU:
    """A card whose usable memory is a CPU run's pretend limit (for a prediction of the same run)."""
    return resolve_gpu(limit_bytes + CONTEXT_BYTES)


class PhysicalLimits:
    """physical_max_context, remembered by its arguments."""

    def __init__(self):
        self._known: dict[tuple, PhysicalLimit] = {}

    def get(self, source: Any, name: str, card: GPU, host_bytes: int, mini_sequences: int, new_tokens: int,
            dtype: torch.dtype) -> PhysicalLimit:
        key = (name, card, host_bytes, mini_sequences, new_tokens, dtype)
        if key not in self._known:
            self._known[key] = physical_max_context(source, card, host_bytes, mini_sequences=mini_sequences,
                                                    new_tokens=new_tokens, dtype=dtype)
        return self._known[key]


def limit_mark(limit: PhysicalLimit) -> tuple[str, int]:
    """(legend name, tokens) of the physical limit's line on the sweep."""
    host = f" + {format_bytes(limit.usable_host_bytes)} host RAM" if limit.usable_host_bytes else ""
    return f"physical limit ({limit.gpu}{host}): {limit.tokens:,} tokens", limit.tokens
