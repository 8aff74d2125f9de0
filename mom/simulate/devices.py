"""Several GPUs of one host, imitated on the meta device: which layer runs where, and whose memory
each allocation takes.

Why imitate rather than add up: a model spread by a device map runs mom's per-device code (one
lane per device, each device's `auto` K/V budget from its own free memory, engine/lanes.py and
engine/placement.py). To predict it, that code must run as it would on real cards, so each
module gets an imitated device `meta:i` the way Accelerate marks a dispatched one: an `_hf_hook`
whose `execution_device` engine/devices.py reads. Nothing else of Accelerate is imitated in the
forward but its input copies (below).

Meta tensors forget the device index, so which card an allocation lands on is decided where it
is made: a factory op naming an imitated device (the placement's resident K/V buffers) goes to
that device; anything else goes to the device of the module running (a decoder layer, the
embedding, the final norm, the LM head); the model's own code between them runs on the
embedding's device. Accelerate's hook copies a module's tensor inputs to its device when they
live on another one (`send_to_device`); so does this imitation, so the hidden state crossing a
boundary and the rotary tables each layer receives are counted on the device that receives them.
Host-tier tensors (the offloaded K/V) are one host's, whichever device copies them.

`device_map="auto"` (or `gpus=N` alone) splits the decoder layers into N contiguous blocks as
even as the count allows (the first `L mod N` devices take one layer more), with the embedding
on the first device and the final norm and LM head on the last. Accelerate's "balanced" split is
the reference: it budgets each GPU the model's bytes / N plus the largest layer and fills GPUs in
order, which puts the embedding first and the head last as here, but may give an early GPU one
layer more; pass that model's `hf_device_map` to predict its exact split.
Not modelled: weights offloaded to the CPU or disk, peer-to-peer copy buffers, NCCL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..engine import families
from .gpus import GPU
from .probe import AllocatorProbe, _tensors

_PARTS = ("embedding", "norm", "lm_head")  # beside the decoder layers, the modules that get a device


@dataclass(frozen=True)
class DeviceMap:
    """Each placed module's GPU index: `layers[i]` for decoder layer i, `parts` for the others."""

    count: int
    layers: tuple[int, ...]
    parts: dict[str, int]

    def to_dict(self) -> dict[str, list[int] | int]:
        return {"gpus": self.count, "layers": list(self.layers), **self.parts}


def resolve_device_map(model: nn.Module, device_map, gpus: int | None) -> DeviceMap:
    """The DeviceMap of `device_map` ("auto", "balanced", or {module name: GPU}) over `gpus` cards.

    Raises:
        ValueError: gpus below 1 or not a whole number; an unknown strategy; a map naming a
            module the model lacks, a device that is not a GPU, or a GPU beyond `gpus`; a model
            part the map leaves out.
    """
    if gpus is not None and (isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1):
        raise ValueError(f"gpus must be a whole number of GPUs >= 1, got {gpus!r}")
    layers = len(families.decoder_layers(model))
    if device_map is None or device_map in ("auto", "balanced"):
        return even_split(layers, gpus or 1)
    if isinstance(device_map, str):
        raise ValueError(f"device_map {device_map!r} is not predicted; use 'auto' (even split), or "
                         "{module name: GPU index} (a model's hf_device_map)")
    if not isinstance(device_map, dict):
        raise ValueError(f"device_map must be 'auto' or a dict of module name -> GPU, got {type(device_map).__name__}")
    return _from_dict(model, device_map, gpus)


def even_split(layers: int, gpus: int) -> DeviceMap:
    """The module docstring's rule: contiguous blocks, the first `layers % gpus` one layer longer."""
    base, extra = divmod(layers, gpus)
    per_device = [base + (1 if i < extra else 0) for i in range(gpus)]
    indices = tuple(i for i, n in enumerate(per_device) for _ in range(n))
    return DeviceMap(gpus, indices, {"embedding": 0, "norm": gpus - 1, "lm_head": gpus - 1})


def _from_dict(model: nn.Module, device_map: dict, gpus: int | None) -> DeviceMap:
    names = {module: name for name, module in model.named_modules()}
    known = set(names.values())
    for key in device_map:
        if key != "" and key not in known:
            raise ValueError(f"device_map names {key!r}, which this model does not have")
    indices = {key: _gpu_index(value, key) for key, value in device_map.items()}
    count = gpus if gpus is not None else max(indices.values()) + 1
    for key, index in indices.items():
        if index >= count:
            raise ValueError(f"device_map puts {key!r} on GPU {index}, but there are {count} (gpus={count}): "
                             f"GPUs are numbered 0 to {count - 1}")
    modules = _placed_modules(model)
    placed = {part: _lookup(indices, names[module]) for part, module in modules.items()}
    missing = [names[modules[part]] for part, index in placed.items() if index is None]
    if missing:
        raise ValueError(f"device_map does not place {missing[0]!r}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    layer_count = len(families.decoder_layers(model))
    return DeviceMap(count, tuple(placed[i] for i in range(layer_count)), {p: placed[p] for p in _PARTS})


def _placed_modules(model: nn.Module) -> dict:
    """{layer index or part name: module} of every module that gets a device."""
    found: dict = dict(enumerate(families.decoder_layers(model)))
    found.update(embedding=families.embedding(model), norm=families.final_norm(model), lm_head=families.lm_head(model))
    return found


def _lookup(indices: dict[str, int], name: str) -> int | None:
    """The GPU of the longest map key that is `name` or one of its parents (Accelerate's rule)."""
    best = None
    for key, index in indices.items():
        if key == "" or name == key or name.startswith(key + "."):
            if best is None or len(key) > len(best[0]):
                best = (key, index)
    return None if best is None else best[1]


def _gpu_index(value, key: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    text = str(value)
    if text.startswith("cuda:") and text[5:].isdigit():
        return int(text[5:])
    if text.isdigit():
        return int(text)
    raise ValueError(f"device_map puts {key!r} on {value!r}: a prediction places modules on GPUs only "
                     "(an index or 'cuda:N'); weights offloaded to the CPU or disk are not predicted")


class _ImitatedHook:
    """What engine/devices.py reads of an Accelerate hook: the device a module computes on."""

    def __init__(self, device: torch.device):
        self.execution_device = device


class ImitatedDevices:
    """N imitated GPUs: one AllocatorProbe each, routing, device marks and input copies.

    Args:
        card: the card every device is (its usable bytes are each device's capacity).
        device_map: which module runs on which GPU.
    """

    def __init__(self, card: GPU, device_map: DeviceMap):
        self.card, self.map = card, device_map
        self.devices = [torch.device("meta", i) for i in range(device_map.count)]
        probes = [AllocatorProbe(card.usable_bytes, f"{card.name} #{i} (predicted)") for i in range(1, device_map.count)]
        self.main = _RoutingProbe(card.usable_bytes, f"{card.name} #0 (predicted)", self)
        self.probes: dict[torch.device, AllocatorProbe] = dict(zip(self.devices, [self.main, *probes]))
        self._stack: list[torch.device] = []

    def name(self, device) -> str:
        """How reports name an imitated device: "meta:1" -> "cuda:1"."""
        return f"cuda:{torch.device(device).index or 0}"

    def probe_of(self, device) -> AllocatorProbe:
        return self.probes.get(torch.device(device), self.main)

    def current(self) -> torch.device:
        return self._stack[-1] if self._stack else self.devices[self.map.parts["embedding"]]

    def layer_devices(self) -> list[str]:
        return [self.name(self.devices[i]) for i in self.map.layers]

    def track_weights(self, model: nn.Module) -> dict[torch.device, int]:
        """Allocate each placed module's weights on its device, then the rest on the embedding's."""
        placed = [(self.devices[self._index(key)], module) for key, module in self._modules(model)]
        added: dict[torch.device, int] = {}
        for device, module in [*placed, (self.current(), model)]:  # the rest: the embedding's device
            try:
                added[device] = added.get(device, 0) + self.probes[device].track(*_untracked(module, self.probes.values()))
            except torch.OutOfMemoryError as error:
                error.device = self.name(device)  # which card the weights overflow (runner.py says so)
                raise
        return added

    @contextlib.contextmanager
    def marked(self, model: nn.Module) -> Iterator[None]:
        """Each placed module carries its imitated device as an Accelerate hook would (removed on exit)."""
        marked = []
        try:
            for key, module in self._modules(model):
                if "_hf_hook" in module.__dict__:
                    raise ValueError("the model to predict already carries Accelerate hooks")
                module.__dict__["_hf_hook"] = _ImitatedHook(self.devices[self._index(key)])
                marked.append(module)
            yield
        finally:
            for module in marked:
                module.__dict__.pop("_hf_hook", None)

    @contextlib.contextmanager
    def transfers(self, model: nn.Module) -> Iterator[None]:
        """While a placed module runs, its device is current; its inputs are copied there first."""
        handles = []
        try:
            for key, module in self._modules(model):
                device = self.devices[self._index(key)]
                handles.append(module.register_forward_pre_hook(
                    lambda _m, args, kwargs, d=device: self._enter(d, args, kwargs), with_kwargs=True))
                handles.append(module.register_forward_hook(self._leave, always_call=True))
            yield
        finally:
            for handle in handles:
                handle.remove()
            self._stack = []

    def _enter(self, device: torch.device, args: tuple, kwargs: dict):
        self._stack.append(device)
        return tuple(self._send(a, device) for a in args), {k: self._send(v, device) for k, v in kwargs.items()}

    def _leave(self, *_) -> None:  # returns None: a forward hook's return value would replace the output
        self._stack.pop()

    def _send(self, value, device: torch.device):
        """Accelerate's send_to_device for tensors and tuples of them: a copy when on another device."""
        if isinstance(value, tuple):
            return tuple(self._send(v, device) for v in value)
        if not isinstance(value, torch.Tensor) or isinstance(value, nn.Parameter) or value.device.type != "meta":
            return value
        key = value.untyped_storage()._cdata
        owner = next((p for p in self.probes.values() if p.owns(key)), None)
        if owner is None or owner is self.probes[device] or owner.is_host(key):
            return value  # on this device already, or host-tier
        return torch.empty_like(value)  # made while `device` is current: counted there

    def route(self, kwargs: dict) -> AllocatorProbe:
        """The probe an op's new outputs count on: a factory op's named device, else the current one."""
        named = kwargs.get("device")
        if isinstance(named, torch.device) and named.type == "meta" and named.index is not None:
            return self.probe_of(named)
        return self.probes[self.current()]

    def _modules(self, model: nn.Module):
        yield from _placed_modules(model).items()

    def _index(self, key) -> int:
        return self.map.layers[key] if isinstance(key, int) else self.map.parts[key]


class _RoutingProbe(AllocatorProbe):
    """The first device's probe, whose dispatch mode counts every device's allocations on their own probe."""

    def __init__(self, capacity: int | None, device_name: str, devices: ImitatedDevices):
        super().__init__(capacity, device_name)
        self._devices = devices

    def _on_op(self, kwargs: dict, out) -> None:
        if self._host_depth > 0:  # the offloaded cache: one host, counted here
            self._on_output(out)
            return
        target = self._devices.route(kwargs)
        for tensor in _tensors(out):
            key = tensor.untyped_storage()._cdata
            owner = next((p for p in self._devices.probes.values() if p.owns(key)), target)
            owner._on_output(tensor)


def _untracked(model: nn.Module, probes) -> list[torch.Tensor]:
    """Parameters and buffers of `model` no probe counts yet: tied weights count once, on the
    first device that holds them (Accelerate keeps tied weights together)."""
    return [t for t in (*model.parameters(), *model.buffers())
            if not any(p.owns(t.untyped_storage()._cdata) for p in probes)]
