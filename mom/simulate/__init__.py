"""Predict memory, speed and maximum context without a GPU: mom's own code on shape-only tensors.

`mom.predict` runs the patched forward on a model built on the meta device and counts device
bytes as the CUDA caching allocator would (runner.py, fake.py, probe.py, allocator.py; seams.py
is each place a prediction differs from a measured run, where.py names where one runs out);
`mom.plan` searches configurations and contexts over predictions (plan.py); limits.py is the
physical limit of a card and a host, the most context any placement could reach. The GPU table is
gpus.py, the speed model speed.py, and what had to be calibrated on real measurements is in
calibration.py.
(The package is `simulate`, not `predict`, so that `mom.predict` can be the function.)
"""

from .gpus import GPU, GPUS, resolve_gpu
from .limits import PhysicalLimit, physical_max_context
from .plan import Plan, PlanRow, find_max_context, max_context, plan
from .runner import Prediction, predict

__all__ = [
    "GPU", "GPUS", "PhysicalLimit", "Plan", "PlanRow", "Prediction", "find_max_context", "max_context",
    "physical_max_context", "plan", "predict", "resolve_gpu",
]
