"""profile(): one measured generate() run, where running out of memory is a result.

`profile` runs `model.generate` on a seeded random prompt (prompts.py) under a MomConfig and
returns a `Profile` (events.py), timed from inside generate (timing.py) and, unless
`record=False`, with one MemoryEvent per hooked module call (recorder.py).

An out-of-memory error is a result, not a crash (oom.py says which wall: the device, or host
RAM): it is caught, every reference into the failed run is dropped, memory is collected back
to where the run began, and the Profile says `oom=True` with the message and the wall; the
events end with the attempt that failed. A Cancel token (cancel.py) ends a run the same way,
with `cancelled=True`. Anything else is re-raised, after `mom.enable` has restored the model.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from .. import checks
from ..config import MomConfig
from ..engine import families
from ..engine.patch import enable, handle_of
from .cancel import Cancel, RunCancelled, cancel_points
from .events import MemoryEvent, Profile
from .oom import oom_kind, requested_bytes
from .probes import Probe, default_probe
from .prompts import pad_token_id, prompt_ids
from .recorder import Listener, MemoryRecorder
from .sizes import weight_bytes
from .timing import TokenTimer

logger = logging.getLogger(__name__)


def profile(
    model: nn.Module,
    config: MomConfig | None = None,
    context: int = 4096,
    new_tokens: int = 32,
    batch: int = 1,
    seed: int = 0,
    probe: Probe | None = None,
    limit_bytes: int | None = None,
    record: bool = True,
    listeners: tuple[Listener, ...] | list[Listener] = (),
    timing: bool = False,
    jsonl: str | Path | None = None,
    cancel: Cancel | None = None,
) -> Profile:
    """Measure one generate() run: prefill of `context` tokens, then `new_tokens` greedy tokens.

    Args:
        model: a causal LM of a supported family, mom not enabled (unless config is None), or
            a preset name (loaded with `mom.load`).
        config: what mom does; `MomConfig()` is the plain Hugging Face baseline. None runs
            the model as it is (enabled or not).
        context: prompt length in tokens (a seeded random prompt).
        new_tokens: tokens generated (exactly: min_new_tokens is set too).
        batch: prompts in the batch.
        seed: seeds the prompt.
        probe: where numbers come from; default: CUDA allocator stats on a CUDA model, a new
            TensorTracker on CPU.
        limit_bytes: device limit of the default CPU tracker (e.g. 24 * GiB).
        record: attach a MemoryRecorder (per-module events); False measures peaks only.
        listeners: called with each MemoryEvent as it happens (live plots).
        timing: synchronize around every hooked module for exact durations.
        jsonl: append every event to this JSONL file as it happens.
        cancel: a Cancel token; once cancelled (from any thread), the run stops at the next
            hooked module call, the model is restored, and the Profile says `cancelled=True`.

    Returns:
        A Profile with every field filled; on out-of-memory, `oom=True`, `oom_kind` ("device"
        or "host") and `error`, and the events end with the failing attempt (kind "oom").

    Raises:
        AlreadyEnabledError: a config is given but mom is already enabled on the model.
        TypeError / ValueError: a careless argument (mom/checks.py), before anything runs.
    """
    model, config = checks.run_arguments(model, config, context, new_tokens, batch, limit_bytes)
    probe = probe or default_probe(model, limit_bytes)
    result = _new_profile(model, config, context, new_tokens, batch, seed, probe)
    probe.free_cached()  # each run starts from an empty allocator cache: no fragmentation carried over
    with probe:
        probe.reset_host_peak()
        watch = probe.watch()
        result.start_bytes = watch.start_bytes
        try:
            with cancel_points(model, cancel):
                _measured_run(model, config, result, probe, watch, record, listeners, timing, jsonl)
        except RunCancelled as error:
            result.cancelled, result.error = True, str(error)
            logger.info("run cancelled at context %d (%s)", context, result.label)
        except Exception as error:  # only out-of-memory is a result; anything else is re-raised
            if oom_kind(error) is None:
                raise
            _record_oom(result, error, probe, listeners if record else ())
            logger.info("out of memory at context %d (%s): %s", context, result.label, error)
        finally:
            result.peak_gpu_bytes = watch.close()
            kv_host = max((e.kv_host_bytes for e in result.events), default=0)
            result.peak_host_bytes = max(kv_host, probe.host_peak())
    _collect(probe, result.start_bytes, force=result.oom)
    return result


def _record_oom(result: Profile, error: BaseException, probe: Probe, listeners) -> None:
    """Mark the Profile; draw the failing attempt when no hooked module did (outside any)."""
    result.oom, result.oom_kind, result.error = True, oom_kind(error), str(error)
    if result.oom_kind != "device" or not result.events or result.events[-1].kind == "oom":
        return
    last, in_use = result.events[-1], probe.allocated()
    wall = MemoryEvent(
        phase=last.phase, step=last.step, layer=None, module="model", bytes_before=last.bytes_after,
        bytes_after=in_use, peak_bytes=in_use, reserved_bytes=probe.reserved(), kv_gpu_bytes=last.kv_gpu_bytes,
        kv_host_bytes=last.kv_host_bytes, elapsed_s=last.elapsed_s, kind="oom", requested_bytes=requested_bytes(error),
    )
    result.events.append(wall)
    for listener in listeners:
        listener(wall)


def _measured_run(model, config, result: Profile, probe: Probe, watch, record, listeners, timing, jsonl) -> None:
    timer = TokenTimer(probe, watch)
    recorder = handle = None
    with contextlib.ExitStack() as stack:
        if config is not None:
            handle = stack.enter_context(enable(model, config))
        if record:
            tags = {"label": result.label, "context": result.context}
            recorder = MemoryRecorder(model, probe=probe, timing=timing, tags=tags)
            for listener in listeners:
                recorder.add_listener(listener)
            if jsonl is not None:
                recorder.save(jsonl)
            stack.enter_context(recorder)
            result.events = recorder.events
        _generate(model, result, timer, probe)
    if recorder is not None:
        result.events = recorder.events
    result.decode_path = decode_path(handle)
    result.prefill_peak_bytes = timer.prefill_peak
    result.ttft_s = timer.ttft
    result.decode_tokens_per_s = timer.decode_rate(result.new_tokens, result.batch)


def decode_path(handle) -> str:
    """Which decode path a run took: the CUDA-graph replay (engine/graph_decode.py), or eager and why."""
    stats = getattr(handle, "decode_stats", None)
    if not stats:
        return "eager"
    if stats["graph_steps"]:
        return (f"graph: {stats['graph_steps']} of {stats['graph_steps'] + stats['eager_steps']} steps replayed, "
                f"{stats['captures']} capture(s) in {stats['capture_seconds']:.2f} s")
    return f"eager ({stats['last_eager_reason']})" if stats["last_eager_reason"] else "eager"


def _generate(model: nn.Module, result: Profile, timer: TokenTimer, probe: Probe) -> None:
    from transformers import LogitsProcessorList

    ids = prompt_ids(model, result.batch, result.context, result.seed).to(probe.device)
    mask = torch.ones_like(ids)
    timer.start()
    model.generate(
        ids, attention_mask=mask, max_new_tokens=result.new_tokens, min_new_tokens=result.new_tokens,
        do_sample=False, pad_token_id=pad_token_id(model), logits_processor=LogitsProcessorList([timer]),
    )


def _new_profile(model, config, context, new_tokens, batch, seed, probe: Probe) -> Profile:
    families.family_of(model)
    shown = config if config is not None else _current_config(model)
    layers = families.decoder_layers(model)
    return Profile(
        model_name=_model_name(model), config={**asdict(shown), "label": shown.describe()},
        context=context, new_tokens=new_tokens, batch=batch, backend=probe.backend,
        device_name=probe.device_name, device_limit_bytes=probe.limit, weights_bytes=weight_bytes(model),
        seed=seed, layer_weight_bytes=[weight_bytes(layer) for layer in layers],
    )


def _current_config(model: nn.Module) -> MomConfig:
    handle = handle_of(model)
    return handle.config if handle is not None else MomConfig()


def _model_name(model: nn.Module) -> str:
    config = model.config
    return getattr(config, "name_or_path", "") or getattr(config, "model_type", type(model).__name__)


def _collect(probe: Probe, start_bytes: int, force: bool) -> None:
    """Free what a run left behind: reference cycles (a caught OOM's traceback holds the run's
    frames and tensors), then the allocator's cache. A full collection takes a tenth of a
    second in a big process, so it runs only after an OOM or when memory did not come back."""
    if force or probe.allocated() > start_bytes:
        gc.collect()
    probe.free_cached()
