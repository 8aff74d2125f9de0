"""Results as JSON files: what the CLI and scripts write, each naming the code that made it.

One file per result (a Profile, a list of them, a MaxContextResult), indented for diffs, with
the provenance of the process that wrote it. Events stream to JSONL instead (jsonl.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from .events import MaxContextResult, Profile
from .provenance import provenance


def save_json(result: Profile | MaxContextResult | list[Profile], path: str | Path, with_events: bool = False) -> None:
    """Write a Profile, a list of them or a MaxContextResult as indented JSON (what the CLI writes).

    The provenance (provenance.py: commit, dirty tree, versions, device, host RAM) is recorded
    under "provenance": at the top of a Profile or a MaxContextResult, in each Profile of a list.
    """
    stamp = provenance()
    if isinstance(result, list):
        data = [{**p.to_dict(with_events), "provenance": stamp} for p in result]
    else:
        data = {**result.to_dict(with_events), "provenance": stamp}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
