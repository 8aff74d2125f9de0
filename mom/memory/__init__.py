"""Measuring memory: hooks, probes, profiles. Knows tensors and hooks, never widgets."""
