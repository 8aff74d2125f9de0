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

The "auto" offload budgets (before prefill: layers placed on the GPU; after it: layers brought
back) are the engine's formulas (engine/placement.py) with the allocator model standing in for
torch.cuda.empty_cache() and mem_get_info(): on the CPU the engine has no free memory to ask
and keeps everything resident, so these are written out here and must follow the engine's.
"""

from __future__ import annotations

from typing import Any

from .allocator import Block
from .probe import AllocatorProbe

MiB = 1 << 20
GiB = 1 << 30

UNSEEN_BYTES = 64 * MiB  # cuBLAS workspace and kernels' own buffers, held from the first matmul
UNSEEN_SOURCE = "H100 runs of llama-3.1-8b, benchmarks/results/history/2026-11-26_h100_*.json"

# engine/placement.py gpu_kv_budget: two stream slots + 1 GiB of a step's working set, 92% of the rest
AUTO_WORKING_SET_BYTES = 1 * GiB
AUTO_BUDGET_SHARE = 0.92


def hold_unseen(probe: AllocatorProbe) -> Block:
    """Allocate the unseen block on the probe's allocator; keep the returned block alive."""
    return probe.malloc(UNSEEN_BYTES)


def auto_budget(probe: AllocatorProbe, per_layer: int) -> int:
    """Bytes of K/V that offload="auto" keeps on the GPU, as the engine computes them on CUDA."""
    probe.free_cached()
    free = probe.allocator.capacity - probe.allocator.reserved
    working_set = 2 * per_layer + AUTO_WORKING_SET_BYTES
    return max(0, int((free - working_set) * AUTO_BUDGET_SHARE))


def prefill_budget(probe: AllocatorProbe, model_config, dtype, batch: int, seq_len: int) -> int:
    """Bytes of K/V that offload="auto" places on the GPU before prefill, as the engine computes them
    on CUDA (engine/placement.py, _free_for_kv_before_prefill)."""
    from ..engine import placement

    _, kv_heads, head_dim = _geometry(model_config)
    per_layer = 2 * batch * kv_heads * (seq_len + _growth(seq_len)) * head_dim * dtype.itemsize
    probe.free_cached()
    free = probe.allocator.capacity - probe.allocator.reserved
    copies = getattr(placement, "PREFILL_HIDDEN_COPIES", 6)
    transients = copies * batch * seq_len * model_config.hidden_size * dtype.itemsize
    working_set = 2 * per_layer + AUTO_WORKING_SET_BYTES
    return max(0, int((free - transients - working_set) * AUTO_BUDGET_SHARE))


def _geometry(model_config):
    from ..engine.families import kv_geometry_of_config

    return kv_geometry_of_config(model_config)


def _growth(length: int) -> int:
    from ..engine.cache import growth

    return growth(length)


def describe() -> dict[str, Any]:
    """The calibrated figures a prediction used, with their sources."""
    return {"unseen_bytes": UNSEEN_BYTES, "source": UNSEEN_SOURCE}
