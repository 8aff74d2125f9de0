"""mom.load: a preset name builds random weights offline; anything else goes to from_pretrained.

Presets are built directly on the target device in the target dtype (a `torch.device` context
plus the dtype as default), so an 8B model appears on the GPU in bf16 in seconds and never
passes through fp32 on the host.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from .presets import PRESETS, Preset

logger = logging.getLogger(__name__)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load(
    name: str,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    seed: int = 0,
    attn_implementation: str = "sdpa",
    **overrides,
) -> torch.nn.Module:
    """Load a causal LM in eval mode.

    Args:
        name: a preset (see `mom.PRESETS`: random weights, no download) or a Hub id / local path.
        device: defaults to cuda when available, else cpu.
        dtype: defaults to bf16 on GPU, fp32 on CPU.
        seed: seed for a preset's random weights.
        attn_implementation: "sdpa" by default.
        **overrides: preset config fields to change (e.g. num_hidden_layers=2).

    Raises:
        RuntimeError: CUDA asked for but not available.
    """
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' asked for, but torch sees no CUDA GPU; use device='cpu' with a tiny preset")
    dtype = dtype or default_dtype(device)
    if name in PRESETS:
        model = _build_preset(PRESETS[name], device, dtype, seed, attn_implementation, overrides)
    else:
        model = _from_pretrained(name, device, dtype, attn_implementation, overrides)
    return model.eval()


def preset_config(preset: Preset | str, attn_implementation: str = "sdpa", **overrides):
    """The transformers config object of a preset."""
    from transformers import AutoConfig

    preset = PRESETS[preset] if isinstance(preset, str) else preset
    config = AutoConfig.for_model(preset.model_type, **{**preset.config, **overrides})
    config._attn_implementation = attn_implementation
    return config


def _build_preset(preset, device, dtype, seed, attn_implementation, overrides):
    from transformers import AutoModelForCausalLM

    config = preset_config(preset, attn_implementation, **overrides)
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(seed)
    with _default_dtype(dtype), device:
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    logger.info("built preset %s on %s in %s", preset.name, device, dtype)
    return model


def _from_pretrained(name, device, dtype, attn_implementation, overrides):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        name, dtype=dtype, attn_implementation=attn_implementation, device_map=str(device), **overrides
    )


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)
