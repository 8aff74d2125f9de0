"""Host <-> device copies of K/V on one side CUDA stream per handle (synchronous on CPU).

One stream per `mom.enable` handle, not per cache: pinned blocks pass from one cache to the
next through the handle's pool, and a block's last write-back must be ordered before its next
use. On one stream that order is the stream's own; the pool also keeps the event recorded after
a block's last copy and waits on it before lending the block again (engine/pinned.py).
"""

from __future__ import annotations

import torch


class SideStreamCopier:
    """Enqueues copies on a side stream, ordered after the work queued so far on the compute stream."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if self.cuda else None

    def copy(self, dst: torch.Tensor, src: torch.Tensor):
        """Enqueue dst.copy_(src); returns an event recorded after it (None on CPU).

        K/V views like host[..., :length, :] are not contiguous (capacity > length), and torch
        copies a non-contiguous host tensor through a staging buffer filled by the CPU at
        enqueue time, racing the asynchronous copies still queued. So the copy goes row by row
        over the (batch, head) rows, each a contiguous [tokens, head_dim] block: one direct
        cudaMemcpyAsync per row, ordered on the side stream.
        """
        if not self.cuda:
            dst.copy_(src)
            return None
        if not _rows_contiguous(src):  # e.g. K/V straight out of RoPE on a transposed view
            src = src.contiguous()
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            for dst_row, src_row in zip(_rows(dst), _rows(src)):
                dst_row.copy_(src_row, non_blocking=True)
        for tensor in (src, dst):
            if tensor.is_cuda:
                tensor.record_stream(self.stream)
        return self.event()

    def event(self):
        """An event recorded now on the side stream: every copy enqueued so far is before it."""
        if not self.cuda:
            return None
        event = torch.cuda.Event()
        event.record(self.stream)
        return event

    def wait(self, event) -> None:
        """Make the compute stream wait for `event` (no host wait)."""
        if event is not None:
            torch.cuda.current_stream(self.device).wait_event(event)

    def free_device_bytes(self) -> int | None:
        """Free device memory after giving the allocator's cached blocks back, within the
        process's memory fraction if one is set (None on CPU: no bound). The placement asks
        here, so a prediction (mom.simulate) can answer instead."""
        if not self.cuda:
            return None
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info(self.device)
        get_fraction = getattr(torch.cuda, "get_per_process_memory_fraction", None)  # torch >= 2.7
        fraction = get_fraction(self.device) if get_fraction is not None else 1.0
        if fraction < 1.0:  # torch.cuda.set_per_process_memory_fraction: the allocator's own cap
            free = min(free, max(0, int(fraction * total) - torch.cuda.memory_reserved(self.device)))
        return free

    def synchronize(self) -> None:
        """Wait on the host until every copy enqueued so far has finished."""
        if self.cuda:
            self.stream.synchronize()


def _rows_contiguous(tensor: torch.Tensor) -> bool:
    # [B, H, tokens, hd]: each (b, h) row is one contiguous block, and rows can be indexed flat
    b_stride, h_stride, t_stride, d_stride = tensor.stride()
    return d_stride == 1 and t_stride == tensor.shape[-1] and b_stride == h_stride * tensor.shape[1]


def _rows(tensor: torch.Tensor) -> list[torch.Tensor]:
    """The contiguous [tokens, head_dim] rows of a [B, H, tokens, head_dim] view."""
    if not _rows_contiguous(tensor):
        raise ValueError("K/V rows must be contiguous blocks")
    return list(tensor.flatten(0, 1).unbind(0))
