"""Every result names the code that made it: commit, dirty tree, versions, device, host RAM."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

import mom
from mom.memory import provenance as prov
from mom.memory.profile import find_max_context, profile, save_json


def _git(root, *args) -> str:
    return subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A git checkout holding a `mom` package, standing in for this one."""
    (tmp_path / "mom").mkdir()
    (tmp_path / "mom" / "a.py").write_text("x = 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "mom/a.py")
    _git(tmp_path, "commit", "-qm", "one")
    monkeypatch.setattr(prov, "_ROOT", tmp_path)
    monkeypatch.setattr(prov, "_PACKAGE", tmp_path / "mom")
    return tmp_path


def test_the_commit_and_dirty_flag_come_from_git(checkout, monkeypatch):
    monkeypatch.delenv("MOM_COMMIT", raising=False)
    monkeypatch.delenv("MOM_DIRTY", raising=False)
    info = prov.provenance()
    assert info["commit"] == _git(checkout, "rev-parse", "HEAD") and len(info["commit"]) == 40
    assert info["dirty"] is False
    (checkout / "results.json").write_text("{}")  # an output outside the package: still clean
    assert prov.provenance()["dirty"] is False
    (checkout / "mom" / "b.py").write_text("y = 2\n")  # new code in the package: dirty
    assert prov.provenance()["dirty"] is True
    (checkout / "mom" / "b.py").unlink()
    (checkout / "mom" / "a.py").write_text("x = 2\n")
    assert prov.provenance()["dirty"] is True


def test_an_explicit_commit_wins_over_a_stale_git(checkout, monkeypatch):
    monkeypatch.setenv("MOM_COMMIT", "f" * 40)  # a device copy may carry an older .git
    monkeypatch.setenv("MOM_DIRTY", "no")
    assert (prov.provenance()["commit"], prov.provenance()["dirty"]) == ("f" * 40, False)


def test_without_git_the_environment_tells(tmp_path, monkeypatch):
    monkeypatch.setattr(prov, "_ROOT", tmp_path)
    monkeypatch.delenv("MOM_COMMIT", raising=False)
    monkeypatch.delenv("MOM_DIRTY", raising=False)
    assert (prov.provenance()["commit"], prov.provenance()["dirty"]) == ("unknown", None)
    monkeypatch.setenv("MOM_COMMIT", "a" * 40)
    monkeypatch.setenv("MOM_DIRTY", "0")
    assert (prov.provenance()["commit"], prov.provenance()["dirty"]) == ("a" * 40, False)
    monkeypatch.setenv("MOM_DIRTY", "true")
    assert prov.provenance()["dirty"] is True


def test_versions_device_and_host_are_recorded():
    import psutil
    import transformers

    info = prov.provenance("cpu")
    assert (info["torch"], info["transformers"]) == (torch.__version__, transformers.__version__)
    assert info["host_ram_bytes"] == psutil.virtual_memory().total and info["device"]
    json.dumps(info)


def test_every_results_json_records_it(tiny_models, tmp_path):
    llama = tiny_models["tiny-llama"]
    run = profile(llama, mom.MomConfig(), context=64, new_tokens=1, record=False)
    search = find_max_context(llama, mom.MomConfig(), new_tokens=1, resolution=64, high=128,
                              progress=False, record=False)
    for name, result in (("one.json", run), ("list.json", [run, run]), ("max.json", search)):
        save_json(result, tmp_path / name)
    one, runs, found = (json.loads((tmp_path / n).read_text()) for n in ("one.json", "list.json", "max.json"))
    commit = prov.provenance()["commit"]
    assert one["provenance"]["commit"] == commit and found["provenance"]["commit"] == commit
    assert all(r["provenance"]["commit"] == commit for r in runs) and runs[0]["context"] == 64
