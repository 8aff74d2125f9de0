"""Real architectures by name, built from their published configuration numbers.

Presets let every test, notebook and benchmark run a real architecture offline: the shapes
(and so the memory) are the real model's, the weights are random. Tiny variants keep each
family's structure at a size a CPU runs in milliseconds, for parity tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    """A named architecture: the transformers `model_type` and its config numbers."""

    name: str
    model_type: str
    config: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def is_tiny(self) -> bool:
        return self.name.startswith("tiny-")


def _llama3_rope(factor: float) -> dict[str, Any]:
    return {
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_theta": 500000.0,
    }


_LLAMA3 = dict(vocab_size=128256, num_key_value_heads=8, rms_norm_eps=1e-5, bos_token_id=128000,
               eos_token_id=128001, max_position_embeddings=131072)
_TINY = dict(hidden_size=64, intermediate_size=176, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=512, max_position_embeddings=16384,
             bos_token_id=1, eos_token_id=2, pad_token_id=0)

class _PresetTable(dict):
    """The preset dict; a missing name is a KeyError that suggests the closest preset."""

    def __missing__(self, name):
        from .checks import PRESETS_HINT, closest

        guess = closest(str(name), self)
        hint = f"did you mean {guess!r}? " if guess else ""
        raise KeyError(f"unknown preset {name!r}; {hint}({PRESETS_HINT})")


PRESETS: dict[str, Preset] = _PresetTable({p.name: p for p in [
    Preset("llama-3.1-8b", "llama", dict(_LLAMA3, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
           num_attention_heads=32, rope_parameters=_llama3_rope(8.0), tie_word_embeddings=False),
           "meta-llama/Llama-3.1-8B"),
    Preset("llama-3.2-1b", "llama", dict(_LLAMA3, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
           num_attention_heads=32, head_dim=64, rope_parameters=_llama3_rope(32.0), tie_word_embeddings=True),
           "meta-llama/Llama-3.2-1B"),
    Preset("llama-3.2-3b", "llama", dict(_LLAMA3, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
           num_attention_heads=24, head_dim=128, rope_parameters=_llama3_rope(32.0), tie_word_embeddings=True),
           "meta-llama/Llama-3.2-3B"),
    Preset("qwen2.5-7b", "qwen2", dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
           num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, rms_norm_eps=1e-6,
           max_position_embeddings=32768, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
           use_sliding_window=False, tie_word_embeddings=False, bos_token_id=151643, eos_token_id=151643),
           "Qwen/Qwen2.5-7B"),
    Preset("qwen3-8b", "qwen3", dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288,
           num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6,
           max_position_embeddings=40960, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
           tie_word_embeddings=False, bos_token_id=151643, eos_token_id=151645),
           "Qwen/Qwen3-8B"),
    Preset("mistral-7b", "mistral", dict(vocab_size=32768, hidden_size=4096, intermediate_size=14336,
           num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5,
           max_position_embeddings=32768, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
           sliding_window=None, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
           "mistralai/Mistral-7B-v0.3 (no sliding window)"),
    Preset("mistral-nemo-12b", "mistral", dict(vocab_size=131072, hidden_size=5120, intermediate_size=14336,
           num_hidden_layers=40, num_attention_heads=32, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5,
           max_position_embeddings=1024000, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
           sliding_window=None, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
           "mistralai/Mistral-Nemo-Base-2407"),
    Preset("llama-3.1-70b", "llama", dict(_LLAMA3, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
           num_attention_heads=64, rope_parameters=_llama3_rope(8.0), tie_word_embeddings=False),
           "meta-llama/Llama-3.1-70B (for planning: 131 GiB of bf16 weights)"),
    Preset("qwen2.5-72b", "qwen2", dict(vocab_size=152064, hidden_size=8192, intermediate_size=29568,
           num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8, rms_norm_eps=1e-5,
           max_position_embeddings=131072, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
           use_sliding_window=False, tie_word_embeddings=False, bos_token_id=151643, eos_token_id=151643),
           "Qwen/Qwen2.5-72B (for planning: 135 GiB of bf16 weights)"),
    Preset("tiny-llama", "llama", dict(_TINY, rope_parameters=_llama3_rope(8.0)), "Llama-3 structure, tiny"),
    Preset("tiny-qwen2", "qwen2", dict(_TINY, use_sliding_window=False), "Qwen2 structure (q/k/v biases), tiny"),
    Preset("tiny-qwen3", "qwen3", dict(_TINY, head_dim=16), "Qwen3 structure (q/k norms), tiny"),
    Preset("tiny-mistral", "mistral", dict(_TINY, sliding_window=24),
           "Mistral v0.1 structure with a 24-token sliding window, tiny"),
    Preset("tiny-phi3", "phi3", dict(_TINY), "Phi-3 structure (fused qkv and gate/up), tiny"),
]})

TINY_PRESETS = tuple(name for name in PRESETS if name.startswith("tiny-"))
