"""MomConfig: what mom does to a model, as one frozen, validated value.

`MomConfig()` is plain Hugging Face behaviour, so a baseline is always one config away.
Every other setting computes the same function as the baseline with less memory:

- `mini_sequences` (M) or `mini_sequence_size` (C): token-wise blocks (the MLP) run over the
  prompt in M pieces, or pieces of C tokens. Never both.
- `trim_last_layer`: when only the last position's logits are wanted, the last decoder layer
  runs its MLP and the LM head for that position only. `None` (the default) means "on whenever
  another mom feature is on", which keeps `MomConfig()` the baseline while any real mom config
  trims by default.
- `offload`: where the KV cache lives ("none", "prefill", "stream", "auto"; see engine/cache.py).
- `kv_gpu_budget`: bytes of KV cache kept on the GPU in "auto" mode; None = what fits.
- `decode_graph`: replay each decode step as a CUDA graph when every layer's K/V is resident on
  the GPU (engine/graph_decode.py); needs a mom cache (`offload` other than "none"). `None`
  (the default) means "on for a model on a GPU with a mom cache": measured on an H100 with
  llama-3.1-8b through generate(), 10.1 ms/token at 4k and 15.4 at 128k against Hugging Face's
  95.8 and 65.0 in the same call, within the bf16 criterion and fp32-exact
  (benchmarks/results/2026-12-07_h100_decode_speed_varlen.json, tests/engine/test_gpu.py). True forces it
  (on CPU it runs the same static step uncaptured, which is how its exactness is tested
  anywhere); False keeps every decode step eager.

A misspelled field (`MomConfig(mini_sequence=4)`) is a TypeError naming the closest field.
`check_config` is the one type check of a config argument (a dict or a string where a MomConfig
goes is a TypeError that shows the MomConfig to write); it lives here so the engine can call it
without importing the rest of mom's input checks (mom/checks.py re-exports it).
"""

from __future__ import annotations

import difflib
import functools
import math
from dataclasses import dataclass, fields

OFFLOAD_MODES = ("none", "prefill", "stream", "auto")


class MomConfigError(ValueError):
    """A MomConfig that cannot be run; the message says what to change."""


@dataclass(frozen=True)
class MomConfig:
    """How mom runs a model. See the module docstring for each field.

    Raises:
        MomConfigError: on an impossible combination, at construction.
    """

    mini_sequences: int | None = None
    mini_sequence_size: int | None = None
    trim_last_layer: bool | None = None
    offload: str = "none"
    kv_gpu_budget: int | None = None
    decode_graph: bool | None = None

    def __post_init__(self) -> None:
        if self.mini_sequences is not None and self.mini_sequence_size is not None:
            raise MomConfigError(
                "give mini_sequences (a count M) or mini_sequence_size (tokens per piece C), not both"
            )
        for name in ("mini_sequences", "mini_sequence_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise MomConfigError(f"{name} must be a positive integer or None, got {value!r}")
        if self.offload not in OFFLOAD_MODES:
            raise MomConfigError(f"offload must be one of {OFFLOAD_MODES}, got {self.offload!r}")
        if self.trim_last_layer not in (None, True, False):
            raise MomConfigError(f"trim_last_layer must be True, False or None, got {self.trim_last_layer!r}")
        if self.kv_gpu_budget is not None:
            if self.offload != "auto":
                raise MomConfigError('kv_gpu_budget only applies to offload="auto"; drop it or set offload="auto"')
            if isinstance(self.kv_gpu_budget, bool) or not isinstance(self.kv_gpu_budget, int) or self.kv_gpu_budget < 0:
                raise MomConfigError(f"kv_gpu_budget must be a non-negative number of bytes, got {self.kv_gpu_budget!r}")

        if self.decode_graph not in (None, True, False):
            raise MomConfigError(f"decode_graph must be True, False or None, got {self.decode_graph!r}")
        if self.decode_graph and self.offload == "none":
            raise MomConfigError(
                'decode_graph=True needs a mom cache with fixed K/V buffers: set offload="auto" (layers that '
                'fit stay on the GPU), or drop decode_graph'
            )

    @classmethod
    def paper(cls) -> MomConfig:
        """The MOM paper's setting: 4096-token MLP pieces, last-layer trim, offload during prefill."""
        return cls(mini_sequence_size=4096, trim_last_layer=True, offload="prefill")

    @property
    def uses_mini_sequences(self) -> bool:
        return self.mini_sequences is not None or self.mini_sequence_size is not None

    @property
    def trims_last_layer(self) -> bool:
        """The resolved trim setting (None means: on with any other mom feature)."""
        if self.trim_last_layer is not None:
            return self.trim_last_layer
        return self.uses_mini_sequences or self.offload != "none"

    def graph_decode_on(self, device_type: str) -> bool:
        """The resolved decode_graph setting for a model on `device_type` ("cuda", "cpu", ...):
        None means on with a mom cache on a GPU."""
        if self.decode_graph is not None:
            return self.decode_graph
        return self.offload != "none" and device_type == "cuda"

    @property
    def is_baseline(self) -> bool:
        return not (self.uses_mini_sequences or self.trims_last_layer or self.offload != "none")

    def piece_size(self, seq_len: int) -> int:
        """Tokens per mini-sequence piece for a prompt of `seq_len` tokens (>= 1)."""
        if self.mini_sequence_size is not None:
            return self.mini_sequence_size
        if self.mini_sequences is not None:
            return max(1, math.ceil(seq_len / self.mini_sequences))
        return max(1, seq_len)

    def describe(self) -> str:
        """A short human label, e.g. 'M=16, trim, offload=auto' or 'baseline'."""
        if self.is_baseline:
            return "baseline"
        parts = []
        if self.mini_sequences is not None:
            parts.append(f"M={self.mini_sequences}")
        if self.mini_sequence_size is not None:
            parts.append(f"C={self.mini_sequence_size}")
        if self.trims_last_layer:
            parts.append("trim")
        if self.offload != "none":
            parts.append(f"offload={self.offload}")
        if self.decode_graph:
            parts.append("graph decode")
        return ", ".join(parts)


def _init_with_field_names(init):
    """The dataclass __init__, with a misspelled field answered by its closest name."""

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        names = [f.name for f in fields(MomConfig)]
        for key in kwargs:
            if key not in names:
                guess = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
                hint = f"; did you mean {guess[0]!r}?" if guess else ""
                raise TypeError(f"MomConfig has no field {key!r}{hint} (fields: {', '.join(names)})")
        init(self, *args, **kwargs)

    return __init__


MomConfig.__init__ = _init_with_field_names(MomConfig.__init__)


def check_config(config) -> MomConfig | None:
    """A MomConfig or None; anything else is a TypeError that shows how to write one.

    Raises:
        TypeError: a dict, a string or anything else that is not a MomConfig.
    """
    if config is None or isinstance(config, MomConfig):
        return config
    if isinstance(config, dict):
        fields = ", ".join(f"{k}={v!r}" for k, v in config.items())
        raise TypeError(f"config must be a mom.MomConfig, got a dict; write mom.MomConfig({fields})")
    if isinstance(config, str):
        hint = f"mom.MomConfig(offload={config!r})" if config in OFFLOAD_MODES \
            else "mom.MomConfig(mini_sequences=16, offload='auto')"
        raise TypeError(f"config must be a mom.MomConfig, got the string {config!r}; write {hint}")
    raise TypeError(f"config must be a mom.MomConfig (or None), got {type(config).__name__}; "
                    "write e.g. mom.MomConfig(mini_sequences=16)")
