"""Input checks: every careless argument gets one clear error, before any heavy work starts.

Each public entry point (`mom.load`, `mom.profile`, `mom.find_max_context`, the CLI, the demo
and the Explorer) checks what it was given here, first, so a mistake is answered by mom in one
line that names the problem and the way out, instead of a traceback from deep inside torch or
transformers a minute later. Nothing here builds a model, runs a prompt or touches the network
(the hub probe is one short TCP connect, and only for an "org/name" id).

Decisions, applied everywhere:
- Memory limits: `None` means no limit, a positive number of bytes is a limit, and 0 or a
  negative number is a ValueError (an accepted negative limit made every run "OOM", and 0 meant
  "no limit" in one place only).
- Counts (context, new tokens, batch, resolution, low, high) are positive whole numbers; bools
  and floats are refused, even 2.0, so a unit mistake cannot pass silently.
- A context beyond the model's `max_position_embeddings` is a warning, once per model, not an
  error: the memory and time measured there are real (RoPE models run past it, and the
  project's own maximum-context measurements go far beyond it), only the outputs are
  extrapolation. A context whose prompt and KV cache alone exceed the machine's memory is an
  error.
- Wrong kinds of object (a dict where a MomConfig goes, a number where a model goes) are
  TypeErrors; wrong values are ValueErrors; a model too large for the device is a
  ModelTooLargeError (a MemoryError); an unreachable hub is a HubUnreachableError.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
import re
import socket
import tempfile
import warnings
import weakref
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlparse

import psutil
import torch

from .config import MomConfig, check_config
from .memory.events import GiB, format_bytes
from .presets import PRESETS

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")
DEVICE_TYPES = ("cpu", "cuda", "meta")
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")
HUB_CONNECT_TIMEOUT_S = 3.0
PRESETS_HINT = "`mom presets` (or mom.PRESETS) lists the presets"

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32, "f32": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16, "f16": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float64": torch.float64, "fp64": torch.float64, "double": torch.float64,
}
_WARNED_POSITIONS: weakref.WeakSet = weakref.WeakSet()


class ModelTooLargeError(MemoryError):
    """The model's weights cannot fit the device's memory; the message says what to do instead."""


class HubUnreachableError(ConnectionError):
    """A hub id was given but the Hugging Face hub cannot be reached (or is set offline)."""


class ContextWarning(UserWarning):
    """A context beyond the model's max_position_embeddings: measured, but outputs extrapolate."""


def closest(word: str, options: Iterable[str]) -> str | None:
    """The option closest to `word` (case-insensitive), or None if none is close."""
    options = list(options)
    lowered = {option.lower(): option for option in options}
    match = difflib.get_close_matches(str(word).lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def count(value, name: str, hint: str = "") -> int:
    """A positive whole number, or a ValueError naming `name` (and `hint`, the way out)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        kind = f" ({type(value).__name__})" if not isinstance(value, numbers.Integral) else ""
        raise ValueError(f"{name} must be a positive whole number, got {value!r}{kind}" + (f"; {hint}" if hint else ""))
    return int(value)


def check_context(context, name: str = "context") -> int:
    """A prompt length in tokens: a positive whole number.

    Raises:
        ValueError: 0, negative, a float or a bool.
    """
    return count(context, name, "give the prompt length in tokens, e.g. 4096")


def check_limit(limit_bytes, name: str = "limit_bytes") -> int | None:
    """A device-memory limit: None (no limit) or a positive number of bytes.

    Raises:
        ValueError: 0, negative, NaN, infinite or not a number.
    """
    if limit_bytes is None:
        return None
    ok = isinstance(limit_bytes, numbers.Real) and not isinstance(limit_bytes, bool)
    if not ok or not math.isfinite(limit_bytes) or limit_bytes < 1:
        raise ValueError(f"{name} must be a positive number of bytes (e.g. 32 * 2**20 for 32 MiB), got "
                         f"{limit_bytes!r}; leave it out (None) for no limit")
    return int(limit_bytes)


def limit_from_gib(gib: float | None, name: str = "--limit-gib") -> int | None:
    """A limit given in GiB (the CLI's unit) as bytes; None stays None (no limit)."""
    if gib is None:
        return None
    if not gib > 0 or not math.isfinite(gib):
        raise ValueError(f"{name} must be a positive number of GiB, got {gib}; leave it out for no limit")
    return check_limit(max(1, int(gib * GiB)), name)


def check_dtype(dtype) -> torch.dtype | None:
    """A floating torch.dtype from a dtype or a name ("float16", "bf16", "fp32", ...); None stays None.

    Raises:
        ValueError: an unknown name or a non-floating dtype.
    """
    if dtype is None:
        return None
    if isinstance(dtype, str):
        key = dtype.lower().removeprefix("torch.")
        if key not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; use one of 'bfloat16' ('bf16'), 'float16' ('fp16'), "
                             "'float32' ('fp32') or a torch.dtype")
        return _DTYPES[key]
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    raise ValueError(f"dtype must be a floating point type such as torch.bfloat16 or 'float16', got {dtype!r}")


def check_device(device) -> torch.device | None:
    """A torch.device of a type mom runs on (cpu, cuda, cuda:N, meta); None stays None.

    Raises:
        ValueError: an unknown device string, or a CUDA index this machine does not have.
        RuntimeError: CUDA asked for on a machine where torch sees none.
    """
    if device is None:
        return None
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        resolved = None
    if resolved is None or resolved.type not in DEVICE_TYPES:
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'meta', got {device!r}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device={str(device)!r} asked for, but torch sees no CUDA GPU; "
                               "use device='cpu' with a tiny preset (e.g. mom.load('tiny-llama'))")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA "
                             f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return resolved


def check_attention(attn_implementation) -> str:
    """One of the attention implementations transformers offers (mom's default: "sdpa")."""
    if attn_implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation must be one of {ATTENTION_IMPLEMENTATIONS}, "
                         f"got {attn_implementation!r}; 'sdpa' is the default")
    return attn_implementation


def model_source(name) -> str:
    """Where a model name points: "preset", "path" (an existing local directory) or "hub" ("org/name").

    Decided from the name alone, with no network and no transformers import, so a typo is
    answered at once.

    Raises:
        TypeError: not a string or path.
        ValueError: close to a preset ("did you mean ...?"), or neither a preset, an existing
            local path nor a hub id.
    """
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"a model name must be a preset name, a local path or a hub id (a string), got "
                        f"{type(name).__name__}; {PRESETS_HINT}")
    text = os.fspath(name)
    if text in PRESETS:
        return "preset"
    path = Path(text).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ValueError(f"{text!r} exists but is not a model directory (no config.json in it); "
                             "give a directory written by save_pretrained, or a preset")
        return "path"
    guess = closest(text, PRESETS)
    if guess is not None and not HUB_ID.match(text):
        raise ValueError(f"unknown preset {text!r}; did you mean {guess!r}? ({PRESETS_HINT})")
    if HUB_ID.match(text):
        return "hub"
    raise ValueError(f"{text!r} is not a mom preset, an existing local path, nor a Hugging Face hub id "
                     f"(hub ids look like org/name); {PRESETS_HINT}")


def check_hub_reachable(name: str) -> None:
    """Fail fast, in one line, when the hub cannot serve `name`: offline mode, or no connection.

    A model already in the local hub cache passes (transformers uses the cache). Otherwise one
    TCP connect to the hub endpoint, with a short timeout, replaces transformers' retries.

    Raises:
        HubUnreachableError: offline mode is set, or the endpoint does not answer.
    """
    if _in_hub_cache(name):
        return
    offline_hint = f"; for the architecture offline use the preset {_preset_of(name)!r}" if _preset_of(name) else ""
    if _hub_offline():
        raise HubUnreachableError(f"{name!r} is not in the local cache and the hub is offline (HF_HUB_OFFLINE is set); "
                                  f"unset it, or give a local path or a preset{offline_hint}")
    endpoint = os.environ.get("HF_ENDPOINT") or _hub_constant("ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=HUB_CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise HubUnreachableError(f"cannot reach the Hugging Face hub at {endpoint} to download {name!r} "
                                  f"({error.strerror or error}); check the network, or give a local path or a "
                                  f"preset{offline_hint}") from None


def check_overrides(overrides: dict, valid: Iterable[str], model: str) -> None:
    """Config overrides of `mom.load`: every key a config field, every size a positive count.

    Raises:
        ValueError: an unknown key (naming the closest field), or a size below one.
    """
    valid = set(valid)
    for key, value in overrides.items():
        if key not in valid:
            guess = closest(key, valid)
            hint = f"did you mean {guess!r}?" if guess else "see the model's config for its field names"
            raise ValueError(f"{key!r} is not a config field of {model}; {hint}")
        if key in _SIZES:
            count(value, key, _SIZES[key])


_SIZES = {
    "num_hidden_layers": "a model needs at least one decoder layer",
    "hidden_size": "the hidden width", "intermediate_size": "the MLP width",
    "num_attention_heads": "at least one attention head", "num_key_value_heads": "at least one key/value head",
    "head_dim": "the width of one head", "vocab_size": "at least one token",
    "max_position_embeddings": "the longest context the model was trained for",
}


def available_bytes(device: torch.device) -> int | None:
    """Memory a new allocation can use on `device`: free CUDA memory, available RAM on CPU, None on meta."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        return psutil.virtual_memory().available
    return None


def check_weights_fit(what: str, weight_bytes: int, device: torch.device, dtype: torch.dtype) -> None:
    """Refuse to build a model whose weights alone exceed the device's free memory.

    Raises:
        ModelTooLargeError: with the estimate and what to do instead.
    """
    free = available_bytes(device)
    if free is None or weight_bytes <= free:
        return
    where = "available RAM" if device.type == "cpu" else f"free on {device}"
    smaller = " dtype='bfloat16' to halve it," if dtype.itemsize > 2 else ""
    raise ModelTooLargeError(
        f"{what} in {str(dtype).removeprefix('torch.')} needs {format_bytes(weight_bytes)} for its weights alone, "
        f"but only {format_bytes(free)} is {where}; use a tiny preset (e.g. mom.load('tiny-llama')),{smaller} "
        f"device='meta' for its shapes without memory, mom.predict({what}) for its memory on a GPU without one, "
        "or a machine with more memory")


def check_run_fits(context: int, batch: int, kv_bytes_per_token: int, device: torch.device) -> None:
    """Refuse a run whose prompt and KV cache alone exceed this machine (device plus host RAM).

    Raises:
        ValueError: with the bytes needed and the bytes there are.
    """
    needed = batch * context * (kv_bytes_per_token + 8)  # int64 prompt ids + K/V of every layer
    device_free = available_bytes(device) if device.type == "cuda" else 0
    there = psutil.virtual_memory().available + device_free
    if needed > there:
        raise ValueError(f"context {context} (batch {batch}) needs at least {format_bytes(needed)} for the prompt and "
                         f"its KV cache alone, more than this machine has ({format_bytes(there)} free); "
                         "use a shorter context")


def warn_beyond_positions(model: torch.nn.Module, context: int) -> None:
    """Warn once per model when a context passes its max_position_embeddings (a warning, not an error:
    the memory and time are still measured; only the outputs are extrapolation)."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not limit or context <= limit or model in _WARNED_POSITIONS:
        return
    _WARNED_POSITIONS.add(model)
    warnings.warn(f"context {context} is beyond this model's max_position_embeddings ({limit}): memory and time "
                  "are measured as usual, but positions past it were never trained, so the outputs extrapolate "
                  f"(said once per model; stay at or below {limit} for meaningful tokens)", ContextWarning,
                  stacklevel=4)


def check_output_path(path, name: str = "output", example: str = "mom.json") -> Path:
    """A file path a run can write to, checked before the run: not a directory, in a writable directory.

    Raises:
        ValueError: the path is a directory, its directory is missing or not writable, or the
            file exists and cannot be overwritten.
    """
    target = Path(path).expanduser()
    if target.is_dir():
        raise ValueError(f"{name} {str(path)!r} is a directory; give a file name in it, e.g. {str(target / example)!r}")
    parent = target.parent
    if not parent.is_dir():
        raise ValueError(f"{name} {str(path)!r}: the directory {str(parent)!r} does not exist; create it or "
                         "choose another path")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as error:
        raise ValueError(f"{name} {str(path)!r}: cannot write in {str(parent)!r} ({error.strerror or error}); "
                         "choose another path") from None
    if target.exists() and not os.access(target, os.W_OK):
        raise ValueError(f"{name} {str(path)!r} exists and is not writable; choose another path")
    return target


def _hub_constant(name: str, default):
    try:
        from huggingface_hub import constants
    except ImportError:
        return default
    return getattr(constants, name, default)


def _hub_offline() -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE", os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return flag.strip().upper() in ("1", "ON", "YES", "TRUE") or bool(_hub_constant("HF_HUB_OFFLINE", False))


def _in_hub_cache(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return isinstance(try_to_load_from_cache(name, "config.json"), str)


def _preset_of(hub_id: str) -> str | None:
    """The preset with this hub id's architecture, if any (its note names the hub id)."""
    return next((p.name for p in PRESETS.values() if p.note.split(" ")[0].lower() == hub_id.lower()), None)


def run_arguments(model, config, context, new_tokens, batch, limit_bytes) -> tuple[torch.nn.Module, MomConfig | None]:
    """The arguments of `mom.profile`, checked; a preset name for `model` is loaded.

    Returns:
        (model, config), ready to run.

    Raises:
        TypeError: a model that is neither a module nor a name, or a config that is not a MomConfig.
        ValueError: a count below one, a bad limit, or a context this machine cannot hold.
    """
    config = check_config(config)
    context = check_context(context)
    count(new_tokens, "new_tokens", "generate at least one token")
    count(batch, "batch", "run at least one prompt")
    check_limit(limit_bytes)
    model = _model(model)
    check_run_fits(context, batch, _kv_bytes_per_token(model), _device_of(model))
    warn_beyond_positions(model, context)
    return model, config


def search_arguments(model, config, new_tokens, resolution, low, high, limit_bytes, batch) -> tuple[torch.nn.Module, MomConfig | None]:
    """The arguments of `mom.find_max_context`, checked; a preset name for `model` is loaded.

    Raises:
        TypeError / ValueError: as for `run_arguments`; also low, high and resolution below one.
    """
    config = check_config(config)
    count(new_tokens, "new_tokens", "generate at least one token")
    count(batch, "batch", "run at least one prompt")
    count(resolution, "resolution", "the step between contexts tried, e.g. 1024")
    for name, value in (("low", low), ("high", high)):
        if value is not None:
            count(value, name, "a context in tokens, or None for the default")
    check_limit(limit_bytes)
    return _model(model), config


def _model(model) -> torch.nn.Module:
    from .engine.families import family_of
    from .load import as_model

    model = as_model(model)
    family_of(model)  # an unsupported model is refused here, before anything runs
    return model


def _kv_bytes_per_token(model: torch.nn.Module) -> int:
    from .engine.families import kv_geometry_of_config

    layers, kv_heads, head_dim = kv_geometry_of_config(model.config)
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    return 2 * layers * kv_heads * head_dim * dtype.itemsize


def _device_of(model: torch.nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))
