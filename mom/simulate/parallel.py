"""mom.plan's maximum-context searches, one offload mode per process.

A plan searches five modes (more with several GPU counts); each search is 2-15 predictions of
about a second on an 8B model, and a prediction is pure Python on fake tensors, so threads do not
help (the GIL) and processes do: on N cores the searches take about the longest one's time
instead of their sum. Each task is a module-level function and its arguments (a transformers
config, a MomConfig, a GPU row, a Prediction: all picklable), and sends back only what the plan
keeps (the maximum and whether a wall was found), not every try's events.

Start method: "fork" where the platform has it and it is safe (Linux: the children start with
mom, torch and transformers already imported, so a worker costs nothing to start), "spawn"
elsewhere (macOS, Windows: each worker imports them, a few seconds). Children run torch with one
thread: GNU OpenMP is not fork-safe, and fake tensors compute nothing. If the pool cannot start
or breaks, the searches run here, one after another, with a warning: the answer is the same.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

logger = logging.getLogger(__name__)


def run_searches(task: Callable[..., Any], searches: Sequence[tuple[str, tuple]], workers: int | None = 1
                 ) -> list[tuple[str, Any]]:
    """[(key, task(*args))] for each (key, args) of `searches`, in order, on up to `workers` processes
    (None: one per core); `task` must be a module-level function."""
    count = worker_count(workers, len(searches))
    if count > 1:
        try:
            with ProcessPoolExecutor(max_workers=count, mp_context=_context(), initializer=_one_thread) as pool:
                futures = [pool.submit(task, *args) for _, args in searches]
                return [(key, future.result()) for (key, _), future in zip(searches, futures)]
        except (BrokenProcessPool, OSError) as error:
            logger.warning("mom.plan: the search processes failed (%s); searching in this process instead", error)
    return [(key, task(*args)) for key, args in searches]


def worker_count(workers: int | None, searches: int) -> int:
    """How many processes: `workers` (None: the cores this process may use), at most one per search.

    Raises:
        ValueError: workers below 1.
    """
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a number of processes >= 1 (or None: one per core), got {workers!r}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores if workers is None else workers, searches))


def _context():
    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)
