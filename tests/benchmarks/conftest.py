"""The benchmark scripts live outside the package: make them importable as their own modules."""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

FULL = "0123456789abcdef0123456789abcdef01234567"  # a full 40-hex commit for synthetic results files
