"""profile() and find_max_context(): one measured, OOM-safe run, and the search built on it.

`profile` runs `model.generate` on a seeded random prompt under a MomConfig and returns a
`Profile` (events.py). An out-of-memory error is a result, not a crash: it is caught, every
reference into the failed run is dropped, memory is collected back to where the run began, and
the Profile says `oom=True` with the message.

Timing: generate() itself is timed, so what is measured is what users run. A logits processor
appended to generate's own timestamps every token; the first call comes right after the
prefill forward, so TTFT is prompt in to first token's logits, and the decode rate is the
(new_tokens - 1) later tokens over the time between the first and the last call. On CUDA the
processor synchronizes (generate syncs every token anyway, to check for finished sequences).
Recording costs host time per hooked call (about 50 us on an H100 host, ~100 calls per token
for 32 layers): invisible in a long prefill (0.4% at 64k on llama-3.1-8b), but decode is
launch-bound, so a recorded run's decode rate is lower (llama-3.2-1b at 16k on an H100: 52
against 75 tokens/s). Pass `record=False` for decode timings.

`find_max_context` doubles the context from `low` until a try fails, then narrows the bracket
to one `resolution` step. Inside the bracket it may aim at the context where the measured
growth of peak memory per token meets the device limit (at most twice in a row, then a plain
bisection), but the answer is always a tried passing context whose neighbour one step up was
tried and failed, unless `high` itself passed.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from .. import checks
from ..config import MomConfig
from ..engine import families
from ..engine.patch import enable, handle_of
from .cancel import Cancel, RunCancelled, cancel_points
from .events import MaxContextResult, MemoryEvent, Profile, format_bytes
from .oom import oom_kind, requested_bytes
from .probes import Probe, default_probe
from .recorder import Listener, MemoryRecorder

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
    timer = _TokenTimer(probe, watch)
    recorder = None
    with contextlib.ExitStack() as stack:
        if config is not None:
            stack.enter_context(enable(model, config))
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
    result.prefill_peak_bytes = timer.prefill_peak
    result.ttft_s = timer.ttft
    result.decode_tokens_per_s = timer.decode_rate(result.new_tokens, result.batch)


def _generate(model: nn.Module, result: Profile, timer: _TokenTimer, probe: Probe) -> None:
    from transformers import LogitsProcessorList

    ids = _prompt(model, result.batch, result.context, result.seed).to(probe.device)
    mask = torch.ones_like(ids)
    timer.start()
    model.generate(
        ids, attention_mask=mask, max_new_tokens=result.new_tokens, min_new_tokens=result.new_tokens,
        do_sample=False, pad_token_id=_pad_token(model), logits_processor=LogitsProcessorList([timer]),
    )


class _TokenTimer:
    """A LogitsProcessor that timestamps every generated token (and the prefill peak)."""

    def __init__(self, probe: Probe, watch):
        self.probe, self.watch = probe, watch
        self.times: list[float] = []
        self.t0 = 0.0
        self.prefill_peak = 0

    def start(self) -> None:
        self.probe.synchronize()
        self.t0 = time.perf_counter()

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.probe.synchronize()
        self.times.append(time.perf_counter())
        if len(self.times) == 1:
            self.prefill_peak = self.watch.peak
        return scores

    @property
    def ttft(self) -> float | None:
        return self.times[0] - self.t0 if self.times else None

    def decode_rate(self, new_tokens: int, batch: int) -> float | None:
        if len(self.times) < 2 or new_tokens < 2:
            return None
        return batch * (len(self.times) - 1) / max(self.times[-1] - self.times[0], 1e-9)


def find_max_context(
    model: nn.Module,
    config: MomConfig | None = None,
    new_tokens: int = 32,
    resolution: int = 8192,
    low: int | None = None,
    high: int | None = None,
    probe: Probe | None = None,
    limit_bytes: int | None = None,
    progress: bool = True,
    record: bool = True,
    batch: int = 1,
    seed: int = 0,
    jsonl: str | Path | None = None,
    on_try: Callable[[Profile], None] | None = None,
    cancel: Cancel | None = None,
    listeners: tuple[Listener, ...] | list[Listener] = (),
) -> MaxContextResult:
    """The largest context (a multiple of `resolution`) that runs without out-of-memory.

    Args:
        model, config, new_tokens, batch, seed, record, jsonl: as for `profile`, per try.
        resolution: step between contexts tried; the answer is exact to one step.
        low: first context tried (default: one resolution step); rounded up to a step.
        high: largest context tried (default: the model's max_position_embeddings); rounded down.
        probe / limit_bytes: as for `profile`; one probe serves every try.
        progress: show a tqdm progress bar.
        on_try: called with each try's Profile as soon as it finishes (a UI draws tries one by one).
        cancel: a Cancel token: stops the try in flight, and with it the search.
        listeners: passed to every try's `profile` (live plots of the try in flight).

    Returns:
        MaxContextResult: `maximum` (None if `low` fails), every try in order, the cap `high`,
        `limit_reached` (False: every try up to `high` passed, so `maximum` is the cap, not a
        limit), `wall` ("device" / "host" / None) and `cancelled`.

    Raises:
        ValueError: low above high, or a non-positive resolution.
        TypeError / ValueError: a careless argument (mom/checks.py), before anything runs.
    """
    model, config = checks.search_arguments(model, config, new_tokens, resolution, low, high, limit_bytes, batch)
    low, high = _search_bounds(model, resolution, low, high)
    probe = probe or default_probe(model, limit_bytes)
    if probe.limit is None:
        logger.warning("the %s probe has no device limit: every try up to high=%d will pass", probe.backend, high)
    tries: list[Profile] = []

    from tqdm.auto import tqdm

    with tqdm(desc="max context", unit="try", disable=not progress) as bar:
        def attempt(context: int) -> bool:
            bar.set_postfix_str(f"trying {context}")
            run = profile(model, config, context, new_tokens, batch, seed, probe=probe, record=record,
                          listeners=listeners, jsonl=jsonl, cancel=cancel)
            tries.append(run)
            bar.update(1)
            bar.set_postfix_str(f"{context}: {_outcome(run)}")
            if on_try is not None:
                on_try(run)
            if run.cancelled:
                raise RunCancelled(run.error)
            return not run.oom

        with contextlib.suppress(RunCancelled):
            _search(attempt, tries, low, high, resolution, probe.limit)
    passing = [p.context for p in tries if p.passed]
    # the largest passing try: with a cancelled search, the bracket so far
    maximum = max((c for c in passing if not any(p.oom and p.context <= c for p in tries)), default=None)
    return MaxContextResult(maximum=maximum, resolution=resolution, tries=tries, high=high)


def _search(attempt, tries: list[Profile], low: int, high: int, resolution: int, limit: int | None) -> None:
    """Grow, then narrow the bracket to one resolution step (see the module docstring)."""
    passing, failing = _grow(attempt, low, high)
    streak = 0
    while passing is not None and failing is not None and failing - passing > resolution:
        context, predicted = _next_try(passing, failing, tries, limit, resolution, streak)
        streak = streak + 1 if predicted else 0
        if attempt(context):
            passing = context
        else:
            failing = context


def _outcome(run: Profile) -> str:
    if run.cancelled:
        return "cancelled"
    if run.oom:
        return "host wall" if run.oom_kind == "host" else "OOM"
    return format_bytes(run.peak_gpu_bytes)


def _search_bounds(model, resolution: int, low: int | None, high: int | None) -> tuple[int, int]:
    if resolution <= 0:
        raise ValueError(f"resolution must be a positive number of tokens, got {resolution}")
    low = -(-(low or resolution) // resolution) * resolution
    high = high if high is not None else getattr(model.config, "max_position_embeddings", 0) or low
    high = high // resolution * resolution
    if low > high:
        raise ValueError(f"low ({low}) is above high ({high}) once rounded to the resolution ({resolution})")
    return low, high


def _grow(attempt, low: int, high: int) -> tuple[int | None, int | None]:
    """Double from low until a try fails or high passes: (last passing, first failing)."""
    passing, context = None, low
    while True:
        if not attempt(context):
            return passing, context
        passing = context
        if context >= high:
            return passing, None
        context = min(2 * context, high)


def _next_try(passing: int, failing: int, tries: list[Profile], limit: int | None,
              resolution: int, streak: int) -> tuple[int, bool]:
    """The next context inside (passing, failing): predicted from peak growth, or the midpoint."""
    lo, hi = passing + resolution, failing - resolution
    middle = (passing + failing) // 2 // resolution * resolution
    guess = _predict(tries, limit) if streak < 2 else None
    if guess is None:
        return min(max(middle, lo), hi), False
    return min(max(guess // resolution * resolution, lo), hi), True


def _predict(tries: list[Profile], limit: int | None) -> int | None:
    """Where peak memory, linear in context through the two longest passing tries, meets limit."""
    ok = sorted((p for p in tries if p.passed), key=lambda p: p.context)[-2:]
    if limit is None or len(ok) < 2 or ok[1].context == ok[0].context:
        return None
    slope = (ok[1].peak_gpu_bytes - ok[0].peak_gpu_bytes) / (ok[1].context - ok[0].context)
    if slope <= 0:
        return None
    return int(ok[1].context + (limit - ok[1].peak_gpu_bytes) / slope)


def profile_table(profiles: list[Profile]) -> str:
    """A plain-text table of profiles for a terminal: one row each ("peak GPU" only when every run was on one)."""
    peak = "peak GPU" if profiles and all(p.backend == "cuda" for p in profiles) else "peak device"
    header = ("config", "context", "new", peak, "peak host", "TTFT s", "decode tok/s", "result")
    rows = [header]
    for p in profiles:
        rows.append((
            p.label or "-", str(p.context), str(p.new_tokens), format_bytes(p.peak_gpu_bytes),
            format_bytes(p.peak_host_bytes), _fmt(p.ttft_s, 3), _fmt(p.decode_tokens_per_s, 1),
            "OOM" if p.oom else "ok",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def save_json(result: Profile | MaxContextResult | list[Profile], path: str | Path, with_events: bool = False) -> None:
    """Write a Profile, a list of them or a MaxContextResult as indented JSON (what the CLI writes)."""
    if isinstance(result, list):
        data = [p.to_dict(with_events) for p in result]
    else:
        data = result.to_dict(with_events)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def weight_bytes(model: nn.Module) -> int:
    """Bytes of a module's parameters and buffers, each storage once (tied weights count once)."""
    seen: dict[int, int] = {}
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.device.type != "meta":
            storage = tensor.untyped_storage()
            seen[storage._cdata] = storage.nbytes()
    return sum(seen.values())


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


def _prompt(model: nn.Module, batch: int, context: int, seed: int) -> torch.Tensor:
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(min(3, vocab - 1), vocab, (batch, context), generator=generator)


def _pad_token(model: nn.Module) -> int:
    for source in (model.config, getattr(model, "generation_config", None)):
        for name in ("pad_token_id", "eos_token_id"):
            value = getattr(source, name, None)
            if isinstance(value, (list, tuple)):
                value = value[0] if value else None
            if value is not None:
                return int(value)
    return 0


def _collect(probe: Probe, start_bytes: int, force: bool) -> None:
    """Free what a run left behind: reference cycles (a caught OOM's traceback holds the run's
    frames and tensors), then the allocator's cache. A full collection takes a tenth of a
    second in a big process, so it runs only after an OOM or when memory did not come back."""
    if force or probe.allocated() > start_bytes:
        gc.collect()
    probe.free_cached()

