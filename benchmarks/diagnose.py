"""Micro-measurements behind the engine's choices (H100): decode attention on cache views,
bottom-right causal pieces, and whether background pinning slows the GPU stream."""

import json
import sys
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
        f = lambda: sdpa(q, kk, vvv, enable_gqa=True)  # noqa: E731, B023
        out[f"decode_{name}_ms"] = bench(f)
        out[f"decode_{name}_flash"] = flash_ok(f)
    rep = lambda t: t[:, :, None].expand(1, 8, 4, S, 128).reshape(1, 32, S, 128)  # noqa: E731
    out["decode_repeat_kv_ms"] = bench(lambda: sdpa(q, rep(k), rep(v)))
    out["decode_bytes_bound_ms"] = 2 * k.nbytes / 3.0e12 * 1e3
    return out


def prefill_pieces(S=131072, piece=4096, extra_sizes=(8192, 16384, 32768)):
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
    for size in extra_sizes:
        def sized(size=size):
            for s in range(0, S, size):
                e = s + size
                mask = None if s == 0 else causal_lower_right(size, e)
                sdpa(q[:, :, s:e], k[:, :, :e], v[:, :, :e], attn_mask=mask, is_causal=s == 0, enable_gqa=True)
        out[f"pieces_{size}_ms"] = bench(sized, 3)
    # precision: lower-right piece vs an fp32 reference, next to full causal flash vs the same reference
    e = 16384
    qs, ks, vs = (t[:, :, :e].float() for t in (q, k, v))
    reference = sdpa(qs, ks, vs, is_causal=True, enable_gqa=True)[:, :, e - piece : e]
    full = sdpa(q[:, :, :e], k[:, :, :e], v[:, :, :e], is_causal=True, enable_gqa=True)[:, :, e - piece : e].float()
    piece_out = sdpa(q[:, :, e - piece : e], k[:, :, :e], v[:, :, :e], attn_mask=causal_lower_right(piece, e), enable_gqa=True).float()
    norm = reference.norm()
    out["full_causal_rel_error"] = ((full - reference).norm() / norm).item()
    out["lower_right_rel_error"] = ((piece_out - reference).norm() / norm).item()
    e = S // 2
    f = lambda: sdpa(q[:, :, e - piece : e], k[:, :, :e], v[:, :, :e], attn_mask=causal_lower_right(piece, e), enable_gqa=True)  # noqa: E731
    out["lower_right_flash"] = flash_ok(f)
    ref = sdpa(q[:, :, :e], k[:, :, :e], v[:, :, :e], is_causal=True, enable_gqa=True)[:, :, e - piece : e]
    out["lower_right_max_abs_diff"] = (f() - ref).abs().max().item()
    return out


def pinning_interference(gib=4):
    """Pin `gib` in the background while the main thread launches small kernels: how long is
    the main thread held up, and how fast does the pool pin? (The earlier ctypes and no-prefault
    methods were measured against this one and dropped: benchmarks/NOTES.md.)"""
    a = torch.randn(2048, 2048, device="cuda", dtype=torch.bfloat16)
    out = {}
    n = gib * 1024 // 272
    for method in ("prefault",):
        pool = HostPool(pin=True)
        start = time.perf_counter()
        pool.reserve([272 << 20] * n)
        launches = 0
        while pool._pending and not all(f.done() for _, f in pool._pending):
            a @ a
            torch.cuda.synchronize()
            launches += 1
        pin_s = time.perf_counter() - start
        out[f"pin_{method}_gib_per_s"] = n * 272 / 1024 / pin_s
        out[f"pin_{method}_main_thread_steps_per_s"] = launches / pin_s
        pool.clear()
    start = time.perf_counter()
    steps = 0
    while time.perf_counter() - start < 1.0:
        a @ a
        torch.cuda.synchronize()
        steps += 1
    out["idle_main_thread_steps_per_s"] = steps / (time.perf_counter() - start)
    return out


if __name__ == "__main__":
    results = {"card": torch.cuda.get_device_name()}
    for part in (decode_layouts, prefill_pieces, pinning_interference):
        results.update(part())
        torch.cuda.empty_cache()
        print(json.dumps(results), flush=True)
    if len(sys.argv) > 1:
        open(sys.argv[1], "w").write(json.dumps(results, indent=1))
