"""What a Prediction rests on, in words: the card it is for, its speed ranges, the calibration it
used, the allocator's reserve against the card, and how many cards weights too big need.

A predicted bar cannot be told from a measured one by looking, so wherever a prediction is shown
(the Explorer's simulate mode, `mom predict`) these lines go with it.
"""

from __future__ import annotations

from typing import Any

from ..memory.events import format_bytes
from .gpus import GPU


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
    return [f"the weights alone ({format_bytes(result.weights_bytes)}) need at least {least} of these cards: "
            f"{least} or more GPUs (mom.plan names the fewest that run this context)"]


def reserve_lines(result: Any) -> list[str]:
    """The allocator's reserve at its peak against the card: what runs out is the reserve (allocated
    plus cached blocks stranded by fragmentation), which the allocated peak alone does not show."""
    from .plan import near_the_wall

    if result.oom or not getattr(result, "peak_reserved_bytes", 0):
        return []
    usable, reserved = result.device_limit_bytes, result.peak_reserved_bytes
    close = near_the_wall(usable, reserved)
    return [f"allocator reserve at its peak: {format_bytes(reserved)} of {format_bytes(usable)} usable "
            f"({format_bytes(max(usable - reserved, 0))} left"
            + ("; within 0.5 GiB of the card, the card's fragmentation can decide)" if close else ")")]
