"""JSON Lines results files that survive a crash mid-write.

The recorder appends one line per event as it happens, so a long sweep keeps what it measured
when the kernel dies. A death mid-write leaves a last line without its newline. Two rules keep
such a file usable:
- Appending starts on a fresh line: `open_append` adds the missing newline first, so the torn
  line stays alone and the next run's lines stay whole.
- Reading skips lines that do not parse (`read_jsonl`), counts them, and says so in a warning.

Each run starts with a header line `{"record": "run", "run": n, ...tags, "provenance": {...}}`;
every other line is one event: `{"run": n, ...tags, ...MemoryEvent fields}`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

logger = logging.getLogger(__name__)


def open_append(path: str | Path) -> TextIO:
    """Open `path` for appending lines, on a fresh line even after a torn last line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sink = path.open("a", encoding="utf-8")
    if _ends_torn(path):
        sink.write("\n")
    return sink


def write_line(sink: TextIO, row: dict[str, Any]) -> None:
    """One JSON object, one line, flushed (a crash loses at most the line being written)."""
    sink.write(json.dumps(row) + "\n")
    sink.flush()


@dataclass
class JsonlContents:
    """What a results file holds: run headers, event rows, and how many torn lines were skipped."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    torn: int = 0


def read_jsonl(path: str | Path) -> JsonlContents:
    """Read a results file back, skipping (and counting, with a warning) torn lines."""
    contents = JsonlContents()
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        row = _parse(line)
        if row is None:
            contents.torn += bool(line.strip())
        elif row.get("record") == "run":
            contents.runs.append(row)
        else:
            contents.events.append(row)
    if contents.torn:
        logger.warning("%s: skipped %d torn line(s), left by a run that stopped mid-write", path, contents.torn)
    return contents


def _parse(line: str) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) else None


def _ends_torn(path: Path) -> bool:
    with path.open("rb") as raw:
        raw.seek(0, 2)
        if raw.tell() == 0:
            return False
        raw.seek(-1, 2)
        return raw.read(1) != b"\n"
