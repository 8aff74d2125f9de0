"""The Probe interface and nested peak watches: exact high-water marks across resets.

A `Probe` answers four questions about the compute device: bytes allocated now, the
high-water mark since the last reset, bytes reserved, and the limit. Backends: cuda.py (the
caching allocator's counters) and tracker.py (tensor accounting on CPU).

Peaks nest. Measuring the peak inside a module means resetting the device counter at its
start, which would hide the peak of the enclosing module from before that point. Every reset
goes through `Probe.reset_peak`, which first folds the current peak into every open `Watch`,
so nested watches (run, layer, attention, piece) and several recorders on one probe stay exact.
"""

from __future__ import annotations

import contextlib

import torch


class Watch:
    """The high-water mark of a probe's device bytes since this watch was opened.

    start_bytes: allocated at opening; end_bytes / end_reserved: allocated and reserved at
    closing (one read of the counters serves the peak and both).
    """

    def __init__(self, probe: Probe):
        self._probe = probe
        self._open = True
        self.start_bytes = self._max = probe.reset_peak()  # folds the peak so far into enclosing watches
        self.end_bytes = self.end_reserved = self.start_bytes
        probe._watches.append(self)

    def _fold(self, value: int) -> None:
        if value > self._max:
            self._max = value

    @property
    def peak(self) -> int:
        """Peak since opening (reading folds in the probe's current peak)."""
        if self._open:
            self._fold(self._probe.sample()[1])
        return self._max

    def close(self) -> int:
        """Stop watching; returns the final peak."""
        if self._open:
            self.end_bytes, peak, self.end_reserved = self._probe.sample()
            self._fold(peak)
            self._open = False
            with contextlib.suppress(ValueError):
                self._probe._watches.remove(self)
        return self._max


class Probe:
    """Device memory counters. Subclasses implement the `_raw_*` methods.

    `backend` names where numbers come from; `limit` is the device bytes available (None:
    unknown); `device` is the compute device measured.
    """

    backend = "none"

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self._watches: list[Watch] = []

    def allocated(self) -> int:
        """Device bytes allocated now."""
        raise NotImplementedError

    def reserved(self) -> int:
        """Device bytes reserved by the allocator (equal to allocated for the tracker)."""
        return self.allocated()

    def host_allocated(self) -> int:
        """Host bytes this backend can see (pinned host memory, or the tracker's host tier)."""
        return 0

    def host_peak(self) -> int:
        """High-water mark of `host_allocated` since the last `reset_host_peak`."""
        return self.host_allocated()

    def reset_host_peak(self) -> None:
        """Restart the host high-water mark."""

    @property
    def limit(self) -> int | None:
        return None

    @property
    def device_name(self) -> str:
        return str(self.device)

    def peak(self) -> int:
        """Device high-water mark since the last `reset_peak`."""
        return self._raw_peak()

    def sample(self) -> tuple[int, int, int]:
        """(allocated, peak since the last reset, reserved), read together (cheaply, where possible)."""
        return self.allocated(), self._raw_peak(), self.reserved()

    def reset_peak(self) -> int:
        """Restart the high-water mark from the current allocation, folding it into open watches.

        Returns the bytes allocated now.
        """
        allocated, peak, _ = self.sample()
        for watch in self._watches:
            watch._fold(peak)
        self._raw_reset()
        return allocated

    def watch(self) -> Watch:
        """Open a `Watch`: the peak from now on, exact across nested resets."""
        return Watch(self)

    def synchronize(self) -> None:
        """Wait for the device (only timing asks for this)."""

    def free_cached(self) -> None:
        """Give cached, unused device memory back (after an OOM)."""

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def _raw_peak(self) -> int:
        raise NotImplementedError

    def _raw_reset(self) -> None:
        raise NotImplementedError
