"""What the Explorer's simulate mode needs beside mom.simulate: the card chosen, the words that
mark a prediction as one, and the physical limit, remembered.

Simulate mode draws `mom.predict`'s Profiles with the same figures as measured runs (they carry
the same events); what differs is only what is said about them. Every prediction is named as
such with its card ("predicted on H100-80GB"), and the calibration it rests on (the kernels'
workspaces fake tensors cannot see, simulate/calibration.py) and its speed ranges are spelled out
next to it, since a reader cannot tell a predicted bar from a measured one by looking.

The physical limit costs two predictions (seconds for an 8B model), so it is kept per
(model, card, host RAM, M, new tokens) rather than recomputed at each search.
"""

from __future__ import annotations

from typing import Any

import torch

from ..memory.events import GiB, format_bytes
from ..simulate import GPU, GPUS, PhysicalLimit, physical_max_context, resolve_gpu
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


def predicted(card: GPU | str, gpus: int = 1) -> str:
    """'predicted on H100-80GB' ('predicted on 2x H100-80GB' on several): how every prediction is labelled."""
    return f"predicted on {f'{gpus}x ' if gpus > 1 else ''}{card.name if isinstance(card, GPU) else card}"


def prediction_lines(result: Any) -> list[str]:
    """What a Prediction rests on, in words: its speed ranges and the calibration it used."""
    parts = []
    if result.ttft_s is not None and result.ttft_range_s:
        low, high = result.ttft_range_s
        parts.append(f"TTFT {result.ttft_s:.2f} s ({low:.2f}-{high:.2f})")
    if result.decode_tokens_per_s and result.decode_s_per_token_range:
        low, high = result.decode_s_per_token_range
        parts.append(f"decode {result.batch / result.decode_tokens_per_s:.4f} s/token ({low:.4f}-{high:.4f})")
    lines = [f"{predicted(result.gpu)}: {', '.join(parts)}; {'; '.join(result.speed_notes)}"] if parts else []
    lines += cards_needed_lines(result) + reserve_lines(result)
    calibration = result.calibration or {}
    if "unseen_bytes" in calibration:
        lines.append(f"calibration: {format_bytes(calibration['unseen_bytes'])} of kernel workspaces fake tensors "
                     f"cannot see, held from the first matmul on ({calibration.get('source', 'no source')})")
    return lines


def cards_needed_lines(result: Any) -> list[str]:
    """Weights that do not fit: how many of these cards they need at the least (their bytes over a
    card's usable memory; the context needs more: mom.plan finds the fewest that run it)."""
    if not (result.oom and (result.error or "").startswith("the weights do not fit") and result.device_limit_bytes):
        return []
    least = -(-result.weights_bytes // result.device_limit_bytes)
    return [f"the weights alone ({format_bytes(result.weights_bytes)}) need at least {least} of these cards: set GPUs "
            f"to {least} or more (mom.plan names the fewest that run this context)"]


def reserve_lines(result: Any) -> list[str]:
    """The allocator's reserve at its peak against the card: what runs out is the reserve (allocated
    plus cached blocks stranded by fragmentation), which the allocated peak alone does not show."""
    from ..simulate.plan import near_the_wall

    if result.oom or not getattr(result, "peak_reserved_bytes", 0):
        return []
    usable, reserved = result.device_limit_bytes, result.peak_reserved_bytes
    close = near_the_wall(usable, reserved)
    return [f"allocator reserve at its peak: {format_bytes(reserved)} of {format_bytes(usable)} usable "
            f"({format_bytes(max(usable - reserved, 0))} left"
            + ("; within 0.5 GiB of the card, the card's fragmentation can decide)" if close else ")")]


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
