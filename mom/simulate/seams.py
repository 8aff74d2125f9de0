"""Where mom's engine meets the simulator: what a prediction changes in the engine, and how.

mom.predict runs the engine's own code (runner.py); these are the only places it differs from a
measured run, each an instance-level substitution or a context variable, set for one prediction
and undone after it, never a patched class:

- the handle's pinned host pool becomes `FakeHostPool`, which makes host-tier tensors without data
  (the real pool keys blocks by data pointer, which fake tensors do not have) and checks host RAM
  against the `host_bytes` asked for, where the engine checks it;
- the handle's copier answers "how much device memory is free?" (offload="auto" places layers by
  it, before prefill and after) from the allocator model instead of CUDA;
- the engine's piece loops run a sample of their pieces when a search asks (`pieces`);
- the engine's log records go to the Prediction's notes (`engine_warnings`): a plan's search runs
  dozens of predictions, and a warning of each would bury the user's log.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from ..engine.host_guard import HOST_RAM_MARGIN, HostMemoryError
from ..engine.minisequence import PIECE_SAMPLE
from ..memory.events import format_bytes
from .devices import ImitatedDevices
from .probe import AllocatorProbe


def sample_pieces(bounds: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The pieces a sampled prediction runs: the first three and the last. On tensors without data
    every full piece issues the same ops on the same shapes, and from the second piece on the
    allocator is left as the piece found it (tests/simulate/test_sampled_pieces.py checks peaks,
    reserve, OOM and speed against every piece); the last may be shorter."""
    return bounds if len(bounds) <= 4 else [*bounds[:3], bounds[-1]]


@contextlib.contextmanager
def pieces(every_piece: bool):
    """Inside the block, the engine's piece loops (minisequence.piece_bounds) run `sample_pieces`
    unless every piece is asked for; set for this thread's context only, and always reset."""
    if every_piece:
        yield
        return
    token = PIECE_SAMPLE.set(sample_pieces)
    try:
        yield
    finally:
        PIECE_SAMPLE.reset(token)


@contextlib.contextmanager
def engine_warnings(notes: list[str]):
    """The engine's log records go to `notes` inside the block, not to the user's log."""
    engine = logging.getLogger("mom.engine")

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            notes.append(record.getMessage())

    handler, propagate = Keep(logging.INFO), engine.propagate
    engine.addHandler(handler)
    engine.propagate = False
    try:
        yield notes
    finally:
        engine.removeHandler(handler)
        engine.propagate = propagate


class FakeHostPool:
    """The HostPool interface on shape-only tensors: every block is a new host-tier tensor.

    The engine's host-RAM guard adds this pool's `free_bytes` to this machine's available RAM;
    unbounded, it always passes. The real check against `host_bytes` is made in `reserve`, which
    the engine calls right after its guard with exactly the host blocks the guard counted (only
    the layers placed on the host), with the guard's margin.
    """

    free_bytes = 1 << 62

    def __init__(self, probe: AllocatorProbe, host_bytes: int | None):
        self.probe, self.host_bytes = probe, host_bytes

    def reserve(self, sizes) -> None:
        needed = sum(sizes)
        if self.host_bytes is not None and needed > HOST_RAM_MARGIN * self.host_bytes:
            raise HostMemoryError(
                f"offloading the KV cache needs {format_bytes(needed)} of host RAM, but only "
                f"{format_bytes(self.host_bytes)} is available, {HOST_RAM_MARGIN:.0%} usable (predicted)")

    def lend(self, shape, dtype: torch.dtype, owner: int = 0) -> torch.Tensor:
        with self.probe.host_tier():
            return torch.empty(shape, dtype=dtype, device="meta")

    def take_back(self, view: torch.Tensor, after=None) -> None:
        return None

    def take_back_all(self, owner: int, after=None) -> None:
        return None

    def clear(self) -> None:
        return None


def use_fake_host_pool(handle, probe: AllocatorProbe, host_bytes: int | None) -> None:
    offload = getattr(handle, "offload", None)
    if offload is not None:
        for lane in offload.lanes:  # one pool per device (engine/lanes.py); a fake model has one
            lane.pool = FakeHostPool(probe, host_bytes)


def answer_free_memory(handle, probe: AllocatorProbe, devices: ImitatedDevices | None = None) -> None:
    """The engine's placement asks its copier for free device memory (engine/placement.py);
    here the allocator model answers, as CUDA would after empty_cache(): each lane its own card's."""
    offload = getattr(handle, "offload", None)
    if offload is not None:
        for lane in offload.lanes:
            mine = devices.probe_of(lane.device) if devices else probe
            lane.copier.free_device_bytes = lambda p=mine: _free_after_emptying(p)


def _free_after_emptying(probe: AllocatorProbe) -> int:
    probe.free_cached()
    return probe.allocator.capacity - probe.allocator.reserved
