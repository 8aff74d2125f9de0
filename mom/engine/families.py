"""The one place that knows Hugging Face module internals.

Every supported family (llama, mistral, qwen2, qwen3, phi3) shares one decoder-layer shape:

    h = x + attn_dropout(self_attn(input_layernorm(x)))
    y = h + mlp_dropout(mlp(post_attention_layernorm(h)))

so one adapter table of attribute names is enough; the rest of the engine is generic. A new
family with the same shape is one table row. A new transformers release that renames things
should need changes here alone.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from torch import nn


class UnsupportedModelError(TypeError):
    """The model is not a causal LM of a family mom knows."""


@dataclass(frozen=True)
class Family:
    """Attribute names of one family's decoder layer."""

    name: str
    input_norm: str = "input_layernorm"
    attention: str = "self_attn"
    post_attention_norm: str = "post_attention_layernorm"
    mlp: str = "mlp"
    attention_dropout: str | None = None  # residual dropout after attention (phi3)
    mlp_dropout: str | None = None  # residual dropout after the MLP (phi3)
    fused_qkv: str | None = None  # one projection for q, k and v (phi3), else q_proj/k_proj/v_proj
    q_norm: str | None = None  # per-head norms on q and k before RoPE (qwen3)
    k_norm: str | None = None


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("llama"),
        Family("mistral"),
        Family("qwen2"),
        Family("qwen3", q_norm="q_norm", k_norm="k_norm"),
        Family("phi3", attention_dropout="resid_attn_dropout", mlp_dropout="resid_mlp_dropout", fused_qkv="qkv_proj"),
    ]
}


def family_of(model: nn.Module) -> Family:
    """The adapter for `model`, a *ForCausalLM instance.

    Raises:
        UnsupportedModelError: not a causal LM, or a model type mom does not support.
    """
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "generate"):
        raise UnsupportedModelError(
            f"mom needs a Hugging Face causal LM (an *ForCausalLM model), got {type(model).__name__}"
        )
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise UnsupportedModelError(
            f"model type {model_type!r} is not supported by mom; supported: {', '.join(sorted(FAMILIES))}"
        )
    if not isinstance(getattr(model, "lm_head", None), nn.Module) or not hasattr(model, "model"):
        raise UnsupportedModelError(
            f"{type(model).__name__} is not a causal LM (no lm_head); load it with AutoModelForCausalLM or mom.load"
        )
    return FAMILIES[model_type]


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    return list(model.model.layers[: model.config.num_hidden_layers])


def embedding(model: nn.Module) -> nn.Module:
    return model.model.embed_tokens


def final_norm(model: nn.Module) -> nn.Module:
    return model.model.norm


def lm_head(model: nn.Module) -> nn.Module:
    return model.lm_head


def submodule(layer: nn.Module, name: str | None) -> nn.Module | None:
    return getattr(layer, name) if name else None


def project_qkv(family: Family, attention: nn.Module, x: torch.Tensor, with_query: bool = True):
    """q, k, v of `x` ([B, s, D]) as [B, heads, s, head_dim], per-head norms applied, before RoPE.

    q is None when `with_query` is False (the keys and values of a trimmed layer's prompt).
    """
    config, head_dim = attention.config, attention.head_dim
    q_width = config.num_attention_heads * head_dim
    kv_width = (getattr(config, "num_key_value_heads", None) or config.num_attention_heads) * head_dim
    if family.fused_qkv:
        fused = getattr(attention, family.fused_qkv)
        if with_query or fused.weight.device != x.device:
            # weights offloaded by an Accelerate hook (on the meta device until the module is
            # called) are only reachable through the module: project all and drop q, exactly
            qkv = fused(x)
            q, k, v = qkv[..., :q_width], qkv[..., q_width : q_width + kv_width], qkv[..., q_width + kv_width :]
            q = q if with_query else None
        else:  # the k and v rows of the fused weight only
            bias = fused.bias[q_width:] if fused.bias is not None else None
            kv = torch.nn.functional.linear(x, fused.weight[q_width:], bias)
            q, k, v = None, kv[..., :kv_width], kv[..., kv_width:]
    else:
        q = attention.q_proj(x) if with_query else None
        k, v = attention.k_proj(x), attention.v_proj(x)
    heads = lambda t: t.view(*x.shape[:-1], -1, head_dim)  # noqa: E731  [B, s, h, hd]
    q, k, v = (heads(t) if t is not None else None for t in (q, k, v))
    if family.q_norm and q is not None:
        q = getattr(attention, family.q_norm)(q)
    if family.k_norm:
        k = getattr(attention, family.k_norm)(k)
    return tuple(t.transpose(1, 2) if t is not None else None for t in (q, k, v))


def plain_rms_norm_eps(norm: nn.Module) -> float | None:
    """The epsilon of a norm whose forward is Llama's RMSNorm, the same code (Qwen2's and
    Mistral's are copies): weight * (x in fp32 * rsqrt(mean(x^2) + eps)).to(x's dtype); else None."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    if not _runs_code_of(norm, LlamaRMSNorm.forward):
        return None
    return norm.variance_epsilon


def plain_silu_mlp(mlp: nn.Module) -> bool:
    """Whether the MLP is Llama's gated one, the same code (Qwen's and Mistral's are copies),
    with SiLU as its activation: down_proj(silu(gate_proj(x)) * up_proj(x))."""
    from transformers.models.llama.modeling_llama import LlamaMLP

    if not _runs_code_of(mlp, LlamaMLP.forward):
        return False
    act = getattr(mlp, "act_fn", None)
    return isinstance(act, nn.SiLU) or (type(act).__name__ == "SiLUActivation" and "forward" not in vars(act))


def _runs_code_of(module: nn.Module, reference) -> bool:
    """Whether a one-token call of `module` runs the code of `reference` (a class's forward):
    its class's forward is that code, and its instance has no forward of its own or only mom's
    mini-sequence wrapper around the class's (engine/patch.py; for one token it calls that
    forward as is). Someone else's instance patch is not looked through."""
    code, plain = getattr(type(module).forward, "__code__", None), reference.__code__
    if code is None or (code.co_code, code.co_names) != (plain.co_code, plain.co_names):
        return False
    own = module.__dict__.get("forward")
    if own is None:
        return True
    inner = getattr(own, "__wrapped__", None)
    return getattr(own, "_mom_one_token_plain", False) and getattr(inner, "__func__", None) is type(module).forward


def rotary(attention: nn.Module):
    """The family's apply_rotary_pos_emb(q, k, cos, sin), from the attention's own module."""
    return sys.modules[type(attention).__module__].apply_rotary_pos_emb


def attention_function(attention: nn.Module):
    """What the family's forward calls for attention (sdpa, eager, flash...), per the config."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    eager = sys.modules[type(attention).__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS.get_interface(attention.config._attn_implementation, eager)


def attention_extra_kwargs(attention: nn.Module) -> dict:
    """Keyword arguments the family's forward adds to the attention call."""
    window = getattr(attention, "sliding_window", getattr(attention.config, "sliding_window", None))
    return {"sliding_window": window} if window is not None else {}


CACHE_KEYWORDS = ("past_key_values", "cache", "past_key_value")


def cache_argument(kwargs: dict):
    """The KV cache among a decoder layer's keyword arguments (renamed across transformers 5.x)."""
    for name in CACHE_KEYWORDS:
        if kwargs.get(name) is not None:
            return kwargs[name]
    return None


def cache_in_call(model: nn.Module, call: dict) -> tuple[str, object]:
    """(keyword name, cache or None) of a causal LM forward call, bound by its signature.

    transformers 5.17 names it `past_key_values`, later releases `cache`; callers may use either.
    """
    extra = call.get("kwargs", {})
    for name in ("cache", "past_key_values"):
        for source in (call, extra):
            if source.get(name) is not None:
                return name, source[name]
    import inspect

    params = inspect.signature(type(model).forward).parameters
    return ("cache" if "cache" in params else "past_key_values"), None


def cache_layer_tensors(cache, layer: int) -> list:
    """The K/V tensors a transformers Cache holds for one layer (empty if none yet)."""
    layers = getattr(cache, "layers", None)
    if layers is None or layer >= len(layers):
        return []
    entry = layers[layer]
    return [t for t in (getattr(entry, "keys", None), getattr(entry, "values", None)) if t is not None and t.numel()]


def kv_geometry(model: nn.Module) -> tuple[int, int, int]:
    """(layers, key/value heads, head dim) of the KV cache."""
    return kv_geometry_of_config(model.config)


def kv_geometry_of_config(c) -> tuple[int, int, int]:
    heads = c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    return c.num_hidden_layers, getattr(c, "num_key_value_heads", None) or heads, head_dim


def offloadable_layers(config) -> list[int]:
    """Indices of the layers whose K/V a MomCache holds: full attention (sliding-window layers
    keep transformers' own small cache on the device)."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    return [i for i, layer in enumerate(DynamicCache(config=config).layers) if type(layer) is DynamicLayer]


def kv_bytes_per_token(model: nn.Module, dtype: torch.dtype | None = None) -> int:
    """Bytes of K and V per token, all layers (128 KiB for Llama-3.1-8B in bf16)."""
    layers, kv_heads, head_dim = kv_geometry(model)
    itemsize = (dtype or model.dtype).itemsize
    return 2 * layers * kv_heads * head_dim * itemsize


def sliding_window(model: nn.Module) -> int | None:
    """The attention window if some layer uses one, else None."""
    c = model.config
    window = getattr(c, "sliding_window", None)
    if window is None or getattr(c, "use_sliding_window", True) is False:
        return None
    layer_types = getattr(c, "layer_types", None)
    if layer_types is not None and "sliding_attention" not in layer_types:
        return None
    return int(window)


def attention_implementation(model: nn.Module) -> str:
    return getattr(model.config, "_attn_implementation", None) or "eager"
