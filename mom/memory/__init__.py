"""Measuring memory: hooks, probes, profiles. Knows tensors and hooks, never widgets."""

from .cancel import Cancel, RunCancelled

__all__ = ["Cancel", "RunCancelled"]
