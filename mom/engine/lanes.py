"""One side stream and one share of the pinned pool per device: the lanes of one handle.

A model spread over several devices (a `device_map`) runs each decoder layer on its own
device, so its K/V are copied by that device's copy engine. One side stream per device lets
the devices' copies overlap, and ordering stays simple: a layer's copies are always on its own
device's stream. The pinned pool is split the same way: blocks are pinned in the context of
the device that copies them (cudaHostRegister pins for the current device's context), and a
block goes back to the pool of the device that lent it, so each device's share is the K/V of
its own layers. A model on one device has one lane, exactly as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .copies import SideStreamCopier
from .pinned import HostPool


@dataclass(eq=False)  # hashed by identity: one lane per device
class Lane:
    """What one device's layers share: its side-stream copier and its pinned pool."""

    device: torch.device
    copier: SideStreamCopier
    pool: HostPool


class Lanes:
    """The lanes of one handle, one per device, and which lane serves each decoder layer.

    Args:
        layer_devices: the compute device of each decoder layer (engine/devices.py).
    """

    def __init__(self, layer_devices: list[torch.device]):
        if not layer_devices:
            raise ValueError("a model with no decoder layers has nothing to offload")
        self.by_device: dict[torch.device, Lane] = {}
        for device in layer_devices:
            if device not in self.by_device:
                copier = SideStreamCopier(device)
                pool = HostPool(pin=device.type == "cuda", synchronize=copier.synchronize, device=device)
                self.by_device[device] = Lane(device, copier, pool)
        self._of_layer = [self.by_device[device] for device in layer_devices]

    def of_layer(self, index: int) -> Lane:
        """The lane of decoder layer `index` (its device's stream and pool)."""
        return self._of_layer[index]

    def __iter__(self) -> Iterator[Lane]:
        return iter(self.by_device.values())

    def __len__(self) -> int:
        return len(self.by_device)

    @property
    def first(self) -> Lane:
        return self._of_layer[0]

    @property
    def free_bytes(self) -> int:
        """Pinned bytes free for reuse, over every device's share."""
        return sum(lane.pool.free_bytes for lane in self)

    def close(self) -> None:
        """Wait for every device's copies, then unpin every share."""
        for lane in self:
            lane.pool.clear()
