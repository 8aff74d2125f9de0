"""Bytes of tensors, counted by storage: the one counter behind weights, figures and the tracker.

Tensors that share a storage (views, tied embeddings and LM heads) cost their memory once, so
every byte count in mom goes through `unique_storages`: `weight_bytes` (a Profile's weights),
the layer figure's weights per position (explore/live.py, with one `seen` set across modules
so a tied weight is counted at its first position only) and the tensor tracker's `track`.
Meta tensors have no memory and are skipped, except where the count is of what they stand for:
a prediction's fake model lives on the meta device (mom/simulate), and its weights are counted
with `meta=True` through the same functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn


def unique_storages(tensors: Iterable[torch.Tensor], seen: set[int] | None = None,
                    meta: bool = False) -> Iterator[torch.UntypedStorage]:
    """Each tensor's untyped storage, once; keys of storages yielded go into `seen` (pass one
    set to several calls to count a storage only at its first appearance). Meta tensors' storages
    only with `meta` (the bytes they stand for)."""
    seen = set() if seen is None else seen
    for tensor in tensors:
        if tensor.device.type == "meta" and not meta:
            continue
        storage = tensor.untyped_storage()
        if storage._cdata not in seen:
            seen.add(storage._cdata)
            yield storage


def storage_bytes(tensors: Iterable[torch.Tensor], seen: set[int] | None = None, meta: bool = False) -> int:
    """Bytes of the tensors' storages, each storage once (see `unique_storages` for `seen` and `meta`)."""
    return sum(storage.nbytes() for storage in unique_storages(tensors, seen, meta))


def module_tensors(module: nn.Module) -> list[torch.Tensor]:
    """A module's parameters and buffers, its submodules' included."""
    return [*module.parameters(), *module.buffers()]


def weight_bytes(module: nn.Module, seen: set[int] | None = None, meta: bool = False) -> int:
    """Bytes of a module's parameters and buffers, each storage once (tied weights count once).

    Args:
        module: any module (a model, a decoder layer).
        seen: storage keys already counted elsewhere, updated in place (see `unique_storages`).
        meta: count meta tensors too, at the bytes they stand for (a prediction's fake model).
    """
    return storage_bytes(module_tensors(module), seen, meta)
