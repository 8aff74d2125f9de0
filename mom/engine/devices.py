"""Which device each decoder layer runs on, for models spread across devices.

A model loaded with a `device_map` (Accelerate's `dispatch_model`, transformers'
`from_pretrained(device_map=...)`, `mom.load(preset, device_map=...)`) runs each decoder layer
on its own device. mom keeps each layer's K/V on that layer's device, copies it with that
device's side stream and stages it in that device's share of the pinned pool, so everything
here answers "which device" per layer, never "the model's device".

The answer for one module, in order of trust:
1. an Accelerate hook's `execution_device`, the module's own or its first submodule's
   (weights offloaded to the CPU or disk sit on the meta device or the host until the hook
   brings them, so the parameters would mislead);
2. the device of its first parameter that is not on the meta device;
3. the model's own hook or first real parameter, else its first parameter (a model built on
   the meta device, as mom.predict builds one, computes on meta).
"""

from __future__ import annotations

import torch
from torch import nn

from . import families


def module_device(module: nn.Module) -> torch.device | None:
    """The device a module computes on, or None if nothing says (no hook, only meta parameters)."""
    for inner in module.modules():  # its own hook first, then its submodules' (cpu_offload hooks leaves)
        execution = _hook_execution_device(getattr(inner, "_hf_hook", None))
        if execution is not None:
            return _as_device(execution)
    for parameter in module.parameters():
        if parameter.device.type != "meta":
            return parameter.device
    return None


def layer_devices(model: nn.Module) -> list[torch.device]:
    """The compute device of each decoder layer, in layer order."""
    fallback = module_device(model) or _first_parameter_device(model)
    return [module_device(layer) or fallback for layer in families.decoder_layers(model)]


def devices_in_order(model: nn.Module) -> list[torch.device]:
    """The distinct devices of the decoder layers, in order of first use."""
    seen: list[torch.device] = []
    for device in layer_devices(model):
        if device not in seen:
            seen.append(device)
    return seen


def is_dispatched(model: nn.Module) -> bool:
    """Whether the model was placed by a device map (Accelerate hooks or `hf_device_map`)."""
    return getattr(model, "hf_device_map", None) is not None or hasattr(model, "_hf_hook")


def _hook_execution_device(hook) -> object | None:
    if hook is None:
        return None
    for inner in getattr(hook, "hooks", ()):  # accelerate's SequentialHook
        found = _hook_execution_device(inner)
        if found is not None:
            return found
    return getattr(hook, "execution_device", None)


def _as_device(value) -> torch.device:
    if isinstance(value, int):  # accelerate writes a bare index for cuda:N
        return torch.device("cuda", value)
    return torch.device(value)


def _first_parameter_device(model: nn.Module) -> torch.device:
    # a model built on the meta device (mom.predict's fake model) computes on meta
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")
