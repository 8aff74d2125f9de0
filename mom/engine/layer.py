"""The MOM forward of the last decoder layer, generic over families.

When only the last position's logits are wanted, the last decoder layer still runs attention
over every position (so K/V of every position reach the cache) but keeps only the last
position of its output before the post-attention norm: the MLP, the final norm and the LM head
then see one position instead of S. The attention query of the other positions is still
computed; trimming it too would need a per-family attention rewrite (docs/design.md, "The method").
"""

from __future__ import annotations

import torch
from torch import nn

from .families import Family, submodule


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def trimmed_last_layer_forward(layer: nn.Module, family: Family, hidden_states: torch.Tensor, **kwargs):
    """One decoder layer whose output keeps the last position only.

    hidden_states: [B, S, D] -> returns [B, 1, D], equal to the full layer's output[:, -1:].
    `kwargs` are the layer's own keyword arguments (mask, positions, cache, rotary embeddings),
    passed to attention exactly as the family's forward passes them.
    """
    attention_dropout = submodule(layer, family.attention_dropout) or _identity
    mlp_dropout = submodule(layer, family.mlp_dropout) or _identity
    normed = getattr(layer, family.input_norm)(hidden_states)
    attended, _ = getattr(layer, family.attention)(hidden_states=normed, **kwargs)
    del normed
    hidden = hidden_states[:, -1:, :] + attention_dropout(attended[:, -1:, :])
    del attended
    mlp_out = getattr(layer, family.mlp)(getattr(layer, family.post_attention_norm)(hidden))
    return hidden + mlp_dropout(mlp_out)
