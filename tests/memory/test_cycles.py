"""Many enable / generate / restore cycles, measured and not, leave nothing alive.

Checked with the garbage collector and weak references, not RSS: after the cycles no mom
handle, cache or host pool object exists, the model carries no hook and no patched forward,
and no tracker or host-tier hook is left registered.
"""

from __future__ import annotations

import gc
import weakref

import torch

import mom
from mom.engine import cache as engine_cache
from mom.engine.patch import handle_of
from mom.memory.profile import profile
from mom.memory.tracker import _ACTIVE_TRACKERS
from tests.conftest import prompt

MODES = ("none", "prefill", "stream", "auto")


def _alive(kind: type) -> int:
    return sum(issubclass(type(o), kind) for o in gc.get_objects())


def _instance_state(model) -> tuple[int, int]:
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    patched = sum("forward" in m.__dict__ for m in model.modules())
    return hooks, patched


def test_fifty_cycles_leave_no_handle_cache_pool_or_hook(tiny_models):
    model = tiny_models["tiny-llama"]
    before = _instance_state(model)
    ids = prompt(length=48)
    handles, kinds = [], set()
    for cycle in range(50):
        config = mom.MomConfig(mini_sequences=2, offload=MODES[cycle % len(MODES)])
        if cycle % 5 == 4:  # now and then a measured run instead
            profile(model, config, context=48, new_tokens=2)
            continue
        with mom.enable(model, config) as handle:
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False, pad_token_id=0)
            kinds.add(type(handle))
            if handle.host_pool is not None:
                kinds.add(type(handle.host_pool))
        handles.append(weakref.ref(handle))
        del handle
    kinds.add(mom.MomCache)
    gc.collect()
    assert [h for h in handles if h() is not None] == []
    assert {kind.__name__: _alive(kind) for kind in kinds} == {kind.__name__: 0 for kind in kinds}
    assert handle_of(model) is None and _instance_state(model) == before
    assert _ACTIVE_TRACKERS == [] and getattr(engine_cache, "HOST_TIER_CONTEXTS", []) == []
