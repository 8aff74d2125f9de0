"""mom.predict: a Profile of a run that never happens, from mom's own code on the meta device.

The run is the one `mom.profile` measures and benchmarks/harness.py times: a prefill of the
prompt asking for the last position's logits (as `generate()` does), then greedy decode steps
through the returned cache, under `mom.enable` with the given config. It runs on a fake model
(fake.py) inside an AllocatorProbe (probe.py), with the ordinary MemoryRecorder attached, so
the Profile carries the same per-layer and per-piece events as a measured one. Nothing is
computed, so the context length costs nothing; what costs time is Python per op (layers x
mini-sequence pieces: about a second for an 8B model in 16 pieces, 7 s at 720k in 4k pieces).

Decode steps after the second repeat the same allocations with one more token of K/V each:
the first two are run (the first one reloads or starts streaming the offloaded cache) and the
remaining steps are accounted, not run: their peak grows by the K/V of one token on the
device per step, exactly what running them shows (tests/simulate compare both).

Offloaded caches: the engine's MomCache runs as it is, with two instance-level substitutions
(seams.py): the handle's host pool makes fake host-tier tensors and checks host RAM against
`host_bytes` where the engine checks it, with the blocks it counts; the handle's copier answers
"how much device memory is free?" (which offload="auto" places layers by) from the allocator
model instead of CUDA. An out-of-memory is placed in the module that was running (where.py).

What shape-only tensors cannot see (kernels' workspaces) is added from calibration.py and listed
in the Prediction.

Several GPUs (`gpus=N`, `device_map=...`): the same run on imitated devices (devices.py), one
allocator model per card, each counting the allocations of the modules placed on it; the
engine's free-memory question is answered per lane from that lane's card. The Prediction keeps
each card's peak (`peak_by_device`, "cuda:0", ...), each layer's card (`layer_devices`), and an
out-of-memory names the card that ran out. The speed model is the single card's: under a device
map the layers run one card after another, the same work in the same order.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..config import MomConfig
from ..engine import families
from ..engine.host_guard import HostMemoryError
from ..engine.patch import enable
from ..memory.events import MemoryEvent, Profile
from ..memory.recorder import MemoryRecorder
from ..memory.sizes import weight_bytes
from . import calibration, seams, speed
from .devices import ImitatedDevices, resolve_device_map
from .fake import fake_model, model_config, run_context
from .gpus import GPU, resolve_gpu
from .probe import AllocatorProbe
from .where import Where, failure_event

RUN_DECODE_STEPS = 2  # decode steps run on fake tensors; later ones are accounted (module docstring)


@dataclass(repr=False)  # Profile's one-line repr, not a dump of every event
class Prediction(Profile):
    """A predicted Profile (backend "predicted") and what the prediction rests on.

    gpu: the card's name; peak_reserved_bytes: the allocator model's reserve high-water mark;
    calibration: bytes and speeds added from committed measurements, with their sources;
    ttft_range_s / decode_s_per_token_range: (low, high) of the speed model;
    decode_step_s: the steady decode step, without the first step's reload of a cache offloaded in
        prefill (decode_tokens_per_s spreads that reload over the new tokens: the mean a user waits;
        a streamer's median step has no reload, so it is compared with this);
    decode_reload_s: that first step's reload, whole (0 where nothing was offloaded in prefill);
    speed_notes: what bounds each phase (compute, HBM, host link, host launch overhead);
    engine_notes: what the engine warned of while it ran on fake tensors (a layer that streams
        after all, say), kept here rather than logged: a plan's search runs dozens of predictions;
    oom_event: the call that would fail (oom_kind says which wall: "device" or "host"; its
        `device` names the card on several GPUs);
    gpus, device_map: how many cards, and which module runs on which (several GPUs only);
    logits_to_keep: the prefill's logits, as generate() and forward take it (1: the last
        position's; 0: every position's, as the paper's Standard and a plain forward keep);
    prefill_chunk_size: the prefill in calls of this many tokens, as generate(prefill_chunk_size=...)
        runs it (None: one call);
    pieces_sampled: each mini-sequence loop ran its first three pieces and its last (a search's
        try, `predict(every_piece=False)`): peaks, OOM and speed as with every piece, the events
        of those pieces only.
    """

    gpu: str = ""
    peak_reserved_bytes: int = 0
    calibration: dict[str, Any] = field(default_factory=dict)
    ttft_range_s: tuple[float, float] | None = None
    decode_s_per_token_range: tuple[float, float] | None = None
    decode_step_s: float | None = None
    decode_reload_s: float = 0.0
    speed_notes: list[str] = field(default_factory=list)
    engine_notes: list[str] = field(default_factory=list)
    pieces_sampled: bool = False
    oom_event: MemoryEvent | None = None
    gpus: int = 1
    device_map: dict[str, Any] | None = None
    logits_to_keep: int = 1
    prefill_chunk_size: int | None = None


def predict(
    model: Any,
    config: MomConfig | None = None,
    context: int = 4096,
    new_tokens: int = 32,
    batch: int = 1,
    gpu: str | int | GPU = "H100-80GB",
    host_bytes: int | None = None,
    dtype: torch.dtype = torch.bfloat16,
    listeners: tuple = (),
    gpus: int | None = None,
    device_map: str | dict | None = None,
    logits_to_keep: int = 1,
    prefill_chunk_size: int | None = None,
    every_piece: bool = True,
) -> Prediction:
    """Predict the memory and speed of a prefill of `context` tokens and `new_tokens` greedy tokens.

    Args:
        model: a preset name, a transformers config, a local folder or config.json, a hub id
            (when reachable) or a model object (only its config is used).
        config: what mom does; None or `MomConfig()` is plain Hugging Face.
        context, new_tokens, batch: the run, as for `mom.profile`.
        gpu: a name from `mom.simulate.GPUS`, a size such as "custom-24GiB", bytes, or a GPU.
        host_bytes: host RAM available for an offloaded cache; None: unlimited.
        dtype: weights and activations dtype (bf16, as on a GPU).
        listeners: called with each MemoryEvent as it is predicted.
        gpus: spread the model over this many cards of `gpu` (devices.py's even split, as
            device_map="auto"); None: one card, or as many as `device_map` names.
        device_map: "auto", or {module name: GPU index or "cuda:N"} (a model's `hf_device_map`).
        logits_to_keep: the prefill's logits (1: the last position's, as generate() asks;
            0: every position's, as `generate(logits_to_keep=0)` or a plain forward keeps).
        prefill_chunk_size: transformers' chunked prefill, `generate(prefill_chunk_size=...)`:
            the prompt in calls of this many tokens onto the growing cache (None: one call).
        every_piece: False runs only the first three and the last piece of each mini-sequence
            loop (seams.sample_pieces): the same peaks, OOM verdict and speed, tens of times faster
            at a million tokens, but the events show only those pieces. The searches over
            predictions (mom.plan, find_max_context) use it; a prediction to draw should not.

    Returns:
        A Prediction (a Profile): oom=True with `oom_kind` and `oom_event` when it would not fit.

    Raises:
        ValueError: gpus below 1; a device map naming an unknown module, a non-GPU device or a
            GPU beyond `gpus`, or leaving a module out; logits_to_keep below 0; a
            prefill_chunk_size below 1.
    """
    if logits_to_keep < 0:
        raise ValueError(f"logits_to_keep must be 0 (every position) or a count of last positions, got {logits_to_keep}")
    if prefill_chunk_size is not None and prefill_chunk_size < 1:
        raise ValueError(f"prefill_chunk_size must be a positive number of tokens or None, got {prefill_chunk_size}")
    config = config or MomConfig()
    card = resolve_gpu(gpu)
    hf_config, name = model_config(model)
    fake = fake_model(hf_config, name, dtype)
    devices = _imitated_devices(fake.model, card, gpus, device_map)
    result = _new_prediction(fake.model, name, config, context, new_tokens, batch, card)
    result.logits_to_keep, result.prefill_chunk_size = logits_to_keep, prefill_chunk_size
    probe = devices.main if devices else AllocatorProbe(card.usable_bytes, f"{card.name} (predicted)")
    if devices:
        _describe_devices(result, devices)
    result.pieces_sampled = not every_piece
    with run_context(), (devices.marked(fake.model) if devices else contextlib.nullcontext()), \
            seams.engine_warnings(result.engine_notes), seams.pieces(every_piece):
        _run(fake.model, config, result, probe, host_bytes, listeners, devices)
    speed.fill(result, fake.model.config, config, card, batch)
    return result


def _imitated_devices(model: nn.Module, card: GPU, gpus, device_map) -> ImitatedDevices | None:
    """The imitated cards of a several-GPU prediction; None for one card (the plain run)."""
    if gpus is None and device_map is None:
        return None
    resolved = resolve_device_map(model, device_map, gpus)
    return ImitatedDevices(card, resolved) if resolved.count > 1 else None


def _describe_devices(result: Prediction, devices: ImitatedDevices) -> None:
    result.gpus, result.device_map = devices.map.count, devices.map.to_dict()
    result.layer_devices = devices.layer_devices()
    result.device_name = f"{devices.map.count}x {devices.card.name} (predicted)"


def _new_prediction(model: nn.Module, name: str, config: MomConfig, context: int, new_tokens: int,
                    batch: int, card: GPU) -> Prediction:
    layers = families.decoder_layers(model)
    return Prediction(
        model_name=name, config={**asdict(config), "label": config.describe()}, context=context,
        new_tokens=new_tokens, batch=batch, backend="predicted", device_name=f"{card.name} (predicted)",
        device_limit_bytes=card.usable_bytes, weights_bytes=weight_bytes(model, meta=True), gpu=card.name,
        layer_weight_bytes=[weight_bytes(layer, meta=True) for layer in layers],
    )


def _run(model: nn.Module, config: MomConfig, result: Prediction, probe: AllocatorProbe, host_bytes: int | None,
         listeners, devices: ImitatedDevices | None = None) -> None:
    where = Where(model)
    try:
        result.start_bytes = _track_weights(model, probe, devices)
        workspace = [calibration.hold_unseen(p) for p in _probes(probe, devices)]  # noqa: F841  (held like cuBLAS's)
    except torch.OutOfMemoryError as error:  # the weights alone do not fit
        _weights_do_not_fit(result, error, probe, devices)
        return
    recorder = MemoryRecorder(model, probe=probe, tags={"label": result.label, "context": result.context},
                              device_probes=devices.probes if devices else None)
    if devices:
        recorder.add_listener(lambda event: _name_device(event, devices))  # first: later listeners see "cuda:i"
    for listener in listeners:
        recorder.add_listener(listener)
    try:
        with enable(model, config) as handle, where, recorder, _transfers(model, devices):
            seams.use_fake_host_pool(handle, probe, host_bytes)
            seams.answer_free_memory(handle, probe, devices)
            _prefill_and_decode(model, result, probe, where, recorder, devices)
    except HostMemoryError as error:  # the engine's host-RAM guard, against host_bytes
        result.oom, result.oom_kind, result.error = True, "host", str(error)
    except torch.OutOfMemoryError as error:
        result.oom, result.oom_kind, result.error = True, "device", str(error)
        failed = [e for e in recorder.events if getattr(e, "kind", "call") == "oom"]  # the recorder's own
        result.oom_event = failed[-1] if failed else where.event(probe, devices)
        if not failed:
            recorder.events.append(result.oom_event)
        if devices:
            result.error = f"{_card_of(result.oom_event.device, devices)} ran out: {error}"
    result.events = recorder.events
    _peaks_by_device(result, recorder, devices)
    result.peak_gpu_bytes = max(result.peak_gpu_bytes, recorder.peak_bytes, *result.peak_by_device.values())
    result.peak_reserved_bytes = max(p.allocator.peak_reserved for p in _probes(probe, devices))
    result.peak_host_bytes = max(probe.host_peak(), max((e.kv_host_bytes for e in result.events), default=0))
    result.calibration = calibration.describe()


def _prefill_and_decode(model, result: Prediction, probe: AllocatorProbe, where, recorder,
                        devices: ImitatedDevices | None = None) -> None:
    cache_name = families.cache_in_call(model, {})[0]
    cache, chunk = None, result.prefill_chunk_size or result.context
    for start in range(0, result.context, chunk):  # generate(prefill_chunk_size=...) runs a chunk a call
        ids = torch.zeros(result.batch, min(chunk, result.context - start), dtype=torch.long, device="meta")
        out = model(input_ids=ids, logits_to_keep=result.logits_to_keep, use_cache=True,
                    **({cache_name: cache} if cache is not None else {}))
        cache = _cache_of(out)
        if start + chunk < result.context:
            del out
    result.prefill_peak_bytes = recorder.peak_bytes
    token = out.logits[:, -1:].argmax(-1)
    del out, ids
    steps = max(0, result.new_tokens - 1)
    watches = {d: p.watch() for d, p in devices.probes.items()} if devices else {None: probe.watch()}
    for step in range(1, min(steps, RUN_DECODE_STEPS) + 1):
        where.phase, where.step = "decode", step
        out = model(input_ids=token, logits_to_keep=1, use_cache=True, **{cache_name: cache})
        token = out.logits[:, -1:].argmax(-1)
        del out
    growth = _later_steps_growth(cache, steps)
    layer_device = devices.map.layers if devices else None
    for device, watch in watches.items():
        mine = [g for i, g in enumerate(growth) if layer_device is None or devices.devices[layer_device[i]] == device]
        decode_peak = watch.close() + sum(mine)
        if devices:
            name = devices.name(device)
            result.peak_by_device[name] = max(result.peak_by_device.get(name, 0), decode_peak)
        result.peak_gpu_bytes = max(recorder.peak_bytes, result.peak_gpu_bytes, decode_peak)


def _cache_of(output):
    return output["cache"] if "cache" in output else output.past_key_values


def _later_steps_growth(cache, steps: int) -> list[int]:
    """Each layer's peak growth over the decode steps not run: one more token of its
    device-resident K/V each (index i: the cache's layer i, decoder layer i)."""
    skipped = steps - RUN_DECODE_STEPS
    if skipped <= 0 or cache is None:
        return []
    growth = []
    for layer in getattr(cache, "layers", []):
        keys = getattr(layer, "keys", None)
        device_kv = getattr(layer, "device_kv", "plain")
        plain = keys is not None and device_kv == "plain"  # a transformers layer grows by torch.cat
        growth.append(skipped * 2 * keys[..., :1, :].numel() * keys.element_size() if plain else 0)
    return growth


def _probes(probe: AllocatorProbe, devices: ImitatedDevices | None) -> list[AllocatorProbe]:
    return list(devices.probes.values()) if devices else [probe]


def _transfers(model: nn.Module, devices: ImitatedDevices | None):
    return devices.transfers(model) if devices else contextlib.nullcontext()


def _track_weights(model: nn.Module, probe: AllocatorProbe, devices: ImitatedDevices | None) -> int:
    if devices is None:
        return probe.track(*model.parameters(), *model.buffers())
    return sum(devices.track_weights(model).values())


def _weights_do_not_fit(result: Prediction, error, probe: AllocatorProbe, devices: ImitatedDevices | None) -> None:
    failing = getattr(error, "device", None)  # set by ImitatedDevices.track_weights
    where = f" on {_card_of(failing, devices)}" if devices and failing else ""
    result.oom, result.oom_kind, result.error = True, "device", f"the weights do not fit{where}: {error}"
    result.oom_event = failure_event("prefill", 0, None, "weights", devices.probe_of(failing) if where else probe)
    result.oom_event.device = failing if where else None
    result.events = [result.oom_event]
    result.peak_gpu_bytes = result.weights_bytes


def _name_device(event: MemoryEvent, devices: ImitatedDevices) -> None:
    if event.device is not None and event.device.startswith("meta"):
        event.device = devices.name(event.device)


def _card_of(device: str | None, devices: ImitatedDevices) -> str:
    """"cuda:1 (H100-80GB #1)": the card an out-of-memory happened on."""
    if device is None:
        return f"a {devices.card.name}"
    return f"{device} ({devices.card.name} #{torch.device(device).index})"


def _peaks_by_device(result: Prediction, recorder: MemoryRecorder, devices: ImitatedDevices | None) -> None:
    if devices is None:
        return
    for device, peak in recorder.peaks_by_device.items():
        name = devices.name(device)
        result.peak_by_device[name] = max(result.peak_by_device.get(name, 0), peak)


