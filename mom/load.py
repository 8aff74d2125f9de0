"""mom.load: a preset name builds random weights offline; anything else goes to from_pretrained.

Presets are built directly on the target device in the target dtype (a `torch.device` context
plus the dtype as default), so an 8B model appears on the GPU in bf16 in seconds and never
passes through fp32 on the host.

Every argument is checked first (mom/checks.py), in order of cost: the name from its text alone
(a preset typo is answered at once, with no network), then device, dtype and overrides, then the
configuration (a local file, or one download for a hub id, after a short reachability probe),
and last whether the weights fit the device's free memory, estimated from the configuration
before anything is allocated. Only then is the model built.
"""

from __future__ import annotations

import contextlib
import logging
import numbers

import torch

from . import checks
from .engine.families import FAMILIES, kv_geometry_of_config
from .presets import PRESETS, Preset

logger = logging.getLogger(__name__)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load(
    name: str,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    seed: int = 0,
    attn_implementation: str = "sdpa",
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    **overrides,
) -> torch.nn.Module:
    """Load a causal LM in eval mode.

    Args:
        name: a preset (`mom presets`, `mom.PRESETS`: random weights, no download), a local
            directory written by `save_pretrained`, or a hub id ("org/name").
        device: "cpu", "cuda", "cuda:N" or "meta" (shapes only); default cuda when available.
        dtype: a floating torch.dtype or its name ("bfloat16"/"bf16", "float16"/"fp16",
            "float32"/"fp32"); default bf16 on GPU, fp32 on CPU.
        seed: seed for a preset's random weights.
        attn_implementation: "sdpa" by default.
        device_map: spread the model over several devices instead of `device`: "auto"
            (balanced over the GPUs' free memory, as transformers does), "balanced",
            "balanced_low_0", "sequential", or {module name: device}. A preset is built
            module by module on its own device, never whole on the host (mom/dispatch.py);
            a checkpoint goes to `from_pretrained(device_map=...)`.
        max_memory: with a device_map strategy, the most bytes to use per device
            ({0: "70GiB", "cpu": "200GiB"}), as for Accelerate.
        **overrides: config fields to change (e.g. num_hidden_layers=2).

    Raises:
        ValueError: an unknown name ("did you mean ...?"), device, dtype or override.
        TypeError: a name that is not a string.
        RuntimeError: CUDA asked for but not available.
        HubUnreachableError: a hub id while the hub is offline or unreachable.
        ModelTooLargeError: the weights cannot fit the device's free memory.
    """
    source = checks.model_source(name)
    if device_map is not None:
        return _load_dispatched(name, source, device, device_map, max_memory, dtype, seed, attn_implementation,
                                overrides)
    device = checks.check_device(device) or default_device()
    dtype = checks.check_dtype(dtype) or default_dtype(device)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be a whole number, got {seed!r}")
    checks.check_attention(attn_implementation)
    if source == "preset":
        config = preset_config(PRESETS[name], attn_implementation, **overrides)
    else:
        config = _pretrained_config(str(name), source, attn_implementation, overrides)
    checks.check_weights_fit(repr(str(name)), parameter_count(config) * dtype.itemsize, device, dtype)
    if source == "preset":
        model = _build_preset(PRESETS[name], config, device, dtype, seed, attn_implementation)
    else:
        model = _from_pretrained(str(name), config, device, dtype, attn_implementation)
    return model.eval()


def _load_dispatched(name, source, device, device_map, max_memory, dtype, seed, attn_implementation, overrides):
    """mom.load with a device map: a preset built per device, or from_pretrained(device_map=...)."""
    from . import dispatch

    if device is not None:
        raise ValueError(f"give device or device_map, not both (got device={device!r}); a device map already "
                         "says where each module goes: device_map={'': 'cuda:0'} is one device")
    device_map = dispatch.check_device_map(device_map)
    dtype = checks.check_dtype(dtype) or default_dtype(default_device())
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be a whole number, got {seed!r}")
    checks.check_attention(attn_implementation)
    if source == "preset":
        config = preset_config(PRESETS[name], attn_implementation, **overrides)
        return dispatch.build_dispatched(config, device_map, dtype, seed, max_memory).eval()
    from transformers import AutoModelForCausalLM

    config = _pretrained_config(str(name), source, attn_implementation, overrides)
    return AutoModelForCausalLM.from_pretrained(str(name), config=config, dtype=dtype, device_map=device_map,
                                                max_memory=max_memory, attn_implementation=attn_implementation).eval()


def as_model(model, device: str | torch.device | None = None) -> torch.nn.Module:
    """A model as given, or loaded when given a preset name / path / hub id (for profile and the CLI).

    Raises:
        TypeError: neither a torch module nor a name.
    """
    if isinstance(model, torch.nn.Module):
        return model
    if isinstance(model, str):
        return load(model, device=device)
    raise TypeError(f"model must be a loaded causal LM (e.g. mom.load('tiny-llama')) or a preset name, got "
                    f"{type(model).__name__}")


def preset_config(preset: Preset | str, attn_implementation: str = "sdpa", **overrides):
    """The transformers config object of a preset, with overrides checked against its fields.

    Raises:
        ValueError: an unknown preset, or an override that is not a config field (naming the closest).
    """
    from transformers import AutoConfig

    if isinstance(preset, str):
        checks.model_source(preset)
        preset = PRESETS[preset]
    fields = {**AutoConfig.for_model(preset.model_type).to_dict(), **preset.config}
    checks.check_overrides(overrides, fields, f"preset {preset.name!r}")
    config = AutoConfig.for_model(preset.model_type, **{**preset.config, **overrides})
    config._attn_implementation = attn_implementation
    config.name_or_path = preset.name  # profiles, the CLI JSON and reports name the preset, not its family
    _check_heads(config)
    return config


def parameter_count(config) -> int:
    """Parameters of a supported causal LM, from its config alone (nothing built).

    The five families share one layout: embedding, per layer q/k/v/o projections, a gated MLP
    (gate, up, down) and two norms, a final norm and the LM head unless tied. Qwen2 adds q/k/v
    biases; Qwen3 adds per-head q/k norms; `attention_bias` / `mlp_bias` add the rest.
    """
    d, vocab, width = config.hidden_size, config.vocab_size, config.intermediate_size
    layers, kv_heads, head_dim = kv_geometry_of_config(config)
    q = config.num_attention_heads * head_dim
    kv = kv_heads * head_dim
    attention = d * (q + 2 * kv) + q * d
    if config.model_type == "qwen2" or getattr(config, "attention_bias", False):
        attention += q + 2 * kv + (d if getattr(config, "attention_bias", False) else 0)
    if config.model_type == "qwen3":
        attention += 2 * head_dim
    mlp = 3 * d * width + ((2 * width + d) if getattr(config, "mlp_bias", False) else 0)
    per_layer = attention + mlp + 2 * d
    head = 0 if getattr(config, "tie_word_embeddings", False) else vocab * d
    return vocab * d + layers * per_layer + d + head


def kv_bytes_per_token_of(config, dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes of K and V per token, all layers, from a config (128 KiB for llama-3.1-8b in bf16)."""
    layers, kv_heads, head_dim = kv_geometry_of_config(config)
    return 2 * layers * kv_heads * head_dim * dtype.itemsize


def _check_heads(config) -> None:
    heads, kv_heads = config.num_attention_heads, getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    if heads % kv_heads:
        raise ValueError(f"num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv_heads})")
    if getattr(config, "head_dim", None) is None and config.hidden_size % heads:
        raise ValueError(f"hidden_size ({config.hidden_size}) must be a multiple of num_attention_heads ({heads}), "
                         "or give head_dim")


def _pretrained_config(name: str, source: str, attn_implementation: str, overrides: dict):
    from transformers import AutoConfig

    if source == "hub":
        checks.check_hub_reachable(name)
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"cannot load the configuration of {name!r}: {first}; check the name, or use a preset "
                         f"({checks.PRESETS_HINT})") from None
    if config.model_type not in FAMILIES:
        raise ValueError(f"{name!r} is a {config.model_type!r} model; mom supports {', '.join(sorted(FAMILIES))}")
    checks.check_overrides(overrides, config.to_dict(), repr(name))
    for key, value in overrides.items():
        setattr(config, key, value)
    config._attn_implementation = attn_implementation
    _check_heads(config)
    return config


def _build_preset(preset: Preset, config, device, dtype, seed, attn_implementation):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(seed)
    with _default_dtype(dtype), device:
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    logger.info("built preset %s on %s in %s", preset.name, device, dtype)
    return model


def _from_pretrained(name, config, device, dtype, attn_implementation):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        name, config=config, dtype=dtype, attn_implementation=attn_implementation, device_map=str(device)
    )


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)
