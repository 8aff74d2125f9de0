"""enable(model, config) -> Handle: patch one model instance, restore it exactly.

Mechanism (after Liger-Kernel's instance patching): a wrapper is bound into the module's
`__dict__["forward"]`, which `nn.Module.__call__` finds before the class's forward. Classes
are never touched, so a second, unpatched model of the same class is unaffected, and restore
puts back exactly what each module's `__dict__` held before (nothing, or someone else's
instance patch). A handle is kept on the model so a second enable is refused.

What gets patched:
- the causal LM's forward: decides per call whether only the last position is wanted
  (`logits_to_keep=1`, as `generate()` asks) and installs the mom cache when offloading;
- every decoder layer's MLP forward: runs over mini-sequences during prefill;
- the last decoder layer's forward: the trimmed forward of engine/layer.py when trimming.

Per-call state (is this call trimmed?) lives in a thread-local, set inside the call's `try` and
put back in its `finally`: an exception anywhere (the host-RAM guard, an OOM) leaves nothing
behind, and two threads calling one patched model see their own calls. Offload modes share a
pinned pool and a side stream per handle, so their forward calls are serialized by a lock.

Models placed by a device map (Accelerate's `dispatch_model`, `from_pretrained(device_map=...)`)
carry Accelerate hooks: the module's `forward` in its `__dict__` is a wrapper that moves the
inputs to the module's device (and loads offloaded weights), then calls `module._old_forward`.
mom's wrapper replaces `_old_forward` on such a module, not `forward`, so it runs inside the
hook: inputs are on the layer's device before mom's own paths (fused prefill, trimmed last
layer, attention in pieces) run, which call the submodules directly rather than the layer's
original forward. Restore puts `_old_forward` back like any other patch.

Copies: a patched module carries closures over the handle, so `copy.deepcopy`, `pickle` and
`torch.save` of a patched model (or of any patched submodule) are refused with a message that
says to restore first; after `restore()` they work as on any model.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..config import MomConfig, check_config
from . import decode_attention, families
from .attention import attention_in_pieces, can_run_in_pieces
from .layer import trimmed_last_layer_forward
from .minisequence import add_in_pieces, run_in_pieces

logger = logging.getLogger(__name__)

_HANDLE_ATTR = "_mom_handle"
_MISSING = object()
MASK_WARN_BYTES = 1 << 30

# (layer index, piece index, piece count, "start" | "end", block): block is "mlp",
# "attention" (the q/k/v pass) or "attention_out" (the o_proj pass)
PieceHook = Callable[..., None]


class AlreadyEnabledError(RuntimeError):
    """mom is already enabled on this model."""


@dataclass
class _Patch:
    module: nn.Module
    name: str
    previous: Any  # what module.__dict__[name] held before, or _MISSING


class PatchedModelCopyError(TypeError):
    """A patched model (or module) was copied or pickled; restore first."""


@dataclass
class Handle:
    """A model patched by `mom.enable`. Use as a context manager or call `.restore()`."""

    model: nn.Module
    config: MomConfig
    family: families.Family
    piece_hooks: list[PieceHook] = field(default_factory=list)
    _patches: list[_Patch] = field(default_factory=list)
    _calls: threading.local = field(default_factory=threading.local)
    _warned_mask: bool = False
    offload: Any = None  # engine.offload.OffloadRuntime in offload modes
    decode: Any = None  # engine.graph_decode.DecodeGraphs where decode steps may replay a graph
    decode_stats: dict | None = None  # which decode path ran, kept after restore (DecodeGraphs.stats)
    decode_without_cudnn: bool = False  # a mom config on a GPU model: decode steps leave cuDNN's sdpa out (decode_attention.py)

    @property
    def trimming(self) -> bool:
        """Whether the forward call running on this thread keeps only the last position."""
        return getattr(self._calls, "trim", False)

    @property
    def host_pool(self):
        """The pinned host pool of offload modes (None otherwise)."""
        return self.offload.pool if self.offload is not None else None

    @property
    def active(self) -> bool:
        return getattr(self.model, _HANDLE_ATTR, None) is self

    def restore(self) -> None:
        """Undo every patch, newest first. Safe to call twice."""
        while self._patches:
            patch = self._patches.pop()
            if patch.previous is _MISSING:
                patch.module.__dict__.pop(patch.name, None)
            else:
                patch.module.__dict__[patch.name] = patch.previous
        if self.active:
            del self.model.__dict__[_HANDLE_ATTR]
        if self.decode is not None:
            self.decode_stats = self.decode.stats()
            self.decode.close()
            self.decode = None
        if self.offload is not None:
            self.offload.close()
            self.offload = None

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, *exc) -> None:
        self.restore()

    def _bind(self, module: nn.Module, name: str, fn: Callable) -> None:
        if name == "forward":
            name = _forward_slot(module)
        if not any(p.module is module for p in self._patches):
            for guard in ("__deepcopy__", "__reduce_ex__"):
                self._patches.append(_Patch(module, guard, module.__dict__.get(guard, _MISSING)))
                module.__dict__[guard] = _refuse_copy
        self._patches.append(_Patch(module, name, module.__dict__.get(name, _MISSING)))
        module.__dict__[name] = fn


def _forward_slot(module: nn.Module) -> str:
    """Where a module's forward is patched: `_old_forward` under an Accelerate hook (module
    docstring), else `forward`."""
    hooked = "_hf_hook" in module.__dict__ and "_old_forward" in module.__dict__
    return "_old_forward" if hooked else "forward"


def _inner_forward(module: nn.Module) -> Callable:
    """The forward mom wraps: the one an Accelerate hook calls, or the module's own."""
    return getattr(module, _forward_slot(module))


def _refuse_copy(*_args) -> None:
    raise PatchedModelCopyError(
        "this model is patched by mom.enable, and a copy would share the original's patched forwards; "
        "call restore() on the handle (or leave its `with` block) before copy.deepcopy, pickle or "
        "torch.save, then enable mom on the copy"
    )


def handle_of(model: nn.Module) -> Handle | None:
    """The active Handle of a model, or None."""
    return model.__dict__.get(_HANDLE_ATTR)


def enable(model: nn.Module, config: MomConfig | None = None) -> Handle:
    """Patch `model` (this instance only) to run with mom.

    Args:
        model: a Hugging Face *ForCausalLM of a supported family.
        config: what to do; `MomConfig()` (the default) patches nothing and is plain Hugging Face.

    Returns:
        A Handle; `with mom.enable(model, cfg): ...` restores on exit, also on error.

    Raises:
        TypeError: `config` is not a MomConfig (a dict or a mode name: the message shows the
            MomConfig to write), or `model` is a preset name rather than a model.
        UnsupportedModelError: not a causal LM of a supported family.
        AlreadyEnabledError: mom is already enabled on this model.
    """
    config = check_config(config) or MomConfig()
    if isinstance(model, str):
        raise TypeError(f"mom.enable needs a model object, got the string {model!r}; "
                        f"load it first: model = mom.load({model!r})")
    family = families.family_of(model)
    if handle_of(model) is not None:
        raise AlreadyEnabledError("mom is already enabled on this model; restore() the first handle before enabling again")
    handle = Handle(model, config, family)
    handle.decode_without_cudnn = not config.is_baseline and any(p.is_cuda for p in model.parameters())
    model.__dict__[_HANDLE_ATTR] = handle
    try:
        _install(handle)
    except BaseException:
        handle.restore()
        raise
    return handle


def _install(handle: Handle) -> None:
    config, model = handle.config, handle.model
    if config.offload != "none":
        from .offload import OffloadRuntime

        handle.offload = OffloadRuntime(model, config.offload, config.kv_gpu_budget,
                                        config.piece_size if config.uses_mini_sequences else None)
        handle.decode = _decode_graphs(handle)
    handle._bind(model, "forward", _causal_lm_forward(handle, _inner_forward(model)))
    layers = families.decoder_layers(model)
    family = handle.family
    for index, layer in enumerate(layers):
        is_last = index == len(layers) - 1
        if config.uses_mini_sequences:
            mlp = getattr(layer, family.mlp)
            handle._bind(mlp, "forward", _mini_sequence_forward(handle, index, _inner_forward(mlp)))
            for name in (family.input_norm, family.post_attention_norm):
                norm = getattr(layer, name)
                handle._bind(norm, "forward", _token_wise_forward(handle, _inner_forward(norm)))
        if config.uses_mini_sequences or (is_last and config.trims_last_layer):
            attention = getattr(layer, family.attention)
            handle._bind(attention, "forward",
                         _attention_forward(handle, attention, is_last, _inner_forward(attention)))
        if config.uses_mini_sequences:
            handle._bind(layer, "forward", _fused_prefill_layer_forward(handle, layer, _inner_forward(layer)))
    if config.trims_last_layer:
        last = layers[-1]
        handle._bind(last, "forward", _last_layer_forward(handle, last, _inner_forward(last)))


def _decode_graphs(handle: Handle):
    """The graph decode path where the config and the model's device allow it (else None)."""
    from .graph_decode import DecodeGraphs

    devices = {p.device for p in handle.model.parameters()}
    device = devices.pop() if len(devices) == 1 else None
    if device is None or device.type not in ("cuda", "cpu"):  # several devices, or meta (mom.predict)
        return None
    if not handle.config.graph_decode_on(device.type):
        return None
    return DecodeGraphs(handle.model, handle.family, capture=device.type == "cuda")


def _causal_lm_forward(handle: Handle, original: Callable) -> Callable:
    signature = inspect.signature(original)
    positions = {name: index for index, name in enumerate(signature.parameters)}
    config = handle.model.config

    @functools.wraps(original)
    def forward(*args, **kwargs):
        call = signature.bind_partial(*args, **kwargs).arguments
        extra = call.get("kwargs", {})
        seq_len = _sequence_length(call)
        lock = handle.offload.lock if handle.offload is not None else contextlib.nullcontext()
        with lock, decode_attention.for_step(seq_len, handle.decode_without_cudnn):
            previous = handle.trimming, getattr(handle._calls, "in_place", False)
            try:
                handle._calls.trim = (handle.config.trims_last_layer and seq_len > 1
                                      and _only_last_position(call, extra, config))
                handle._calls.in_place = _may_update_hidden_states_in_place(call, extra, config)
                if seq_len > 1:
                    _warn_if_mask_materializes(handle, call, seq_len)
                if handle.offload is not None:
                    args, kwargs = _with_offloaded_cache(handle, call, args, kwargs, positions)
                if seq_len == 1 and handle.decode is not None:
                    output = _graph_decode_step(handle, signature, args, kwargs)
                    if output is not None:
                        return output
                return original(*args, **kwargs)
            finally:
                handle._calls.trim, handle._calls.in_place = previous

    return forward


def _graph_decode_step(handle: Handle, signature: inspect.Signature, args: tuple, kwargs: dict):
    """The decode step through engine/graph_decode.py, or None for the eager path."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    call = signature.bind_partial(*args, **kwargs).arguments
    _, cache = families.cache_in_call(handle.model, call)
    return handle.decode.run(call, cache, CausalLMOutputWithPast)


def _with_offloaded_cache(handle: Handle, call: dict, args: tuple, kwargs: dict, positions: dict):
    """(args, kwargs) with a fresh MomCache in the cache argument, wherever the caller put it."""
    name, current = families.cache_in_call(handle.model, call)
    cache = handle.offload.cache_for(call, current)
    if cache is None:
        return args, kwargs
    index = positions.get(name)
    if index is not None and index < len(args):
        return (*args[:index], cache, *args[index + 1 :]), kwargs
    return args, {**kwargs, name: cache}


def _sequence_length(call: dict) -> int:
    for name in ("input_ids", "inputs_embeds"):
        value = call.get(name)
        if value is not None:
            return value.shape[1]
    return 0


def _only_last_position(call: dict, extra: dict, config) -> bool:
    """True when the caller wants the last position's logits and nothing per-position."""
    keep = call.get("logits_to_keep", 0)
    if isinstance(keep, torch.Tensor) or keep != 1:
        return False
    return call.get("labels") is None and not _collects_per_layer_outputs(call, extra, config)


def _may_update_hidden_states_in_place(call: dict, extra: dict, config) -> bool:
    """Whether decoder layers may add into their input: not when the caller passed its own
    embeddings (they would change) or collects per-layer outputs (they would all change)."""
    return call.get("inputs_embeds") is None and not _collects_per_layer_outputs(call, extra, config)


def _collects_per_layer_outputs(call: dict, extra: dict, config) -> bool:
    """Hidden states or attentions asked for by the call or, where the call is silent, by the
    model's config (`config.output_hidden_states = True`)."""
    for flag in ("output_hidden_states", "output_attentions"):
        asked = extra.get(flag, call.get(flag))
        if asked or (asked is None and getattr(config, flag, False)):
            return True
    return False


def _piece_reporter(handle: Handle, layer_index: int) -> Callable[[str, int, int, str], None]:
    def report(block: str, piece: int, count: int, stage: str) -> None:
        for hook in handle.piece_hooks:
            if block == "mlp":
                hook(layer_index, piece, count, stage)
            else:
                hook(layer_index, piece, count, stage, block)

    return report


def _mini_sequence_forward(handle: Handle, layer_index: int, original: Callable) -> Callable:
    report = _piece_reporter(handle, layer_index)

    def on_piece(piece: int, count: int, stage: str) -> None:
        report("mlp", piece, count, stage)

    @functools.wraps(original)
    def forward(x: torch.Tensor, _mom_fused_norm: Callable | None = None) -> torch.Tensor:
        # x: [B, S, D]; decode steps (S == 1) take the plain path. With _mom_fused_norm (the
        # fused prefill layer), x is the residual stream and x + mlp(norm(x)) is computed in place.
        piece_size = handle.config.piece_size(x.shape[-2])
        hooks = on_piece if handle.piece_hooks else None
        if _mom_fused_norm is not None:
            return add_in_pieces(original, _mom_fused_norm, x, piece_size, hooks)
        if x.shape[-2] <= piece_size:
            return original(x)
        return run_in_pieces(original, x, piece_size, hooks)

    forward._mom_one_token_plain = True  # one token: `original` as is (families._runs_code_of)
    return forward


def _token_wise_forward(handle: Handle, original: Callable) -> Callable:
    """A token-wise module (a norm) over mini-sequences: its fp32 temporaries shrink to a piece."""

    @functools.wraps(original)
    def forward(x: torch.Tensor) -> torch.Tensor:
        return run_in_pieces(original, x, handle.config.piece_size(x.shape[-2]))

    forward._mom_token_wise = True
    forward._mom_one_token_plain = True  # one token: one piece, `original` as is
    return forward


def _attention_forward(handle: Handle, attention: nn.Module, is_last: bool, original: Callable) -> Callable:
    signature = inspect.signature(original)
    report = _piece_reporter(handle, attention.layer_idx)

    @functools.wraps(original)
    def forward(*args, **kwargs):
        fused_norm = kwargs.pop("_mom_fused_norm", None)  # set by the fused prefill layer only
        hidden_states = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        if hidden_states.shape[-2] <= 1:  # decode: the plain path, no argument binding
            return original(*args, **kwargs)
        bound = signature.bind(*args, **kwargs).arguments
        bound.update(bound.pop("kwargs", {}))
        hidden_states = bound.pop("hidden_states")
        seq_len = hidden_states.shape[-2]
        piece_size = handle.config.piece_size(seq_len)
        last_only = is_last and handle.trimming
        hooks = report if handle.piece_hooks else None
        if fused_norm is not None:  # the layer checked that this call can run in pieces
            return attention_in_pieces(handle.family, attention, hidden_states, piece_size, False, hooks,
                                       input_norm=fused_norm, **bound)
        if seq_len > 1 and (seq_len > piece_size or last_only) and can_run_in_pieces(attention, hidden_states, bound):
            return attention_in_pieces(handle.family, attention, hidden_states, piece_size, last_only, hooks, **bound)
        return original(*args, **kwargs)

    return forward


def _fused_prefill_layer_forward(handle: Handle, layer: nn.Module, original: Callable) -> Callable:
    """A decoder layer's prefill with only the residual stream at full length.

    The family's layer computes h = x + attn(norm1(x)); y = h + mlp(norm2(h)), holding x, the
    normed copy, the attention output and the sum at full length. Here x is updated in place:
    the attention norms and projects piece by piece and adds its o_proj output into x, then the
    MLP adds mlp(norm2(x)) into x piece by piece. The same elementwise operations in the same
    order, so the same values; prompt-length transients drop to x, Q, this layer's K/V and the
    attention output (docs/design.md has the bytes per token). Both sub-blocks are called
    through their modules, so memory hooks see them as before. Taken only where the layer may
    change its input (engine/patch.py `_may_update_hidden_states_in_place`), without
    gradients, in eval mode, for a fresh cache layer and a prompt longer than one piece.
    """
    signature = inspect.signature(original)
    family = handle.family
    attention, mlp = getattr(layer, family.attention), getattr(layer, family.mlp)
    # the norms' own forwards: their mini-sequence wrappers would split each piece again
    input_norm, post_norm = (_unwrapped_forward(getattr(layer, name)) for name in
                             (family.input_norm, family.post_attention_norm))

    @functools.wraps(original)
    def forward(*args, **kwargs):
        hidden_states = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        seq_len = hidden_states.shape[-2]
        if seq_len <= handle.config.piece_size(seq_len) or not getattr(handle._calls, "in_place", False) \
                or layer.training:
            return original(*args, **kwargs)
        bound = signature.bind(*args, **kwargs).arguments
        bound.update(bound.pop("kwargs", {}))
        hidden_states = bound.pop("hidden_states")
        if not can_run_in_pieces(attention, hidden_states, bound):
            return original(*args, **kwargs)
        hidden_states, _ = attention(hidden_states=hidden_states, _mom_fused_norm=input_norm, **bound)
        return mlp(hidden_states, _mom_fused_norm=post_norm)

    return forward


def _unwrapped_forward(module: nn.Module) -> Callable:
    """The forward a mom wrapper bound into `module` wraps (or the module's forward as it is)."""
    forward = module.forward
    return getattr(forward, "__wrapped__", forward) if getattr(forward, "_mom_token_wise", False) else forward


def _last_layer_forward(handle: Handle, layer: nn.Module, original: Callable) -> Callable:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def forward(*args, **kwargs):
        if not handle.trimming:
            return original(*args, **kwargs)
        bound = signature.bind(*args, **kwargs).arguments
        hidden_states = bound.pop("hidden_states")
        bound.update(bound.pop("kwargs", {}))
        if hidden_states.shape[-2] <= 1:
            return original(*args, **kwargs)
        return trimmed_last_layer_forward(layer, handle.family, hidden_states, **bound)

    return forward


def _warn_if_mask_materializes(handle: Handle, call: dict, seq_len: int) -> None:
    """Warn once when sdpa/eager will build a dense [B, S, S] mask (16 GiB at 128k tokens).

    Hugging Face passes no mask (causal flag instead) when nothing is padded and the sliding
    window, if any, exceeds the prompt; mom keeps that fast path. Otherwise the mask is dense.
    """
    if handle._warned_mask or families.attention_implementation(handle.model) not in ("sdpa", "eager"):
        return
    window = families.sliding_window(handle.model)
    mask = call.get("attention_mask")
    padded = mask is not None and mask.dim() == 2 and not bool(mask.all())
    windowed = window is not None and seq_len > window
    if not (padded or windowed):
        return
    batch = (call.get("input_ids") if call.get("input_ids") is not None else call["inputs_embeds"]).shape[0]
    mask_bytes = batch * seq_len * seq_len
    if mask_bytes < MASK_WARN_BYTES:
        return
    handle._warned_mask = True
    reason = f"the sliding window ({window}) is shorter than the prompt" if windowed else "the batch is padded"
    warnings.warn(
        f"{reason}, so {families.attention_implementation(handle.model)} attention builds a dense mask of "
        f"{mask_bytes / 2**30:.1f} GiB for {seq_len} tokens; load the model with "
        'attn_implementation="flash_attention_2" (or send unpadded prompts) to avoid it',
        stacklevel=3,
    )
