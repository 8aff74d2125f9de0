"""Cancelling a measured run from elsewhere: a Stop button on a widget, another thread.

A run can only stop where Python gets control back, so cancellation is cooperative: a `Cancel`
token is a thread-safe flag, and `cancel_points` puts a forward pre-hook on every module the
recorder watches (embedding, each decoder layer, its attention and MLP, final norm, LM head)
that raises `RunCancelled` once the flag is set. The run therefore ends at the next hooked call
(milliseconds on a tiny model, one decoder layer of prefill on a large one), through the same
exception path as an out-of-memory error: `mom.enable`'s exit restores the model, the recorder
removes its hooks, and `profile()` returns a Profile marked `cancelled`.

`RunCancelled` is an `Exception`, not a `BaseException`, on purpose: torch runs `always_call`
forward hooks (the recorder closes its open watches there) only for `Exception`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from torch import nn

from ..engine import families


class RunCancelled(Exception):
    """A measured run was stopped through its Cancel token."""


class Cancel:
    """A thread-safe stop flag for `profile(..., cancel=token)` and `find_max_context`.

    `cancel()` may be called from any thread or widget callback; the run stops at its next
    hooked module call. `reset()` makes the token usable for another run.
    """

    def __init__(self) -> None:
        self._flag = threading.Event()

    def cancel(self) -> None:
        """Ask the run to stop at its next hooked call."""
        self._flag.set()

    def reset(self) -> None:
        """Clear the flag (for the next run)."""
        self._flag.clear()

    @property
    def cancelled(self) -> bool:
        return self._flag.is_set()

    def check(self) -> None:
        """Raises:
            RunCancelled: the token was cancelled.
        """
        if self._flag.is_set():
            raise RunCancelled("run cancelled")


def _watched_modules(model: nn.Module) -> list[nn.Module]:
    family = families.family_of(model)
    modules = [families.embedding(model)]
    for layer in families.decoder_layers(model):
        modules += [layer, getattr(layer, family.attention), getattr(layer, family.mlp)]
    return modules + [families.final_norm(model), families.lm_head(model)]


@contextlib.contextmanager
def cancel_points(model: nn.Module, token: Cancel | None) -> Iterator[None]:
    """While inside, every watched module call first checks `token` (nothing when None)."""
    if token is None:
        yield
        return

    def check(module, args):
        token.check()

    handles = [module.register_forward_pre_hook(check) for module in _watched_modules(model)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
