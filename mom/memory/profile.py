"""The measurement entry points in one import: profile(), find_max_context() and their helpers.

Each job lives in its own module; this one only gathers them, so `from mom.memory.profile
import profile, find_max_context, ...` keeps working for notebooks and scripts:
- run.py: profile(), one measured run (OOM and cancellation are results);
- search.py: find_max_context(), the search built on it;
- timing.py (TTFT, decode rate), prompts.py (the seeded prompt), oom.py (which wall);
- tables.py (rows, text and HTML tables), results.py (JSON files), jsonl.py (event streams),
  provenance.py (what made a result), sizes.py (bytes by storage).
"""

from __future__ import annotations

from .results import save_json
from .run import profile
from .search import find_max_context
from .sizes import weight_bytes
from .tables import profile_table

__all__ = ["find_max_context", "profile", "profile_table", "save_json", "weight_bytes"]
