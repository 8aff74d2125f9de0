"""Fused Triton kernels for the graph decode step (engine/graph_decode.py): bf16 on CUDA.

Why: inside a CUDA graph, one decode step of an 8B model costs the time to read the weights
plus about 2.7 us for each of its kernels. With torch's own kernels a Llama layer launches
about 29 (benchmarks/NOTES.md, 2026-12-07). Each kernel here replaces several of them:

- `add_rms_norm`: the residual add and the next RMSNorm (Llama's code: fp32 mean of squares,
  rsqrt, cast back, times the weight), 5 kernels in one, twice a layer;
- `rope_write`: RoPE on q and k, and k and v written into the K/V buffers at the step's slot,
  8 kernels in one;
- `silu_mul`: SiLU of the gate times the up projection, 2 kernels in one.

That leaves a Llama layer with 12 kernels: 7 matrix products, the attention, and these 4.

Exactness: each kernel rounds to bf16 where the code it replaces rounds (after the add, after
the normalization, after the weight; after each product of RoPE and after their sum; after
SiLU and after the product), with round-to-nearest-even done by integer arithmetic in
`_round_bf16`, so Triton's CPU interpreter (TRITON_INTERPRET=1, which truncates on a cast)
gives the same bits as the GPU. RoPE and the residual add are bit for bit the torch results.
The norm's mean sums in another order and SiLU's exp is Triton's (its division is IEEE's, as
torch's), so those two may differ from torch in the last bit of a rare element: the bf16 criterion (tests/engine/test_gpu.py) covers
them. The decode step checks every kernel against its torch version on the device once per
handle and uses the torch version where a check fails (`graph_decode.StepKernels`).

Triton is imported by this module alone; nothing in mom needs it elsewhere.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _round_bf16(x):
    """fp32 -> bf16, rounded to nearest even (integer arithmetic: exact under the interpreter too)."""
    bits = x.to(tl.uint32, bitcast=True)
    bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return bits.to(tl.float32, bitcast=True).to(tl.bfloat16)


@triton.jit
def _add_rms_norm_kernel(x_ptr, delta_ptr, weight_ptr, sum_ptr, out_ptr, width, eps,
                         HAS_DELTA: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    inside = cols < width
    x = tl.load(x_ptr + row * width + cols, mask=inside, other=0.0).to(tl.float32)
    if HAS_DELTA:
        delta = tl.load(delta_ptr + row * width + cols, mask=inside, other=0.0).to(tl.float32)
        summed = _round_bf16(x + delta)
        tl.store(sum_ptr + row * width + cols, summed, mask=inside)
        x = summed.to(tl.float32)
    variance = tl.sum(x * x, axis=0) / width
    normed = _round_bf16(x * tl.math.rsqrt(variance + eps)).to(tl.float32)
    weight = tl.load(weight_ptr + cols, mask=inside, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * width + cols, _round_bf16(weight * normed), mask=inside)


def add_rms_norm(x: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, eps: float):
    """(x + delta, weight * rms_norm(x + delta)) as Llama writes them, in one kernel.

    x, delta: [..., D] bf16, contiguous; weight: [D] bf16. Without delta: (x, the norm of x).
    """
    width = x.shape[-1]
    rows = x.numel() // width
    out = torch.empty_like(x)
    summed = torch.empty_like(x) if delta is not None else x
    block = triton.next_power_of_2(width)
    _add_rms_norm_kernel[(rows,)](x, delta if delta is not None else x, weight, summed, out, width, eps,
                                  HAS_DELTA=delta is not None, BLOCK=block, num_warps=min(16, max(4, block // 512)))
    return summed, out


@triton.jit
def _silu_mul_kernel(gate_ptr, up_ptr, out_ptr, count, BLOCK: tl.constexpr):
    index = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = index < count
    gate = tl.load(gate_ptr + index, mask=inside, other=0.0).to(tl.float32)
    up = tl.load(up_ptr + index, mask=inside, other=0.0).to(tl.float32)
    activated = _round_bf16(tl.math.div_rn(gate, 1.0 + tl.exp(-gate))).to(tl.float32)  # IEEE division, as torch
    tl.store(out_ptr + index, _round_bf16(activated * up), mask=inside)


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up as Llama's MLP computes it (each rounded to bf16), in one kernel.
    gate, up: bf16, contiguous, the same shape."""
    out = torch.empty_like(gate)
    count, block = gate.numel(), 1024
    _silu_mul_kernel[(triton.cdiv(count, block),)](gate, up, out, count, BLOCK=block)
    return out


@triton.jit
def _rotate_half(source, destination, cos1, cos2, sin1, sin2, HALF: tl.constexpr):
    """destination = source * cos + rotate_half(source) * sin, rounded as torch rounds each op."""
    half = tl.arange(0, HALF)
    x1 = tl.load(source + half).to(tl.float32)
    x2 = tl.load(source + HALF + half).to(tl.float32)
    first = _round_bf16(_round_bf16(x1 * cos1).to(tl.float32) + _round_bf16(-x2 * sin1).to(tl.float32))
    second = _round_bf16(_round_bf16(x2 * cos2).to(tl.float32) + _round_bf16(x1 * sin2).to(tl.float32))
    tl.store(destination + half, first)
    tl.store(destination + HALF + half, second)


@triton.jit
def _rope_write_kernel(q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, q_out_ptr, keys_ptr, values_ptr, slot_ptr,
                       q_batch, q_head, k_batch, k_head, v_batch, v_head, angle_batch,
                       kv_batch, kv_head, kv_row,
                       HEADS: tl.constexpr, KV_HEADS: tl.constexpr, HALF: tl.constexpr):
    row, head = tl.program_id(0).to(tl.int64), tl.program_id(1)  # head: q's heads, then k's, then v's
    # (64-bit offsets: a batch of long buffers passes 2^31 elements)
    half = tl.arange(0, HALF)
    cos1 = tl.load(cos_ptr + row * angle_batch + half).to(tl.float32)
    cos2 = tl.load(cos_ptr + row * angle_batch + HALF + half).to(tl.float32)
    sin1 = tl.load(sin_ptr + row * angle_batch + half).to(tl.float32)
    sin2 = tl.load(sin_ptr + row * angle_batch + HALF + half).to(tl.float32)
    slot = tl.load(slot_ptr)
    if head < HEADS:
        _rotate_half(q_ptr + row * q_batch + head * q_head, q_out_ptr + (row * HEADS + head) * 2 * HALF,
                     cos1, cos2, sin1, sin2, HALF)
    elif head < HEADS + KV_HEADS:
        kv = head - HEADS
        _rotate_half(k_ptr + row * k_batch + kv * k_head, keys_ptr + row * kv_batch + kv * kv_head + slot * kv_row,
                     cos1, cos2, sin1, sin2, HALF)
    else:
        kv = head - HEADS - KV_HEADS
        whole = tl.arange(0, 2 * HALF)
        value = tl.load(v_ptr + row * v_batch + kv * v_head + whole)
        tl.store(values_ptr + row * kv_batch + kv * kv_head + slot * kv_row + whole, value)


def rope_write(q, k, v, cos, sin, keys, values, slot) -> torch.Tensor:
    """RoPE on q and k as Llama's apply_rotary_pos_emb, k and v written into the buffers at `slot`.

    q: [B, H, 1, hd], k, v: [B, H_kv, 1, hd] (any strides, the last dimension contiguous);
    cos, sin: [B, 1, hd]; keys, values: [B, H_kv, capacity, hd] with the same strides; slot: [1]
    int64 on the device. Returns the rotated q, [B, H, 1, hd] contiguous.
    """
    batch, heads, _, head_dim = q.shape
    kv_heads = k.shape[1]
    q_out = torch.empty(batch, heads, 1, head_dim, dtype=q.dtype, device=q.device)
    _rope_write_kernel[(batch, heads + 2 * kv_heads)](
        q, k, v, cos, sin, q_out, keys, values, slot,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), cos.stride(0),
        keys.stride(0), keys.stride(1), keys.stride(2),
        HEADS=heads, KV_HEADS=kv_heads, HALF=head_dim // 2, num_warps=1)
    return q_out


def rope_write_supported(q, k, v, cos, keys, values) -> bool:
    """The layouts `rope_write` assumes: last dimensions contiguous, cos over the whole head
    (no partial rotation), a power-of-two half head, the two buffers alike."""
    head_dim = q.shape[-1]
    half = head_dim // 2
    return (all(t.stride(-1) == 1 for t in (q, k, v, cos, keys, values)) and cos.shape[-1] == head_dim
            and head_dim % 2 == 0 and half & (half - 1) == 0 and keys.stride() == values.stride()
            and keys.shape == values.shape)
