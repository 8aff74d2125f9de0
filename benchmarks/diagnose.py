"""Micro-measurements behind the engine's choices (H100): decode attention on cache views,
bottom-right causal pieces, and whether background pinning slows the GPU stream."""

import json
import sys
import threading
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right
from torch.nn.functional import scaled_dot_product_attention as sdpa

from mom.engine.pinned import HostPool


def bench(fn, repeats=20):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def flash_ok(fn):
    try:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            fn()
        return True
    except RuntimeError:
        return False


def decode_layouts(S=131072):
    q = torch.randn(1, 32, 1, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, 8, S, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    buf_k = torch.randn(1, 8, S + 8192, 128, device="cuda", dtype=torch.bfloat16)
    buf_v = torch.randn_like(buf_k)
    kv, vv = buf_k[:, :, :S], buf_v[:, :, :S]
    out = {}
    for name, (kk, vvv) in {"contiguous": (k, v), "view_of_buffer": (kv, vv)}.items():
        f = lambda: sdpa(q, kk, vvv, enable_gqa=True)  # noqa: E731
        out[f"decode_{name}_ms"] = bench(f)
        out[f"decode_{name}_flash"] = flash_ok(f)
    rep = lambda t: t[:, :, None].expand(1, 8, 4, S, 128).reshape(1, 32, S, 128)  # noqa: E731
    out["decode_repeat_kv_ms"] = bench(lambda: sdpa(q, rep(k), rep(v)))
    out["decode_bytes_bound_ms"] = 2 * k.nbytes / 3.0e12 * 1e3
    return out


def prefill_pieces(S=131072, piece=4096):
    q = torch.randn(1, 32, S, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, 8, S, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    out = {"full_causal_ms": bench(lambda: sdpa(q, k, v, is_causal=True, enable_gqa=True), 3)}

    def pieces():
        for s in range(0, S, piece):
            e = s + piece
            qq = q[:, :, s:e]
            if s == 0:
                sdpa(qq, k[:, :, :e], v[:, :, :e], is_causal=True, enable_gqa=True)
            else:
                sdpa(qq, k[:, :, :e], v[:, :, :e], attn_mask=causal_lower_right(piece, e), enable_gqa=True)

    out["pieces_lower_right_ms"] = bench(pieces, 3)
    e = S // 2
    f = lambda: sdpa(q[:, :, e - piece : e], k[:, :, :e], v[:, :, :e], attn_mask=causal_lower_right(piece, e), enable_gqa=True)  # noqa: E731
    out["lower_right_flash"] = flash_ok(f)
    ref = sdpa(q[:, :, :e], k[:, :, :e], v[:, :, :e], is_causal=True, enable_gqa=True)[:, :, e - piece : e]
    out["lower_right_max_abs_diff"] = (f() - ref).abs().max().item()
    return out


def pinning_interference(gib=8):
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    work = lambda: [a @ a for _ in range(40)]  # noqa: E731
    alone = bench(work, 5)
    pool = HostPool(pin=True)
    pool.reserve([272 << 20] * (gib * 1024 // 272))
    start = time.perf_counter()
    during = bench(work, 5)
    launches = time.perf_counter() - start
    pool.clear()
    return {"matmul_alone_ms": alone, "matmul_while_pinning_ms": during, "wall_s_while_pinning": launches}


if __name__ == "__main__":
    results = {"card": torch.cuda.get_device_name()}
    for part in (decode_layouts, prefill_pieces, pinning_interference):
        results.update(part())
        torch.cuda.empty_cache()
        print(json.dumps(results), flush=True)
    if len(sys.argv) > 1:
        open(sys.argv[1], "w").write(json.dumps(results, indent=1))
