"""Out-of-memory classification: which wall a run hit, and the allocation that hit it.

`profile()` treats running out of memory as a result. Two walls exist:
- "device": the compute device is full. torch.OutOfMemoryError on CUDA, the tensor tracker's
  pretend limit on CPU (a subclass of it), or an older RuntimeError that says "out of memory".
- "host": host RAM is too small: mom's host-RAM guard (`engine.cache.HostMemoryError`), a
  failed pin, or Python's own MemoryError.
The failing request's size comes from the tracker's exception when it raised it (exact),
else from the CUDA allocator's message ("Tried to allocate 2.00 GiB", rounded to 2 digits).
"""

from __future__ import annotations

import re

import torch

from .events import GiB, KiB, MiB

_UNITS = {"B": 1, "bytes": 1, "KiB": KiB, "MiB": MiB, "GiB": GiB, "TiB": GiB << 10}
_REQUEST = re.compile(r"Tried to allocate ([0-9.]+) ?(TiB|GiB|MiB|KiB|bytes|B)\b")


class TrackerOutOfMemoryError(torch.OutOfMemoryError):
    """The tensor tracker's pretend device limit was hit; carries the exact numbers.

    Attributes:
        requested_bytes: the allocation that did not fit.
        allocated_bytes: device bytes in use when it was asked for.
        limit_bytes: the pretend limit.
    """

    def __init__(self, message: str, requested_bytes: int, allocated_bytes: int, limit_bytes: int):
        super().__init__(message)
        self.requested_bytes = requested_bytes
        self.allocated_bytes = allocated_bytes
        self.limit_bytes = limit_bytes


def oom_kind(error: BaseException) -> str | None:
    """'device', 'host', or None when the error is not an out-of-memory error."""
    if isinstance(error, torch.OutOfMemoryError):
        return "device"
    if isinstance(error, MemoryError):  # HostMemoryError, a failed pin, Python's own
        return "host"
    if isinstance(error, RuntimeError) and "out of memory" in str(error).lower():
        return "device"
    return None


def requested_bytes(error: BaseException) -> int | None:
    """Bytes of the allocation that failed, when the error tells."""
    exact = getattr(error, "requested_bytes", None)
    if exact is not None:
        return int(exact)
    match = _REQUEST.search(str(error))
    return int(float(match.group(1)) * _UNITS[match.group(2)]) if match else None


def allocated_at_failure(error: BaseException) -> int | None:
    """Device bytes in use when the allocation failed, when the error tells (tracker only)."""
    value = getattr(error, "allocated_bytes", None)
    return None if value is None else int(value)
