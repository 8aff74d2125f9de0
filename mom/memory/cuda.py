"""CudaProbe: the CUDA caching allocator's counters of one device; reading them never synchronizes.

The counters are host-side bookkeeping, so the recorder can read them at every module
boundary (one nested-stats read, ~12 us). The peak counter is process-wide and can only be
reset, never set: per-module peaks need a reset at every hooked call (peaks.py), and that
resets what `torch.cuda.max_memory_allocated` tells everyone else. What mom does about it:
- A run without a recorder (`profile(..., record=False)`) resets it once, at the start.
- A recorder resets it at every hooked call: unavoidable for per-module peaks.
- Every reset first folds the peak it erases into a per-device high-water mark, so
  `max_memory_allocated(device)` answers what `torch.cuda.max_memory_allocated` would have
  answered had mom never reset it (since the user's own last reset).
"""

from __future__ import annotations

import contextlib

import torch

from .peaks import Probe

# per device: the largest peak that a mom reset erased (see max_memory_allocated)
_HIGH_WATER: dict[torch.device, int] = {}


class CudaProbe(Probe):
    """CUDA caching-allocator statistics of one device; reading them never synchronizes.

    Note: `reset_peak` resets the device's peak statistics (torch.cuda.max_memory_allocated)
    for everyone (once per unrecorded run, at every hooked call while a recorder records; see
    the module docstring). Use a recorder's `peak_bytes` or a Profile's `peak_gpu_bytes` for a
    run, and `max_memory_allocated(device)` for the process-wide mark mom's resets erased.
    """

    backend = "cuda"

    def __init__(self, device: torch.device | str | int | None = None):
        device = torch.device("cuda", torch.cuda.current_device()) if device is None else torch.device(device)
        if device.type != "cuda":
            raise ValueError(f"CudaProbe measures a CUDA device, got {device}")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        super().__init__(device)
        self._sampled_peak = 0

    def allocated(self) -> int:
        return self.sample()[0]

    def reserved(self) -> int:
        return self.sample()[2]

    def sample(self) -> tuple[int, int, int]:
        # torch.cuda.memory_allocated & co. flatten every allocator statistic into a new dict
        # (~0.2 ms a call); the nested dict they start from costs ~12 us and holds all three.
        stats = _nested_cuda_stats(self.device)
        allocated, reserved = stats["allocated_bytes"]["all"], stats["reserved_bytes"]["all"]
        self._sampled_peak = allocated["peak"]  # reset_peak samples, then resets: no second read
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
        erased = self._sampled_peak
        _HIGH_WATER[self.device] = max(_HIGH_WATER.get(self.device, 0), erased)
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


def max_memory_allocated(device: torch.device | str | int | None = None) -> int:
    """The device's allocated-bytes high-water mark as if mom had never reset it.

    That is `torch.cuda.max_memory_allocated(device)` folded with every peak that a mom probe
    erased when it reset the statistic (since the process started; a reset of your own via
    torch.cuda.reset_peak_memory_stats is not seen, so the answer can be older than it).
    """
    probe = cuda_probe(device)
    return max(_HIGH_WATER.get(probe.device, 0), probe.peak())
