"""mom: Memory-efficient Offloaded Mini-sequence inference for Hugging Face causal LMs.

Public surface only; see DESIGN.md for the architecture.
"""

from .config import MomConfig, MomConfigError
from .engine.families import FAMILIES, UnsupportedModelError
from .engine.patch import AlreadyEnabledError, Handle, enable
from .load import load
from .presets import PRESETS, TINY_PRESETS

__all__ = [
    "FAMILIES",
    "PRESETS",
    "TINY_PRESETS",
    "AlreadyEnabledError",
    "Handle",
    "MomConfig",
    "MomConfigError",
    "UnsupportedModelError",
    "enable",
    "load",
]
