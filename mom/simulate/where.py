"""Which module a predicted run is in, so that an out-of-memory names where it happened.

A measured run's recorder marks the failing call itself; on fake tensors an allocation that
does not fit can raise from any op, so forward hooks on the embedding, each decoder layer, its
attention and MLP, the final norm and the LM head keep a stack of the modules running, and the
failure is placed in the innermost one (`Where.event`), on the card it ran on.
"""

from __future__ import annotations

from torch import nn

from ..engine import families
from ..memory.events import MemoryEvent
from .devices import ImitatedDevices
from .probe import AllocatorProbe


class Where:
    """Which module is running (forward hooks), for the event of an out-of-memory."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.stack: list[tuple[str, int | None]] = []
        self.phase, self.step = "prefill", 0
        self._handles: list = []

    def __enter__(self) -> Where:
        named = [(families.embedding(self.model), "embedding", None)]
        family = families.family_of(self.model)
        for index, layer in enumerate(families.decoder_layers(self.model)):
            named += [(layer, "layer", index), (getattr(layer, family.attention), "attention", index),
                      (getattr(layer, family.mlp), "mlp", index)]
        named += [(families.final_norm(self.model), "norm", None), (families.lm_head(self.model), "lm_head", None)]
        for module, name, index in named:
            self._handles.append(module.register_forward_pre_hook(
                lambda *_, n=name, i=index: self.stack.append((n, i))))
            self._handles.append(module.register_forward_hook(
                lambda _m, _a, output, n=name, i=index: self._pop(n, i, output), always_call=True))
        return self

    def _pop(self, name: str, index: int | None, output) -> None:
        # a module that raised (output None) stays on the stack: it is where the run failed
        if output is not None and self.stack and self.stack[-1] == (name, index):
            self.stack.pop()

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def event(self, probe: AllocatorProbe, devices: ImitatedDevices | None = None) -> MemoryEvent:
        module, layer = self.stack[-1] if self.stack else ("model", None)
        if devices is None:
            return failure_event(self.phase, self.step, layer, module, probe)
        device = devices.devices[devices.map.layers[layer]] if layer is not None else devices.current()
        event = failure_event(self.phase, self.step, layer, module, devices.probe_of(device))
        event.device = devices.name(device)
        return event


def failure_event(phase: str, step: int, layer: int | None, module: str, probe: AllocatorProbe) -> MemoryEvent:
    """The allocation that would fail, as the recorder marks one (kind "oom")."""
    now = probe.allocated()
    return MemoryEvent(phase=phase, step=step, layer=layer, module=module, bytes_before=now, bytes_after=now,
                       peak_bytes=now, reserved_bytes=probe.reserved(), kind="oom",
                       requested_bytes=probe.last_request)
