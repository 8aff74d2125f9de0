"""A decode step replayed as a CUDA graph, for caches whose layers all stay on the GPU.

Why: through `generate()`, one decode step of an 8B model launches about a thousand small
kernels from Python, and the host, not the GPU, sets the pace (0.04-0.10 s/token measured on
H100 hosts, where reading the weights and the K/V once takes 5-11 ms). A CUDA graph launches
the whole step at once.

A graph needs fixed shapes and fixed addresses. MomCache's device layers keep K/V in
preallocated buffers with room to grow (engine/kv_layer.py), so the addresses hold while the
buffers do. The key length still changes every step; two ways keep the captured shapes fixed:

- "flash-varlen" (half precision on CUDA, the case that matters): flash attention's
  variable-length entry point reads each row's keys from the whole buffer, told how many are
  in use by a device-held count (`seqused_k`). One kernel per layer (split over the keys for a
  single query, memory-bound), and one capture serves every length until the buffer is full
  or moves. The count is written before each replay; the kernel never reads a slot past it.
- "split" (fp32, or no CUDA): attention over two spans of each buffer. The prefix [0, P),
  every token cached when the step was captured, goes to the fused kernel with a fixed length,
  which also returns the log-sum-exp of its scores; the window [P, P + W), the tokens decoded
  since (W <= 256 slots), is attended in fp32 over all W slots with the unfilled ones masked by
  a device-held count, then merged with the prefix by their log-sum-exps. The same softmax over
  the same keys; only the summation order moves. After W steps the step is captured again.

Why not always split: its window adds about 25 small kernels per layer (casts, the masked
softmax, the merge), 800 per step on a 32-layer model, and in a graph the cost of a step is
mostly its kernel count: the split step ran 7.4 ms over the HBM bound on an H100 at 4k and at
128k alike (benchmarks/NOTES.md, 2026-12-07). Capture time is kept apart
(`DecodeGraphs.capture_seconds`).

Memory: a step refers to the K/V buffers it was captured on only weakly, so a finished
generate()'s cache is freed while the handle stays enabled (a graph whose buffers died is never
replayed: `covers` fails and the next step captures anew). Warm-up and capture run on one side
stream per device for the whole process: cuBLAS keeps a workspace (32 MiB on an H100) for each
stream it ever ran on, so a fresh stream per capture left one workspace behind per capture
(450 MiB after the GPU test's 14 captures, 2026-12-07).

The step is written from the family table (engine/families.py): the same modules, called in
the same order as the family's decoder layer (norm, q/k/v, RoPE, K/V written at the position,
attention, o_proj, residual add, norm, MLP, residual add; final norm, LM head). The attention
kernel differs from the eager path, and so do the norms where a family's norm is Llama's RMSNorm
(the same code): torch's rms_norm on the fp32 input computes the same normalization in one
kernel where the module launches six (fp32 power, mean, add, rsqrt, multiply, and the casts
around them), the weight multiplied after the cast back as the module does. 65 norms per step
on a 32-layer model. RoPE rotates q and k in one pass where that equals the family's own
rotation bit for bit (decode_kernels.same_rotation, checked once per handle): 6 kernels a layer
where two calls launch 10. For bf16 on CUDA, Triton kernels fuse further where they match torch
on the device (decode_kernels.StepKernels, engine/triton_kernels.py): the residual add with the
next norm, RoPE with the K/V write, SiLU with the product, 12 kernels a Llama layer where torch's
take about 29. The kernels live in engine/decode_kernels.py.

Taken only in the plain case: one new token per row, no padding, token ids, no per-layer
outputs, no module hooks anywhere in the model (the memory recorder's hooks and the Stop
button's must fire, so their presence sends decode down the eager path), eval mode without
gradients, one device, every layer a full-attention layer resident on the GPU, the cache
planned. Anything else runs eagerly; `path_counts` and `last_eager_reason` say which path ran
and why. Without CUDA, `MomConfig(decode_graph=True)` runs the same static step eagerly,
uncaptured: that is how its exactness is tested on any machine.
"""

from __future__ import annotations

import time
import weakref
from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from . import families
from .decode_kernels import StepKernels, flash_varlen_supported, split_attention, varlen_attention

WINDOW = 256  # decode slots attended outside the captured prefix, per capture
_CAPTURE_STREAMS: dict[torch.device, torch.cuda.Stream] = {}  # one per device, for the process (docstring)


def capture_stream(device: torch.device) -> torch.cuda.Stream:
    """The side stream every capture on `device` warms up and captures on."""
    if device not in _CAPTURE_STREAMS:
        _CAPTURE_STREAMS[device] = torch.cuda.Stream(device=device)
    return _CAPTURE_STREAMS[device]


@dataclass
class _Step:
    """One captured (or, without CUDA, one static) decode step and its fixed inputs."""

    batch: int
    prefix: int  # tokens in the prefix span (fixed for this step's life)
    window: int  # slots in the window span
    buffers: tuple  # weak references to each layer's K and V buffers: a moved or freed one invalidates the step
    input_ids: torch.Tensor  # [B, 1]
    positions: torch.Tensor  # [B, 1] RoPE positions
    slot: torch.Tensor  # [1] buffer index the new token's K/V go to
    window_index: torch.Tensor  # [W] 0..W-1, to mask the unfilled window slots
    filled: torch.Tensor  # [] window slots holding tokens after this step's write
    attention: str = "split"  # "flash-varlen" or "split" (module docstring)
    used: torch.Tensor | None = None  # [B] int32: keys in use after this step's write (flash-varlen)
    cumulative: tuple = ()  # flash-varlen's fixed row offsets of the queries and of the key buffers
    graph: object = None  # torch.cuda.CUDAGraph, or None (static step run eagerly)
    logits: torch.Tensor | None = None

    def covers(self, batch: int, length: int, buffers: tuple) -> bool:
        if batch != self.batch or not self.prefix <= length < self.prefix + self.window:
            return False
        current = [t for kv in buffers for t in kv]
        return len(current) == len(self.buffers) and all(ref() is t for ref, t in zip(self.buffers, current))


class DecodeGraphs:
    """The graph decode path of one handle (module docstring)."""

    def __init__(self, model: nn.Module, family: families.Family, capture: bool):
        self.model, self.family, self.capture = model, family, capture
        self.path_counts: Counter = Counter()  # "graph" / "eager" decode steps taken
        self.last_eager_reason: str | None = None
        self.capture_seconds = 0.0
        self.captures = 0
        self.last_attention: str | None = None  # how the latest step attended: "flash-varlen" or "split"
        self._step: _Step | None = None
        self.disabled: str | None = None  # why this handle stopped trying (a failed capture)
        self._modules = list(model.modules())  # scanned for hooks (a walk per step cost more)
        self._no_hooks_at = -1  # RemovableHandle.next_id when a scan last found no hooks (_hooks_attached)
        self._rope = getattr(model.model.rotary_emb, "rope_type", "default")
        self._kernels: StepKernels | None = None  # the step's norms, RoPE and MLP (chosen at the first step)

    def close(self) -> None:
        self._step = None

    def stats(self) -> dict:
        """Decode steps per path, captures and their seconds, and why the last eager step was eager."""
        return dict(graph_steps=self.path_counts["graph"], eager_steps=self.path_counts["eager"],
                    captures=self.captures, capture_seconds=self.capture_seconds,
                    attention=self.last_attention, last_eager_reason=self.last_eager_reason,
                    kernels=self._kernels.name if self._kernels is not None else None)

    def attention_kind(self) -> str:
        """How the step attends (module docstring): "flash-varlen" for half precision on CUDA."""
        parameter = next(self.model.parameters())
        return "flash-varlen" if flash_varlen_supported(parameter, families.kv_geometry(self.model)[2]) else "split"

    # -- the per-call decision -----------------------------------------------------------
    def run(self, call: dict, cache, output_type):
        """The step's output, or None when this call must take the eager path."""
        reason = self._eager_reason(call, cache)
        if reason is not None:
            self.path_counts["eager"] += 1
            self.last_eager_reason = reason
            return None
        layers = cache.mom_layers()
        input_ids = call["input_ids"]
        batch, length = input_ids.shape[0], layers[0].length
        buffers = tuple(layer.device_kv for layer in layers)
        step = self._step
        if step is None or not step.covers(batch, length, buffers):
            self._step = step = None  # free the old graph's pool before capturing anew
            step = self._new_step(batch, length, buffers, input_ids.device)
        self._set_inputs(step, input_ids, call.get("position_ids"), length)
        self.last_attention = step.attention
        if step.graph is None and self.capture:
            try:
                self._capture(step, layers)
            except RuntimeError as error:  # something in the step cannot be captured: stay eager
                self._step, self.disabled = None, f"capture failed ({error})"
                self.path_counts["eager"] += 1
                self.last_eager_reason = self.disabled
                return None
        elif step.graph is not None:
            step.graph.replay()
        else:
            step.logits = self._forward(step, layers)
        self._step = step
        for layer in layers:
            layer.advance_in_place(1)
        self.path_counts["graph"] += 1
        return output_type(logits=step.logits.clone(), **{_output_cache_field(output_type): cache})

    def _eager_reason(self, call: dict, cache) -> str | None:
        """Why this call cannot take the graph path (None: it can)."""
        from .cache import MomCache

        if self.disabled:
            return self.disabled
        input_ids = call.get("input_ids")
        extra = call.get("kwargs", {})
        if input_ids is None or input_ids.shape[1] != 1:
            return "not a one-token step with token ids"
        if not isinstance(cache, MomCache) or cache.closed:
            return "no mom cache (offload='none' keeps transformers' own cache)"
        if torch.is_grad_enabled() or self.model.training:
            return "gradients enabled or training mode"
        for flag in ("output_hidden_states", "output_attentions", "labels", "inputs_embeds"):
            if extra.get(flag, call.get(flag)):
                return f"{flag} asked for"
        if call.get("use_cache") is False or extra.get("return_dict", call.get("return_dict")) is False:
            return "use_cache=False or return_dict=False"
        if isinstance(call.get("logits_to_keep"), torch.Tensor):
            return "logits_to_keep is a tensor"
        layers = cache.mom_layers()
        if len(layers) != len(cache.layers):
            return "sliding-window layers"
        reason = _layers_reason(layers, cache.decode_planned, input_ids.shape[0])
        if reason is not None:
            return reason
        mask = call.get("attention_mask")
        if mask is not None and (mask.dim() != 2 or not bool(mask.all())):
            return "padded batch (attention mask with zeros)"
        if "dynamic" in self._rope or "longrope" in self._rope:
            return f"RoPE type {self._rope!r} rescales on the host as the context grows"
        if self._hooks_attached():
            return "module hooks attached (memory recorder or Stop)"
        return None

    def _hooks_attached(self) -> bool:
        """_has_module_hooks, its scan (45 us a step on a 32-layer model, a third of the host's
        time before a replay) skipped while no hook can have been added since a scan found none:
        every register_*hook call makes a RemovableHandle, which counts them in `next_id`. A
        scan that found hooks is repeated every step, so a removed hook is noticed at once."""
        stamp = RemovableHandle.next_id
        if stamp != self._no_hooks_at:
            if _has_module_hooks(self._modules):
                return True
            self._no_hooks_at = stamp
        return False

    # -- building and capturing ----------------------------------------------------------
    def _new_step(self, batch: int, length: int, buffers: tuple, device) -> _Step:
        if self._kernels is None:
            self._kernels = StepKernels(self.model, self.family, device)
        capacity = min(b[0].shape[-2] for b in buffers)
        attention = self.attention_kind()
        flat = all(b.is_contiguous() and b.shape[-2] == capacity for kv in buffers for b in kv)
        if not flat or batch * buffers[0][0].shape[1] * capacity >= 2**31:  # flash-varlen's row offsets are int32
            attention = "split"
        window = capacity - length if attention == "flash-varlen" else min(WINDOW, capacity - length)
        if attention == "split":
            for buffer in (b for kv in buffers for b in kv):  # unfilled slots: zeros, never stale NaNs
                buffer[..., length : length + window, :].zero_()  # (a masked score times NaN is NaN)
        long, int32 = dict(dtype=torch.long, device=device), dict(dtype=torch.int32, device=device)
        kv_heads = buffers[0][0].shape[1]
        return _Step(batch, length, window, tuple(weakref.ref(b) for kv in buffers for b in kv),
                     input_ids=torch.zeros(batch, 1, **long), positions=torch.zeros(batch, 1, **long),
                     slot=torch.zeros(1, **long), window_index=torch.arange(min(window, WINDOW), **long),
                     filled=torch.zeros((), **long), attention=attention,
                     used=torch.zeros(batch, **int32),
                     cumulative=(torch.arange(batch + 1, **int32),
                                 torch.arange(batch + 1, **int32) * (kv_heads * capacity)))

    @staticmethod
    def _set_inputs(step: _Step, input_ids, position_ids, length: int) -> None:
        step.input_ids.copy_(input_ids)
        if isinstance(position_ids, torch.Tensor) and position_ids.shape == step.positions.shape:
            step.positions.copy_(position_ids)
        else:
            step.positions.fill_(length)
        step.slot.fill_(length)
        if step.attention == "flash-varlen":  # each fill is a launch per token: only the count the step reads
            step.used.fill_(length + 1)
        else:
            step.filled.fill_(length - step.prefix + 1)

    def _capture(self, step: _Step, layers) -> None:
        """Warm up on a side stream, capture, replay: the replay computes this step."""
        start = time.perf_counter()
        side = capture_stream(step.input_ids.device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # the warm-up writes this step's K/V, as the replay will
            self._forward(step, layers)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side):
            step.logits = self._forward(step, layers)
        step.graph = graph
        graph.replay()
        torch.cuda.current_stream().synchronize()
        self.capture_seconds += time.perf_counter() - start
        self.captures += 1

    def _forward(self, step: _Step, layers) -> torch.Tensor:
        """The static decode step: [B, 1] token ids -> [B, 1, V] logits, K/V written in place."""
        model, family, kernels = self.model, self.family, self._kernels
        x = families.embedding(model)(step.input_ids)
        cos, sin = model.model.rotary_emb(x, step.positions)
        pending = None  # the MLP's output, added to x by the next norm's kernel
        for decoder_layer, cache_layer in zip(families.decoder_layers(model), layers):
            attention = getattr(decoder_layer, family.attention)
            x, h = kernels.residual_norm(x, pending, getattr(decoder_layer, family.input_norm))
            q, k, v = families.project_qkv(family, attention, h)
            keys, values = cache_layer.device_kv
            q = kernels.rope_write(attention, q, k, v, cos, sin, keys, values, step.slot)
            if step.attention == "flash-varlen":
                out = varlen_attention(q, keys, values, step.used, step.cumulative, attention.scaling)
            else:
                out = split_attention(q, keys, values, step.prefix, step.window_index, step.filled, attention.scaling)
            x, h = kernels.residual_norm(x, attention.o_proj(out), getattr(decoder_layer, family.post_attention_norm))
            pending = kernels.mlp(getattr(decoder_layer, family.mlp), h)
        _, h = kernels.residual_norm(x, pending, families.final_norm(model))
        return families.lm_head(model)(h)


def _layers_reason(layers, planned: bool, batch: int) -> str | None:
    """Why the cache's layers cannot take the graph step (None: they can), in one pass."""
    if not planned:
        return "some layers are not resident on the GPU (streamed or not yet placed)"
    length = layers[0].length
    for layer in layers:
        if layer.tier != "device":
            return "some layers are not resident on the GPU (streamed or not yet placed)"
        keys = layer.device_kv[0]
        if layer.length != length or keys.shape[-2] <= length:
            return "a K/V buffer is full (the eager step grows it)"
        if keys.shape[0] != batch:
            return "batch size differs from the cache's"
    return None


def _has_module_hooks(modules: list[nn.Module]) -> bool:
    """Whether any forward hook that must see every call is attached to `modules` or globally
    (transformers' own output-capturing hooks are left out: they act only when per-layer outputs
    are asked for, and such calls take the eager path anyway)."""
    from torch.nn.modules import module as module_globals

    hooks = [*module_globals._global_forward_hooks.values(), *module_globals._global_forward_pre_hooks.values()]
    for m in modules:
        if m._forward_hooks or m._forward_pre_hooks:
            hooks += [*m._forward_hooks.values(), *m._forward_pre_hooks.values()]
    return any(not getattr(hook, "__module__", "").startswith(_TRANSFORMERS_HOOKS) for hook in hooks)


_TRANSFORMERS_HOOKS = "transformers.utils.output_capturing"


def _output_cache_field(output_type) -> str:
    """The output's cache field: `past_key_values` in transformers 5.17, `cache` later."""
    names = getattr(output_type, "__dataclass_fields__", {})
    return "cache" if "cache" in names else "past_key_values"
