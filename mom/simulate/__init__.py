"""Predict memory, speed and maximum context without a GPU: mom's own code on shape-only tensors.

`mom.predict` runs the patched forward on a model built on the meta device and counts device
bytes as the CUDA caching allocator would (runner.py, fake.py, probe.py, allocator.py);
`mom.plan` searches configurations and contexts over predictions (plan.py). The GPU table is
gpus.py, the speed model speed.py, and what had to be calibrated on real measurements is in
calibration.py.
(The package is `simulate`, not `predict`, so that `mom.predict` can be the function.)
"""

from .gpus import GPU, GPUS, resolve_gpu
from .plan import Plan, PlanRow, find_max_context, max_context, plan
from .runner import Prediction, predict

__all__ = [
    "GPU", "GPUS", "Plan", "PlanRow", "Prediction", "find_max_context", "max_context", "plan", "predict", "resolve_gpu",
]
