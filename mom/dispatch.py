"""Building a preset directly across several devices: `mom.load(preset, device_map=...)`.

A 70B preset is 131 GiB of bf16 weights: it fits two 80 GiB cards but not one, and often not
the host either. So the model is never built whole anywhere: its modules are created on the
meta device (shapes only), the device map is decided on those shapes (Accelerate's
`infer_auto_device_map`, balanced over the cards' free memory as transformers' "auto" is), each
module of the map is then materialized empty on its own device (`to_empty`), and only then are
the weights initialized, in place, on the device that holds them (transformers' own
`init_weights`, which also recomputes the rotary buffers and ties the embeddings). Last,
Accelerate's `dispatch_model` adds the hooks that move activations between devices, exactly as
`from_pretrained(device_map=...)` leaves a model, so mom.enable treats both alike.

Weights that would land on "disk" are refused: random weights are not worth writing to disk,
and the message says how many GPUs would be needed instead.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)

DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def check_device_map(device_map) -> str | dict:
    """A device map as accepted by `mom.load`: a strategy name or {module name: device}.

    Raises:
        ValueError: an unknown strategy, or a map whose devices are not devices.
    """
    if isinstance(device_map, str):
        if device_map not in DEVICE_MAP_STRATEGIES:
            raise ValueError(f"device_map must be one of {DEVICE_MAP_STRATEGIES} or a dict of module name -> device, "
                             f"got {device_map!r}")
        return device_map
    if isinstance(device_map, dict) and device_map:
        for name, device in device_map.items():
            if device in ("cpu", "disk") or isinstance(device, int):
                continue
            try:
                torch.device(device)
            except (RuntimeError, TypeError):
                raise ValueError(f"device_map[{name!r}] = {device!r} is not a device; use 'cuda:0', 0, 'cpu' "
                                 "or 'disk'") from None
        return dict(device_map)
    raise ValueError(f"device_map must be 'auto' or a non-empty dict of module name -> device, got {device_map!r}")


def build_dispatched(config, device_map, dtype: torch.dtype, seed: int, max_memory: dict | None = None) -> nn.Module:
    """A causal LM of `config` with random weights, each module built on its device of the map.

    Raises:
        ModelTooLargeError: the map (given or inferred) sends weights to "disk".
    """
    from accelerate import dispatch_model

    model = _on_meta(config, dtype)
    device_map = resolve_device_map(model, device_map, dtype, max_memory)
    _refuse_disk(model, device_map)
    _materialize(model, device_map)
    _initialize(model, seed, device_map)
    model = dispatch_model(model, device_map=device_map)
    model.hf_device_map = device_map
    logger.info("built %s across %s", config.name_or_path, sorted({str(d) for d in device_map.values()}))
    return model


def resolve_device_map(model: nn.Module, device_map, dtype: torch.dtype, max_memory: dict | None = None) -> dict:
    """{module name: device} for a meta-device model: a given dict as is, a strategy inferred."""
    if isinstance(device_map, dict):
        return device_map
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    no_split = list(getattr(model, "_no_split_modules", None) or [])
    if device_map != "sequential":
        max_memory = get_balanced_memory(model, max_memory=max_memory, no_split_module_classes=no_split, dtype=dtype,
                                         low_zero=device_map == "balanced_low_0")
    return infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=no_split, dtype=dtype)


def _on_meta(config, dtype: torch.dtype) -> nn.Module:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=config._attn_implementation)


def _refuse_disk(model: nn.Module, device_map: dict) -> None:
    from .checks import ModelTooLargeError
    from .load import parameter_count
    from .memory.events import format_bytes

    on_disk = [name for name, device in device_map.items() if device == "disk"]
    if on_disk:
        weights = format_bytes(parameter_count(model.config) * next(model.parameters()).dtype.itemsize)
        raise ModelTooLargeError(
            f"the weights ({weights}) do not fit the devices' memory: the device map puts {len(on_disk)} "
            f"module(s) on disk (first: {on_disk[0]!r}); use more GPUs, a smaller preset, or pass max_memory "
            "with larger limits")


def _materialize(model: nn.Module, device_map: dict) -> None:
    """Each module of the map gets uninitialized storage on its device (nothing on the host)."""
    for name, device in sorted(device_map.items(), key=lambda item: len(item[0])):
        module = model.get_submodule(name) if name else model
        module.to_empty(device=_device(device), recurse=True)


def _initialize(model: nn.Module, seed: int, device_map: dict) -> None:
    torch.manual_seed(seed)
    if any(_device(d).type == "cuda" for d in device_map.values()):
        torch.cuda.manual_seed_all(seed)
    for module in model.modules():  # built on meta, nothing was initialized: initialize everything
        module.__dict__.pop("_is_hf_initialized", None)
    with torch.no_grad():
        model.init_weights()  # in place on each device; rotary buffers recomputed; embeddings tied


def _device(device) -> torch.device:
    return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
