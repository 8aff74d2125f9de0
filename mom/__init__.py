"""mom: Memory-efficient Offloaded Mini-sequence inference for Hugging Face causal LMs.

Public surface only; see docs/design.md for the architecture. The explorer (ipywidgets, plotly)
is imported lazily so the engine works without the notebook extras.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from .checks import ContextWarning, HubUnreachableError, ModelTooLargeError
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
from .simulate import Plan, Prediction, plan, predict

try:
    __version__ = _version("mom")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "FAMILIES",
    "PRESETS",
    "Plan",
    "Prediction",
    "TINY_PRESETS",
    "AlreadyEnabledError",
    "ContextWarning",
    "CudaProbe",
    "Explorer",
    "Handle",
    "HostMemoryError",
    "HubUnreachableError",
    "MaxContextResult",
    "MemoryEvent",
    "MemoryRecorder",
    "ModelTooLargeError",
    "MomCache",
    "MomConfig",
    "MomConfigError",
    "Probe",
    "Profile",
    "TensorTracker",
    "UnsupportedModelError",
    "__version__",
    "enable",
    "find_max_context",
    "format_bytes",
    "load",
    "plan",
    "predict",
    "profile",
]


def __getattr__(name: str):
    if name == "Explorer":
        from .explore.explorer import Explorer

        return Explorer
    raise AttributeError(f"module 'mom' has no attribute {name!r}")
