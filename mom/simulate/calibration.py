"""What fake tensors cannot see, calibrated once from committed H100 measurements.

Fake tensors show every tensor an op returns, not what a kernel allocates for itself. Seen from
`max_memory_allocated`, that is one block held for the whole run: cuBLAS's workspace (taken
through the caching allocator at the first matmul and kept), plus flash attention's and
generate()'s small buffers. mom's CUDA-vs-tracker comparison found a constant ~33 MiB
(benchmarks/NOTES.md, recorder overhead, llama-3.2-1b at 16k). Against the H100 runs of
llama-3.1-8b (benchmarks/results/history/2026-11-26_h100_offload_{128k_final,256k}.json, _mom_704k.json)
the fake-tensor peaks with no allowance are short by 31-64 MiB: -1 MiB for hf at 128k (peak in
an MLP), -8 MiB for mom at 704k, -63 MiB for mom's prefill at 128k and 256k (peak in the o_proj
pass after attention; what holds the second 32 MiB there is not identified). One constant of
64 MiB, held from the first matmul to the end, put every one of them within +0.1% / -0.01% with
the engine they were measured on (commit 690919e; tests/simulate/test_accuracy.py keeps what
still applies). Every prediction lists it in its `calibration`.

The "auto" offload budgets are not written out here: the engine's placement asks its copier for
free device memory, and the prediction answers from the allocator model (runner.py).
"""

from __future__ import annotations

from typing import Any

from .allocator import Block
from .probe import AllocatorProbe

MiB = 1 << 20
GiB = 1 << 30

UNSEEN_BYTES = 64 * MiB  # cuBLAS workspace and kernels' own buffers, held from the first matmul
UNSEEN_SOURCE = "H100 runs of llama-3.1-8b, benchmarks/results/history/2026-11-26_h100_*.json"


def hold_unseen(probe: AllocatorProbe) -> Block:
    """Allocate the unseen block on the probe's allocator; keep the returned block alive."""
    return probe.malloc(UNSEEN_BYTES)


def describe() -> dict[str, Any]:
    """The calibrated figures a prediction used, with their sources."""
    return {"unseen_bytes": UNSEEN_BYTES, "source": UNSEEN_SOURCE}
