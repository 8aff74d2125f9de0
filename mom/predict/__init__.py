"""Predict memory, speed and maximum context without a GPU: mom's own code on fake tensors.

`predict` runs the patched forward on a fake model and counts device bytes as the CUDA caching
allocator would (runner.py, probe.py, allocator.py); `plan` searches configurations and
contexts over predictions (plan.py); the GPU table is gpus.py, the speed model speed.py, and
what had to be calibrated on real measurements is in calibration.py.
"""

from .gpus import GPU, GPUS, resolve_gpu
from .runner import Prediction, predict

__all__ = ["GPU", "GPUS", "Prediction", "predict", "resolve_gpu"]
