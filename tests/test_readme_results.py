"""The README's results section is what benchmarks/readme_tables.py writes from the results files."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import readme_tables  # noqa: E402


def test_the_readme_results_are_generated_from_the_files():
    readme = (ROOT / "README.md").read_text()
    block = readme.split(readme_tables.BEGIN, 1)[1].split(readme_tables.END, 1)[0]
    assert block.strip() == readme_tables.section().strip(), "run: python benchmarks/readme_tables.py"


def test_only_results_naming_a_full_commit_are_used():
    assert readme_tables.known_commit({"provenance": {"commit": "HEAD"}}) is None
    assert readme_tables.known_commit({"environment": {"commit": "c445ea7"}}) is None
    full = "c61a3df3d2c58974c64d02dbe80f500d9d94dad5"
    assert readme_tables.known_commit({"provenance": {"commit": full}}) == full
