"""Where memory numbers come from: CUDA allocator statistics, or a tensor-accounting tracker.

A `Probe` answers four questions about the compute device: bytes allocated now, the
high-water mark since the last reset, bytes reserved, and the limit. Two backends:

- `CudaProbe` reads the caching allocator's counters. They are host-side bookkeeping, so
  reading them never synchronizes the device: the recorder can ask at every module boundary.
- `TensorTracker` counts live tensor bytes itself, with a `TorchDispatchMode` that sees every
  op's outputs. It gives the same recorder, plots and notebooks real numbers without a GPU, and
  its `limit_bytes` raises the very `torch.OutOfMemoryError` a GPU would, so OOM handling and
  maximum-context search can be taught and tested on a laptop.

Tracker accounting, and why it is right:
- A tensor is counted by its *storage* (untyped storage, keyed by its C++ address), once:
  views share a storage and cost nothing; in-place and `out=` ops return an input's storage.
  An op output whose storage is also an input's (a view of a tensor made before tracking) is
  not an allocation either.
- Storage Python objects are preserved by torch for as long as the C++ storage lives, so a
  weak reference to one fires exactly when the memory is freed; that is where bytes are given
  back. Freed means freed: the MLP intermediates disappear when the MLP returns.
- The model's parameters and buffers are counted at construction as the weights baseline.
- A tensor on another device than the tracked one (pinned host KV of a CUDA model), or made
  inside `host_tier()`, counts as host memory. The KV cache enters `host_tier()` through the
  optional `mom.engine.cache.HOST_TIER_CONTEXTS` list, so the engine never imports this module.
- What a kernel allocates and frees inside one op (workspace) is invisible to the tracker.

Peaks nest. Measuring the peak inside a module means resetting the device counter at its
start, which would hide the peak of the enclosing module from before that point. Every reset
goes through `Probe.reset_peak`, which first folds the current peak into every open `Watch`,
so nested watches (run, layer, attention, piece) and several recorders on one probe stay exact.
"""

from __future__ import annotations

import contextlib
import logging

import torch

logger = logging.getLogger(__name__)


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


class CudaProbe(Probe):
    """CUDA caching-allocator statistics of one device; reading them never synchronizes.

    Note: `reset_peak` resets the device's peak statistics (torch.cuda.max_memory_allocated)
    for everyone; use a recorder's `peak_bytes`, which is exact across resets.
    """

    backend = "cuda"

    def __init__(self, device: torch.device | str | int | None = None):
        device = torch.device("cuda", torch.cuda.current_device()) if device is None else torch.device(device)
        if device.type != "cuda":
            raise ValueError(f"CudaProbe measures a CUDA device, got {device}")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        super().__init__(device)

    def allocated(self) -> int:
        return self.sample()[0]

    def reserved(self) -> int:
        return self.sample()[2]

    def sample(self) -> tuple[int, int, int]:
        # torch.cuda.memory_allocated & co. flatten every allocator statistic into a new dict
        # (~0.2 ms a call); the nested dict they start from costs ~12 us and holds all three.
        stats = _nested_cuda_stats(self.device)
        allocated, reserved = stats["allocated_bytes"]["all"], stats["reserved_bytes"]["all"]
        return allocated["current"], allocated["peak"], reserved["current"]

    def host_allocated(self) -> int:
        """Pinned host memory of torch's caching host allocator (memory pinned with
        cudaHostRegister, as mom's host pool does, is not in it: the recorder's KV host bytes are)."""
        return self._host_stat("allocated_bytes.current")

    def host_peak(self) -> int:
        return self._host_stat("allocated_bytes.peak")

    def reset_host_peak(self) -> None:
        reset = getattr(torch.cuda, "reset_peak_host_memory_stats", None)
        if reset is not None:
            reset()

    @staticmethod
    def _host_stat(name: str) -> int:
        stats = getattr(torch.cuda, "host_memory_stats", None)
        if stats is None:
            return 0
        with contextlib.suppress(Exception):
            return int(stats().get(name, 0))
        return 0

    @property
    def limit(self) -> int:
        """Total device memory times the per-process fraction, when torch can tell it."""
        total = torch.cuda.get_device_properties(self.device).total_memory
        fraction = getattr(torch.cuda, "get_per_process_memory_fraction", None)
        return int(total * fraction(self.device)) if fraction is not None else total

    @property
    def device_name(self) -> str:
        return torch.cuda.get_device_name(self.device)

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)

    def free_cached(self) -> None:
        torch.cuda.empty_cache()

    def _raw_peak(self) -> int:
        return self.sample()[1]

    def _raw_reset(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.device)


def _nested_cuda_stats(device: torch.device) -> dict:
    fast = getattr(torch._C, "_cuda_memoryStats", None)
    if fast is not None:
        return fast(device.index)
    return torch.cuda.memory_stats_as_nested_dict(device)


_CUDA_PROBES: dict[torch.device, CudaProbe] = {}


def cuda_probe(device: torch.device | str | int | None = None) -> CudaProbe:
    """The shared CudaProbe of a device: recorders on one device must share it to nest peaks."""
    probe = CudaProbe(device)
    return _CUDA_PROBES.setdefault(probe.device, probe)


def default_probe(model: torch.nn.Module, limit_bytes: int | None = None) -> Probe:
    """The probe for a model: the shared CudaProbe of its CUDA device, else a new TensorTracker.

    Raises:
        ValueError: limit_bytes on a CUDA model (cap CUDA with
            torch.cuda.set_per_process_memory_fraction, or pass a TensorTracker).
    """
    device = _model_device(model)
    if device.type == "cuda":
        if limit_bytes is not None:
            raise ValueError(
                "limit_bytes applies to the CPU tensor tracker; on CUDA cap memory with "
                "torch.cuda.set_per_process_memory_fraction, or pass probe=TensorTracker(model, limit_bytes=...)"
            )
        return cuda_probe(device)
    return TensorTracker(model, limit_bytes=limit_bytes)


# The tracker lives in its own module; it subclasses Probe, so it is imported after it.
from .tracker import TensorTracker, _model_device, active_tracker  # noqa: E402

__all__ = ["CudaProbe", "Probe", "TensorTracker", "Watch", "active_tracker", "cuda_probe", "default_probe"]
