"""The prompt of a measured run: seeded random token ids, and the pad id generate() wants.

Memory and time do not depend on which tokens a prompt holds, only on its length, so a
measured run uses a seeded random prompt: reproducible, and no tokenizer or download needed.
"""

from __future__ import annotations

import torch
from torch import nn


def prompt_ids(model: nn.Module, batch: int, context: int, seed: int) -> torch.Tensor:
    """A seeded random prompt [batch, context] on the CPU, ids from 3 up (never the usual pad,
    bos or eos ids of the presets, so no position reads as padding)."""
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(min(3, vocab - 1), vocab, (batch, context), generator=generator)


def pad_token_id(model: nn.Module) -> int:
    """The pad id generate() needs: the config's pad, else eos, else 0."""
    for source in (model.config, getattr(model, "generation_config", None)):
        for name in ("pad_token_id", "eos_token_id"):
            value = getattr(source, name, None)
            if isinstance(value, (list, tuple)):
                value = value[0] if value else None
            if value is not None:
                return int(value)
    return 0
