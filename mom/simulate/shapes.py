"""Fast output shapes for the few ops that dominate a prediction's time.

On the meta device most pointwise ops run torch's Python reference implementations
(torch._refs), about 100 us each; a mini-sequence prefill at 128k calls them ~25,000 times.
For the hot ones, the output is made here directly with `empty_like` of the input whose shape
is the broadcast shape (so its memory layout is kept, as TensorIterator keeps it) or a plain
`empty`; dtype from torch's own type promotion. Anything else (or anything unusual) returns
None and the op runs as usual. Only shapes, dtypes and layouts matter: nothing is computed.
"""

from __future__ import annotations

import torch
from torch._prims_common import is_non_overlapping_and_dense_or_false

aten = torch.ops.aten
_POINTWISE = {
    aten.mul.Tensor, aten.add.Tensor, aten.sub.Tensor, aten.div.Tensor, aten.neg.default,
    aten.rsqrt.default, aten.silu.default, aten.pow.Tensor_Scalar, aten.mul.Scalar, aten.add.Scalar,
    aten.cos.default, aten.sin.default, aten.gelu.default, aten.tanh.default, aten.sigmoid.default,
}
_FLOATING_RESULT = {aten.rsqrt.default, aten.cos.default, aten.sin.default}


def fast_output(func, args, kwargs) -> torch.Tensor | None:
    """The op's output (an empty tensor of the right shape, dtype and layout), or None."""
    if func in _POINTWISE:
        return _pointwise(func, args, kwargs)
    if func is aten.mean.dim:
        return _mean(args, kwargs)
    if func is aten.cat.default:
        return _cat(args, kwargs)
    return None


def _pointwise(func, args, kwargs) -> torch.Tensor | None:
    if kwargs.get("alpha", 1) != 1 and not isinstance(kwargs.get("alpha"), (int, float)):
        return None
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if not tensors or any(t.device.type != "meta" for t in tensors):
        return None
    dtype = torch.result_type(*args[:2]) if len(args) >= 2 else tensors[0].dtype
    if func in _FLOATING_RESULT and not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    shape = tensors[0].shape if len(tensors) == 1 else _broadcast(tensors)
    if shape is None:
        return None
    for tensor in tensors:
        if tensor.shape == shape:
            return like(tensor, dtype)
    return torch.empty(shape, dtype=dtype, device="meta")


def like(tensor: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """empty_like(tensor) on meta without torch's Python reference: same layout when dense."""
    dtype = dtype or tensor.dtype
    if tensor.is_contiguous():
        return torch.empty(tensor.shape, dtype=dtype, device="meta")
    if is_non_overlapping_and_dense_or_false(tensor):
        return torch.empty_strided(tensor.shape, tensor.stride(), dtype=dtype, device="meta")
    return torch.empty(tensor.shape, dtype=dtype, device="meta")


def _broadcast(tensors: list[torch.Tensor]) -> torch.Size | None:
    ndim = max(t.dim() for t in tensors)
    out = [1] * ndim
    for t in tensors:
        for i, n in enumerate(t.shape, ndim - t.dim()):
            if n != 1:
                if out[i] not in (1, n):
                    return None
                out[i] = n
    return torch.Size(out)


def _mean(args, kwargs) -> torch.Tensor | None:
    x, dims = args[0], args[1] if len(args) > 1 else kwargs.get("dim")
    keepdim = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
    if x.device.type != "meta" or dims is None or kwargs.get("dtype") is not None or not x.dtype.is_floating_point:
        return None
    dims = {d % x.dim() for d in dims}
    shape = [1 if i in dims else n for i, n in enumerate(x.shape) if keepdim or i not in dims]
    return torch.empty(shape, dtype=x.dtype, device="meta")


def _cat(args, kwargs) -> torch.Tensor | None:
    tensors, dim = args[0], args[1] if len(args) > 1 else kwargs.get("dim", 0)
    tensors = [t for t in tensors if t.numel() or t.dim() != 1]  # cat skips legacy empty [0] tensors
    if not tensors or any(t.device.type != "meta" for t in tensors):
        return None
    dim %= tensors[0].dim()
    shape = list(tensors[0].shape)
    if any(t.dim() != len(shape) or [n for i, n in enumerate(t.shape) if i != dim] != [n for i, n in enumerate(shape) if i != dim] for t in tensors):
        return None
    shape[dim] = sum(t.shape[dim] for t in tensors)
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return torch.empty(shape, dtype=dtype, device="meta")
