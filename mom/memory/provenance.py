"""Provenance: what code, libraries and machine produced a result, written beside the result.

A number is only evidence if a reader can tell which code made it. Every results file mom
writes (profile JSON, find_max_context JSON, each run in a JSONL events file; the benchmarks
call `provenance()` too) records:
- commit: the MOM_COMMIT environment variable when set (a device copy gets the hash passed in;
  it may carry a stale .git); else the full hash of HEAD when the package sits in a git
  checkout; else "unknown".
- dirty: whether the checkout had uncommitted changes (tracked files anywhere, or untracked
  files inside the package); else MOM_DIRTY ("1"/"true"/"yes" or "0"/"false"/"no"); else None.
  Untracked files outside the package (results, notebooks' outputs) do not make a tree dirty.
- torch, transformers and python versions; the device's name and total memory; host RAM.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import psutil
import torch

_PACKAGE = Path(__file__).resolve().parents[1]  # .../mom
_ROOT = _PACKAGE.parent


def provenance(device: torch.device | str | None = None) -> dict[str, Any]:
    """Commit, dirty flag, library versions, device and host memory of this process.

    Args:
        device: the compute device the result was measured on; default: the current CUDA
            device when there is one, else the CPU.
    """
    import transformers

    commit, dirty = _git_state()
    return {
        "commit": commit,
        "dirty": dirty,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        **_device_info(device),
        "host_ram_bytes": psutil.virtual_memory().total,
    }


def _git_state() -> tuple[str, bool | None]:
    # An explicit hash wins: a device copy can carry a stale .git of an older checkout
    # (seen on the GPU machine: HEAD named c445ea7 while newer code ran).
    if os.environ.get("MOM_COMMIT"):
        return os.environ["MOM_COMMIT"], _env_flag(os.environ.get("MOM_DIRTY"))
    if (_ROOT / ".git").exists():
        commit = _git("rev-parse", "HEAD")
        status = _git("status", "--porcelain")
        if commit and status is not None:
            return commit, _is_dirty(status)
    return os.environ.get("MOM_COMMIT") or "unknown", _env_flag(os.environ.get("MOM_DIRTY"))


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(_ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _is_dirty(status: str) -> bool:
    package = _PACKAGE.name + "/"
    for line in status.splitlines():
        if not line.startswith("??") or line[3:].startswith(package):
            return True
    return False


def _env_flag(value: str | None) -> bool | None:
    if value is None:
        return None
    value = value.strip().lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    return None


def _device_info(device: torch.device | str | None) -> dict[str, Any]:
    device = torch.device(device) if device is not None else None
    use_cuda = torch.cuda.is_available() and (device is None or device.type == "cuda")
    if not use_cuda:
        return {"device": platform.processor() or platform.machine() or "cpu", "device_total_bytes": None}
    index = device.index if device is not None and device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return {"device": props.name, "device_total_bytes": int(props.total_memory)}
