"""The kernels of the static decode step (engine/graph_decode.py), apart from the step itself.

Why a module of their own: they are where the graph step differs from the model's own layer,
so they carry the exactness arguments, and each is tested against what it replaces
(tests/engine/test_graph_decode.py, and inside a CUDA graph tests/engine/test_gpu.py):

- `varlen_attention`: flash's variable-length kernel over a fixed K/V buffer with a device-held
  key count, one kernel per layer for half precision on CUDA;
- `split_attention` and `prefix_attention`: the fixed prefix plus a masked fp32 window, merged
  by log-sum-exp, for fp32 and CPU;
- `fused_norm`: Llama's RMSNorm (and its copies) as torch's one-kernel rms_norm;
- `joint_rotary`: RoPE on q and k in one pass (6 kernels where two calls launch 10), used only
  where it gives the family's own rotation bit for bit (`same_rotation`, checked once per
  handle on the model's own cos/sin);
- `StepKernels`: the step's residual norms, RoPE with the K/V write, and MLP, each as Triton's
  fused kernel (engine/triton_kernels.py) where it applies (bf16 on CUDA, Llama's code) and
  matches torch on the device, else as the torch kernels above.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from . import families


def fused_norm(norm: nn.Module):
    """The norm as one rms_norm kernel plus the casts and the weight, where it is Llama's RMSNorm
    (module docstring); any other norm, as its module."""
    eps = families.plain_rms_norm_eps(norm)
    if eps is None:
        return norm
    weight = norm.weight
    return lambda x: weight * torch.nn.functional.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


def flash_varlen_supported(reference: torch.Tensor, head_dim: int) -> bool:
    """Whether flash's variable-length kernel takes this model: half precision on CUDA, a head
    size flash compiles (a multiple of 8, at most 256)."""
    return (reference.is_cuda and reference.dtype in (torch.float16, torch.bfloat16)
            and head_dim % 8 == 0 and head_dim <= 256)


def varlen_attention(q, keys, values, used, cumulative: tuple, scale: float) -> torch.Tensor:
    """One query's attention over the first `used[b]` keys of each row's buffer, in one kernel.

    q: [B, H, 1, hd]; keys, values: [B, H_kv, capacity, hd] buffers; used: [B] int32 on the
    device; cumulative: ([0..B] int32, [0..B] * H_kv * capacity int32) -> [B, 1, H * hd].
    Flash's variable-length entry point wants keys as rows [total, H_kv, hd] with row b
    starting at cumulative[1][b]; a view of the buffer with row stride hd and head stride
    capacity * hd is exactly that, so nothing is copied. Grouped-query heads are paired inside
    the kernel (no K/V repeated).
    """
    batch, heads, _, head_dim = q.shape
    rows_k, rows_q = cumulative[1], cumulative[0]
    out, *_ = torch.ops.aten._flash_attention_forward(
        q.reshape(batch, heads, head_dim), _as_rows(keys), _as_rows(values), rows_q, rows_k,
        1, keys.shape[2], 0.0, False, False, scale=scale, seqused_k=used)
    return out.reshape(batch, 1, heads * head_dim)


def _as_rows(buffer: torch.Tensor) -> torch.Tensor:
    """[B, H_kv, capacity, hd] -> the same memory as [rows, H_kv, hd], row r of batch b at
    r + b * H_kv * capacity (rows between batches are never read: `used` stops before them)."""
    batch, kv_heads, capacity, head_dim = buffer.shape
    rows = (batch - 1) * kv_heads * capacity + capacity
    return buffer.as_strided((rows, kv_heads, head_dim), (head_dim, capacity * head_dim, 1),
                             buffer.storage_offset())


def split_attention(q, keys, values, prefix: int, window_index, filled, scale: float) -> torch.Tensor:
    """One query's attention over keys[:, :, :prefix + filled], as prefix + window spans.

    q: [B, H, 1, hd]; keys, values: [B, H_kv, capacity, hd]; window_index: [W]; filled: [] ->
    [B, 1, H * hd]. Query heads are grouped per K/V head ([B, H_kv, H / H_kv, hd]), as grouped-
    query attention pairs them, so no K/V is repeated.
    """
    batch, heads, _, head_dim = q.shape
    grouped = q.reshape(batch, keys.shape[1], heads // keys.shape[1], head_dim)
    out_p, lse_p = prefix_attention(grouped, keys[:, :, :prefix], values[:, :, :prefix], scale)
    span = slice(prefix, prefix + window_index.shape[0])
    scores = torch.matmul(grouped.float(), keys[:, :, span].float().transpose(-1, -2)) * scale
    scores = scores.masked_fill(window_index >= filled, float("-inf"))
    lse_w = torch.logsumexp(scores, dim=-1)
    out_w = torch.matmul(torch.exp(scores - lse_w.unsqueeze(-1)), values[:, :, span].float())
    lse = torch.logaddexp(lse_p, lse_w)
    out = out_p.float() * torch.exp(lse_p - lse).unsqueeze(-1) + out_w * torch.exp(lse_w - lse).unsqueeze(-1)
    return out.to(q.dtype).reshape(batch, 1, heads * head_dim)


def prefix_attention(q, keys, values, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax(q k^T * scale) v, log-sum-exp of the scores) with the fused kernel of the device.

    q: [B, h, s, hd] with keys, values: [B, h, S, hd] (same heads) -> ([B, h, s, hd], [B, h, s] fp32).
    """
    if not q.is_cuda:
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, keys, values, 0.0, False, scale=scale)
    if q.dtype in (torch.float16, torch.bfloat16):
        out, lse, *_ = torch.ops.aten._scaled_dot_product_flash_attention(q, keys, values, 0.0, False, False,
                                                                          scale=scale)
        return out, lse
    out, lse, *_ = torch.ops.aten._scaled_dot_product_efficient_attention(q, keys, values, None, True, 0.0, False,
                                                                          scale=scale)
    return out, lse[..., : q.shape[-2]]


def joint_rotary(q, k, cos, sin):
    """q and k rotated together: q * cos + rotate_half(q) * sin, as transformers' Llama writes it,
    over the two concatenated along the heads. q: [B, H, s, hd], k: [B, H_kv, s, hd]."""
    heads, half = q.shape[1], q.shape[-1] // 2
    both = torch.cat((q, k), dim=1)
    rotated = torch.cat((-both[..., half:], both[..., :half]), dim=-1)
    both = both * cos.unsqueeze(1) + rotated * sin.unsqueeze(1)
    return both[:, :heads], both[:, heads:]


def same_rotation(family_rotary, q, k, cos, sin) -> bool:
    """Whether `joint_rotary` equals the family's apply_rotary_pos_emb bit for bit on these inputs."""
    try:
        expected, actual = family_rotary(q, k, cos, sin), joint_rotary(q, k, cos, sin)
    except (RuntimeError, TypeError, ValueError):  # another signature or layout
        return False
    return all(a.shape == e.shape and torch.equal(a, e) for a, e in zip(actual, expected, strict=True))


def step_rotary(model: nn.Module, family: families.Family, device):
    """The step's RoPE, as `attention -> rotate(q, k, cos, sin)`: joint_rotary where it rotates
    exactly as the family does (checked on random q, k and the model's own cos/sin at two
    positions, outside any capture), else the family's own."""
    attention = getattr(families.decoder_layers(model)[0], family.attention)
    config, dtype = model.config, next(model.parameters()).dtype
    head_dim = attention.head_dim
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    gen = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(2, config.num_attention_heads, 1, head_dim, generator=gen, device=device).to(dtype)
    k = torch.randn(2, kv_heads, 1, head_dim, generator=gen, device=device).to(dtype)
    x = torch.zeros(2, 1, config.hidden_size, device=device, dtype=dtype)
    cos, sin = model.model.rotary_emb(x, torch.tensor([[3], [12345]], device=device))
    same = same_rotation(families.rotary(attention), q, k, cos, sin)
    return (lambda _: joint_rotary) if same else families.rotary


class StepKernels:
    """The pieces of the static decode step that fuse (module docstring), chosen once per handle.

    `rotary` is the step's RoPE (`step_rotary`). `triton` is the engine/triton_kernels module
    where Triton takes this model (bf16 on CUDA),
    else None; `fused` names the pieces ("norm", "rope", "silu") whose kernel matched its torch
    version on the device (`_triton_checks`); `why_torch` says why each other piece runs torch's
    kernels. MOM_DECODE_KERNELS=torch in the environment keeps torch's for every piece (A/B timing).
    """

    PIECES = ("norm", "rope", "silu")

    def __init__(self, model: nn.Module, family: families.Family, device: torch.device):
        self.family, self.rotary = family, step_rotary(model, family, device)
        self.triton, self.fused, self.why_torch = None, frozenset(), {}
        self.why_all: str | None = None  # one reason every piece runs torch's kernels
        reference = next(model.parameters())
        if os.environ.get("MOM_DECODE_KERNELS", "") == "torch":
            self.why_all = "MOM_DECODE_KERNELS=torch"
        elif not reference.is_cuda or reference.dtype != torch.bfloat16:
            self.why_all = "fused kernels are for bf16 on CUDA"
        else:
            try:
                from . import triton_kernels
            except ImportError as error:  # no Triton in this torch build
                self.why_all = f"no Triton ({error})"
            else:
                self.why_torch = _triton_checks(triton_kernels, model, family, self.rotary)
                self.fused = frozenset(p for p in self.PIECES if p not in self.why_torch)
                self.triton = triton_kernels if self.fused else None
        if self.why_all is not None:
            self.why_torch = dict.fromkeys(self.PIECES, self.why_all)

    @property
    def name(self) -> str:
        """"triton" where every piece runs fused, else which run torch's kernels and why."""
        if self.why_all is not None:
            return f"torch ({self.why_all})"
        if not self.fused:
            return "torch (" + "; ".join(f"{piece}: {why}" for piece, why in self.why_torch.items()) + ")"
        if not self.why_torch:
            return "triton"
        torch_pieces = ", ".join(f"{piece} ({why})" for piece, why in self.why_torch.items())
        return f"triton for {', '.join(p for p in self.PIECES if p in self.fused)}; torch for {torch_pieces}"

    def residual_norm(self, x, delta, norm: nn.Module):
        """(x + delta, norm(x + delta)); delta None: (x, norm(x))."""
        eps = families.plain_rms_norm_eps(norm) if "norm" in self.fused else None
        if (eps is not None and norm.weight.dtype == x.dtype == torch.bfloat16 and x.is_contiguous()
                and (delta is None or delta.is_contiguous())):
            return self.triton.add_rms_norm(x, delta, norm.weight, eps)
        x = x if delta is None else x + delta
        return x, fused_norm(norm)(x)

    def rope_write(self, attention: nn.Module, q, k, v, cos, sin, keys, values, slot):
        """q rotated; k rotated and v written into the buffers at `slot` ([1] int64)."""
        if "rope" in self.fused and self.triton.rope_write_supported(q, k, v, cos, keys, values):
            return self.triton.rope_write(q, k, v, cos, sin, keys, values, slot)
        q, k = self.rotary(attention)(q, k, cos, sin)
        keys.index_copy_(2, slot, k)
        values.index_copy_(2, slot, v)
        return q

    def mlp(self, mlp: nn.Module, h):
        if "silu" in self.fused and families.plain_silu_mlp(mlp):
            return mlp.down_proj(self.triton.silu_mul(mlp.gate_proj(h), mlp.up_proj(h)))
        return mlp(h)


def _triton_checks(triton_kernels, model: nn.Module, family: families.Family, rotary) -> dict[str, str]:
    """Each fused kernel against what it replaces, on random inputs of the model's sizes on its
    device: RoPE and the residual sums bit for bit, the norm and the MLP product to within one
    bf16 step on at most 1% of the elements (module docstring of engine/triton_kernels.py).
    Returns why each piece keeps torch's kernels (empty when all pass)."""
    layer = families.decoder_layers(model)[0]
    attention, norm, mlp = (getattr(layer, name) for name in (family.attention, family.input_norm, family.mlp))
    device, dtype, width = next(model.parameters()).device, torch.bfloat16, model.config.hidden_size
    gen = torch.Generator(device=device).manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=gen, device=device).to(dtype)  # noqa: E731

    def norm_check():
        if families.plain_rms_norm_eps(norm) is None:
            return "not Llama's RMSNorm"
        x, delta = rand(2, 1, width), rand(2, 1, width)
        summed, normed = triton_kernels.add_rms_norm(x, delta, norm.weight, norm.variance_epsilon)
        if not torch.equal(summed, x + delta) or not _within_one_step(normed, norm(x + delta)):
            return "the fused residual norm differs from the model's"

    def silu_check():
        if not families.plain_silu_mlp(mlp):
            return "not Llama's SiLU MLP"
        gate, up = 4 * rand(2, 1, 4096), rand(2, 1, 4096)
        if not _within_one_step(triton_kernels.silu_mul(gate, up), mlp.act_fn(gate) * up):
            return "the fused SiLU product differs from the model's"

    def rope_check():
        if rotary(attention) is not joint_rotary:
            return "not Llama's rotation"
        _, kv_heads, head_dim = families.kv_geometry(model)
        return _rope_check(triton_kernels, rand, model.config.num_attention_heads, kv_heads, head_dim, device)

    why = {}
    for piece, check in (("norm", norm_check), ("rope", rope_check), ("silu", silu_check)):
        try:
            reason = check()
        except RuntimeError as error:  # a kernel that does not compile or launch here
            reason = f"the kernel failed ({error})"
        if reason is not None:
            why[piece] = reason
    return why


def _rope_check(triton_kernels, rand, heads: int, kv_heads: int, head_dim: int, device) -> str | None:
    q, k, v = rand(2, 1, heads * head_dim), rand(2, 1, kv_heads * head_dim), rand(2, 1, kv_heads * head_dim)
    q, k, v = (t.view(2, 1, -1, head_dim).transpose(1, 2) for t in (q, k, v))
    angles = 100 * torch.rand(2, 1, head_dim, device=device)
    cos, sin = angles.cos().to(q.dtype), angles.sin().to(q.dtype)
    keys, values = (torch.zeros(2, kv_heads, 8, head_dim, device=device, dtype=q.dtype) for _ in range(2))
    if not triton_kernels.rope_write_supported(q, k, v, cos, keys, values):
        return None  # the step keeps torch's RoPE for this layout, per call
    slot = torch.tensor([3], device=device)
    rotated = triton_kernels.rope_write(q, k, v, cos, sin, keys, values, slot)
    expected_q, expected_k = joint_rotary(q, k, cos, sin)
    if not (torch.equal(rotated, expected_q) and torch.equal(keys[:, :, 3:4], expected_k)
            and torch.equal(values[:, :, 3:4], v) and not keys[:, :, :3].any() and not keys[:, :, 4:].any()):
        return "the fused RoPE and K/V write differ from the model's"
    return None


def _within_one_step(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    """Equal but for at most 1% of the elements, each off by at most one bf16 step (under 2^-7 of its value)."""
    differ = actual != expected
    if not bool(differ.any()):
        return True
    off = (actual.float() - expected.float()).abs()[differ]
    step = expected.float().abs()[differ] * 2.0**-7 + 1e-30
    return bool((off <= step).all()) and differ.float().mean().item() <= 0.01
