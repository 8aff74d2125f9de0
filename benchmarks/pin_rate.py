"""How fast can this host pin memory? torch's pinned allocator vs cudaHostRegister of exact sizes."""

import json
import sys
import time

import torch

from mom.engine.pinned import HostPool

GiB = 2**30


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(total_gib: int = 8, block_mib: int = 272):
    n_blocks = total_gib * 1024 // block_mib
    results = {}
    blocks, t = timed(lambda: [torch.empty(block_mib << 20, dtype=torch.uint8, pin_memory=True) for _ in range(n_blocks)])
    results["torch_pin_memory_gib_per_s"] = n_blocks * block_mib / 1024 / t
    results["torch_host_allocated_gib"] = torch.cuda.host_memory_stats().get("allocated_bytes.current", 0) / GiB
    del blocks
    pool = HostPool(pin=True)
    _, t = timed(lambda: [pool.take((block_mib << 20,), torch.uint8) for _ in range(n_blocks)])
    results["host_register_gib_per_s"] = n_blocks * block_mib / 1024 / t
    pool.clear()
    pool = HostPool(pin=True)
    pool.reserve([block_mib << 20] * n_blocks)
    _, t = timed(lambda: [pool.take((block_mib << 20,), torch.uint8) for _ in range(n_blocks)])
    results["background_register_gib_per_s"] = n_blocks * block_mib / 1024 / t
    pool.clear()
    results.update(total_gib=total_gib, block_mib=block_mib)
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    out = main()
    if len(sys.argv) > 1:
        open(sys.argv[1], "w").write(json.dumps(out, indent=1))
