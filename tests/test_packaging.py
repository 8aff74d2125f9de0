"""The set-up stays true: environment.yml in step with pyproject.toml, README commands in CI."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_follows_pyproject():
    env = (ROOT / "environment.yml").read_text()
    project = _pyproject()["project"]
    python = re.search(r"python=(\d+\.\d+)", env).group(1)
    minimum = re.search(r">=(\d+\.\d+)", project["requires-python"]).group(1)
    assert tuple(map(int, python.split("."))) >= tuple(map(int, minimum.split(".")))
    installed = re.search(r"-e \.\[([a-z,]+)\]", env)
    assert installed, "environment.yml must install the package itself from pyproject.toml"
    assert set(installed.group(1).split(",")) == set(project["optional-dependencies"]), \
        "environment.yml installs every extra pyproject.toml declares"
    # the one source of dependencies: nothing but python and pip pinned in environment.yml
    conda_lines = [line.strip()[2:] for line in env.splitlines() if line.startswith("  - ")]
    assert {re.split(r"[=<>]", entry)[0] for entry in conda_lines} <= {"python", "pip", "conda-forge", "pip:"}


def test_pyproject_declares_the_named_packages_and_markers():
    project = _pyproject()
    names = " ".join(project["project"]["dependencies"] + sum(project["project"]["optional-dependencies"].values(), []))
    for package in ("torch", "transformers", "ipywidgets", "plotly", "jupyterlab", "nbval"):
        assert package in names
    markers = " ".join(project["tool"]["pytest"]["ini_options"]["markers"])
    assert "gpu:" in markers and "slow:" in markers
    assert project["project"]["scripts"]["mom"] == "mom.cli:main"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(.+?)\n```", readme)
    assert len(commands) == 2, "the README holds exactly two set-up commands"
    assert commands[0].endswith("mom demo")
    test_command = commands[1].split("&&")[-1].strip()
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_readme_torch_line_matches_ci_and_explains_the_cpu_wheel():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    pins = {re.search(r"pip install (torch==[\d.]+)", command).group(1)
            for command in re.findall(r"```bash\n(.+?)\n```", readme)}
    assert len(pins) == 1, "both README commands install the same torch"
    pin = pins.pop()
    assert f"pip install -q {pin}" in ci, "CI installs the torch the README names (the local CPU wheel here)"
    assert "--index-url https://download.pytorch.org/whl/cpu" in readme  # the laptop's CPU build, explained
    assert "index-url" not in ci, "CI keeps the local wheel: download.pytorch.org is not reachable from CI"


def test_readme_python_snippet_runs_as_printed(capsys):
    """The README's Python block, executed exactly as printed (it must run on a laptop's CPU)."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.+?)```", readme, flags=re.S)
    assert len(blocks) == 1, "the README holds one Python snippet"
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)
    printed = capsys.readouterr().out
    assert scope["out"].shape == (1, 2048 + 8)
    assert not scope["p"].oom and scope["p"].context == 2048
    search = scope["search"]
    assert search.limit_reached and search.maximum is not None and search.maximum < 16384
    assert f"maximum context: {search.maximum} tokens" in printed


STALE_DOC_NAMES = re.compile(r"\bDESIGN\.md|\bBENCHMARKS\.md|engine notes")


def _repository_text_files(*suffixes: str) -> list[Path]:
    """Files of the repository (not docs/ itself, committed results, or environments), by suffix."""
    skip = {".git", ".venv", "node_modules", "results", "docs", "__pycache__", ".ipynb_checkpoints"}
    found = []
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [name for name in subfolders if name not in skip and not name.endswith(".egg-info")]
        found += [Path(folder) / name for name in files if Path(name).suffix in suffixes]
    return [path for path in found if path != Path(__file__).resolve()]


def test_doc_references_resolve_to_docs():
    """The design and the measurement protocol live in docs/; every reference names a file that exists."""
    assert (ROOT / "docs" / "design.md").is_file() and (ROOT / "docs" / "benchmarks.md").is_file()
    stale, missing = [], []
    for path in _repository_text_files(".py", ".md", ".cfg", ".toml"):
        text = path.read_text(encoding="utf-8", errors="replace")
        stale += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in STALE_DOC_NAMES.finditer(text)]
        missing += [f"{path.relative_to(ROOT)}: {ref}" for ref in re.findall(r"\bdocs/[\w-]+\.md", text)
                    if not (ROOT / ref).is_file()]
    assert not stale, f"references to documents that are not in the repository: {stale}"
    assert not missing, f"references to docs/ files that do not exist: {missing}"


def test_notebook_doc_references_resolve_to_docs():
    stale = [path.name for path in _repository_text_files(".ipynb")
             if STALE_DOC_NAMES.search(path.read_text(encoding="utf-8"))]
    assert not stale, stale
