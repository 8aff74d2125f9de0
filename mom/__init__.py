"""mom: Memory-efficient Offloaded Mini-sequence inference for Hugging Face causal LMs.

Public surface only; see DESIGN.md for the architecture. The explorer (ipywidgets, plotly)
is imported lazily so the engine works without the notebook extras.
"""

from .config import MomConfig, MomConfigError
from .engine.cache import HostMemoryError, MomCache
from .engine.families import FAMILIES, UnsupportedModelError
from .engine.patch import AlreadyEnabledError, Handle, enable
from .load import load
from .memory.events import MaxContextResult, MemoryEvent, Profile, format_bytes
from .memory.probes import CudaProbe, Probe, TensorTracker
from .memory.profile import find_max_context, profile
from .memory.recorder import MemoryRecorder
from .presets import PRESETS, TINY_PRESETS

__all__ = [
    "FAMILIES",
    "PRESETS",
    "TINY_PRESETS",
    "AlreadyEnabledError",
    "CudaProbe",
    "Explorer",
    "Handle",
    "HostMemoryError",
    "MaxContextResult",
    "MemoryEvent",
    "MemoryRecorder",
    "MomCache",
    "MomConfig",
    "MomConfigError",
    "Probe",
    "Profile",
    "TensorTracker",
    "UnsupportedModelError",
    "enable",
    "find_max_context",
    "format_bytes",
    "load",
    "profile",
]


def __getattr__(name: str):
    if name == "Explorer":
        from .explore.explorer import Explorer

        return Explorer
    raise AttributeError(f"module 'mom' has no attribute {name!r}")
