"""Models with shapes but no data: the real architecture on the meta device, built once per config.

A prediction runs the very modules `mom.load` would build (transformers' own classes, mom's
patches on top), so what changes in transformers or in mom's engine changes the prediction
too. The model is built on the meta device: every tensor has a shape, a dtype and a storage
of a size, no data, and ops only compute shapes. (torch's FakeTensorMode does the same
with far more Python per op: 20 s instead of 1 for a 128k prefill in mini-sequences.)

One op needs help: scaled_dot_product_attention on meta tensors takes the math path, whose
[S, S] score matrix would be counted. On a GPU the same call runs a fused kernel (flash or
memory-efficient) that returns the output and a float32 log-sum-exp per query and head and
keeps no score matrix. `run_context()` swaps in a function that allocates exactly that.

Building an 8B model takes about a second; models are cached by (config, dtype) so the
explorer and plan() pay it once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .. import checks
from .shapes import like

logger = logging.getLogger(__name__)

MAX_CACHED = 8


@dataclass
class FakeModel:
    """A causal LM on the meta device, and the name to show for it."""

    model: nn.Module
    name: str


def model_config(model: Any, **overrides):
    """(transformers config, display name) of a preset name, a config, a folder, a config.json,
    a hub id, or a model object.

    Raises:
        ValueError: not a preset (with the closest one suggested), a local model or a hub id.
        HubUnreachableError: a hub id, and the hub cannot be reached (answered at once).
    """
    from transformers import AutoConfig, PretrainedConfig

    if isinstance(model, nn.Module):
        return model.config, getattr(model.config, "name_or_path", "") or model.config.model_type
    if isinstance(model, PretrainedConfig):
        return model, getattr(model, "name_or_path", "") or model.model_type
    name = os.fspath(model) if isinstance(model, (str, os.PathLike)) else model
    path = Path(name).expanduser() if isinstance(name, str) else None
    if path is not None and path.is_file() and path.suffix == ".json":
        return AutoConfig.from_pretrained(str(path.parent if path.name == "config.json" else path)), name
    source = checks.model_source(name)
    if source == "preset":
        from ..load import preset_config

        return preset_config(name, **overrides), name
    if source == "hub":
        checks.check_hub_reachable(name)
    return AutoConfig.from_pretrained(name), name


def fake_model(config, name: str, dtype: torch.dtype = torch.bfloat16) -> FakeModel:
    """The model of `config` on the meta device (cached: the same object for the same config and dtype)."""
    attn = getattr(config, "_attn_implementation", None) or "sdpa"
    key = (json.dumps(config.to_dict(), sort_keys=True, default=str), dtype, attn)
    model = _BUILT.pop(key, None) or _build(config, dtype, attn)
    _BUILT[key] = model  # most recently used last
    while len(_BUILT) > MAX_CACHED:
        _BUILT.pop(next(iter(_BUILT)))
    return FakeModel(model, name)


_BUILT: dict[tuple, nn.Module] = {}


def _build(config, dtype: torch.dtype, attn_implementation: str) -> nn.Module:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    logger.info("built %s on the meta device", config.model_type)
    return model.eval()


@contextlib.contextmanager
def run_context():
    """Default device meta, fused attention's allocations for scaled_dot_product_attention, no grad."""
    with _FusedAttention(), torch.no_grad():
        yield


class _FusedAttention(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention:
            return fused_attention(*args, **kwargs)
        return func(*args, **kwargs)


def fused_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """What a fused sdpa kernel allocates: the output in the query's memory layout (flash
    attention makes it with empty_like of the query: mom's contiguous Q buffer gives a [B, H, s, Dv]
    output, transformers' transposed query a [B, s, H, Dv] one), a float32 log-sum-exp [B, H, s],
    and a boolean mask's additive copy, both freed on return.

    query: [B, H, s, D]; key, value: [B, H_kv, S, D] -> [B, H, s, Dv].
    """
    *batch, heads, length, _ = query.shape
    if value.shape[-1] == query.shape[-1]:
        out = like(query)
    else:
        out = query.new_empty(*batch, heads, length, value.shape[-1])
    logsumexp = query.new_empty(*batch, heads, length, dtype=torch.float32)
    mask = args[0] if args else kwargs.get("attn_mask")
    # a boolean mask becomes an additive one in the query's dtype before the kernel (torch's
    # convert_boolean_attn_mask), alive for the call
    additive = query.new_empty(mask.shape) if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool else None
    del logsumexp, additive
    return out
