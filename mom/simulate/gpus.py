"""The GPU table: what a prediction needs to know about a card.

Per card: the device memory torch reports (`total_memory`), HBM bandwidth, dense bf16 tensor
throughput and the pinned host<->device bandwidth. Figures are vendors' published numbers
except where measured (H100: 79.18 GiB reported, 55.5 GB/s pinned each way; H200: 139.80 GiB,
benchmarks/results/history/2026-11-26_h100_offload_128k_final.json). `context_bytes` is memory the
process holds outside PyTorch's allocator (CUDA context, kernels, cuBLAS handles): 0.74 GiB,
read off the two H100 out-of-memory messages in benchmarks/results (capacity minus "this
process has ... in use" plus "reserved by PyTorch"); it is assumed the same on every card.
A desktop card that also drives a display has less: pass a custom size for it.
`cudnn_sdpa_first`: torch's sdpa tries cuDNN first on this card (Hopper, with torch 2.11 and a
recent cuDNN), so transformers' own eager decode pays cuDNN's plan for every new key length
(calibration.cold_cost); on the other cards sdpa starts with flash.

Bandwidths are in bytes per second (10^9 = GB/s), memory in bytes (GiB = 2^30).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

GiB = 1 << 30
CONTEXT_BYTES = int(0.74 * GiB)


@dataclass(frozen=True)
class GPU:
    """One card. `usable_bytes` is what PyTorch's allocator may reserve."""

    name: str
    total_bytes: int
    hbm_bytes_per_s: float
    bf16_flops: float
    host_link_bytes_per_s: float
    context_bytes: int = CONTEXT_BYTES
    note: str = ""
    cudnn_sdpa_first: bool = False  # module docstring

    @property
    def usable_bytes(self) -> int:
        return self.total_bytes - self.context_bytes

    def with_memory(self, total_bytes: int) -> GPU:
        """The same card's speeds with another memory size (a custom card)."""
        return replace(self, name=f"custom-{total_bytes / GiB:g}GiB", total_bytes=total_bytes,
                       note=f"{self.name} speeds, {total_bytes / GiB:g} GiB")


GPUS: dict[str, GPU] = {g.name: g for g in [
    GPU("H100-80GB", 85_017_853_952, 3.35e12, 989e12, 55.5e9, note="SXM, HBM3; memory and host link measured",
        cudnn_sdpa_first=True),
    GPU("H200-141GB", 150_107_062_272, 4.8e12, 989e12, 55e9, note="SXM, HBM3e; memory measured",
        cudnn_sdpa_first=True),
    GPU("A100-80GB", 85_097_971_712, 2.039e12, 312e12, 25e9, note="SXM, HBM2e, PCIe 4"),
    GPU("A100-40GB", 42_505_273_344, 1.555e12, 312e12, 25e9, note="SXM, HBM2, PCIe 4"),
    GPU("L40S-48GB", 47_697_362_944, 0.864e12, 362e12, 25e9, note="GDDR6, PCIe 4"),
    GPU("RTX-4090-24GB", 25_393_692_672, 1.008e12, 165e12, 25e9, note="GDDR6X, PCIe 4, fp32 accumulate"),
    GPU("A10G-24GB", 23_836_098_560, 0.6e12, 70e12, 16e9, note="GDDR6, PCIe 4 (AWS g5)"),
]}

_SIZE = re.compile(r"^(?:custom[-:]?)?\s*(\d+(?:\.\d+)?)\s*(gib|gb|g)?$", re.IGNORECASE)


def resolve_gpu(gpu: str | int | GPU) -> GPU:
    """A GPU from a table name ("H100-80GB", case-insensitive), a size ("24GiB", "custom-24GiB",
    or bytes as an int), or a GPU. A custom size keeps the H100's speeds.

    Raises:
        ValueError: an unknown name; the message lists the table.
    """
    if isinstance(gpu, GPU):
        return gpu
    if isinstance(gpu, int) and not isinstance(gpu, bool):
        return GPUS["H100-80GB"].with_memory(gpu)
    for name, card in GPUS.items():
        if name.lower() == str(gpu).lower():
            return card
    match = _SIZE.match(str(gpu).strip())
    if match:
        return GPUS["H100-80GB"].with_memory(int(float(match.group(1)) * GiB))
    raise ValueError(f"unknown GPU {gpu!r}; known: {', '.join(GPUS)}, or a size such as 'custom-24GiB'")
