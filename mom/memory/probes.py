"""Where memory numbers come from: pick the probe for a model.

A `Probe` (peaks.py) answers: bytes allocated now, the high-water mark, bytes reserved, the
limit. Two backends, re-exported here so callers need one import:
- `CudaProbe` (cuda.py) reads the CUDA caching allocator's counters; one shared probe per
  device (`cuda_probe`), since recorders on one device must share it to nest their peaks.
- `TensorTracker` (tracker.py) counts live tensor bytes on CPU, with a pretend device limit
  that raises the same `torch.OutOfMemoryError` a GPU would: the OOM wall without a GPU.
The modules import one way: peaks <- cuda, tracker <- probes (no cycle).
"""

from __future__ import annotations

import torch

from .cuda import CudaProbe, cuda_probe, max_memory_allocated
from .peaks import Probe, Watch
from .tracker import TensorTracker, _model_device, active_tracker


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


__all__ = ["CudaProbe", "Probe", "TensorTracker", "Watch", "active_tracker", "cuda_probe", "default_probe",
           "max_memory_allocated"]
