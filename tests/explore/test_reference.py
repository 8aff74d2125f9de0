"""The packaged 8B reference measurements: equal to the committed results, read by one loader."""

from __future__ import annotations

import json
import sys

import pytest

from mom.explore import reference
from mom.explore.paper import benchmarks_dir, data_file


def test_packaged_file_is_what_the_committed_results_give():
    folder = benchmarks_dir()
    if folder is None:
        pytest.skip("outside the repository")
    packaged = json.loads(data_file(reference.FILE).read_text())
    assert packaged == json.loads(json.dumps(reference.reference(folder / "results")))  # rerun write_reference()


def test_rows_name_card_commit_and_source():
    rows = reference.load_reference()
    assert set(rows["card"]) == {"NVIDIA H100 80GB HBM3", "NVIDIA H200"}
    assert rows["commit"].str.fullmatch(r"[0-9a-f]{40}").all()
    h100 = rows[(rows.card == "NVIDIA H100 80GB HBM3") & (rows.context == 131072)].set_index("variant")
    assert h100.loc["hf", "peak_gib"] > h100.loc["mom-paper", "peak_gib"] > 15  # the weights alone are 15 GiB
    assert (h100["decode_rounds"] == 3).all()  # three rounds through generate(); the manual loop left out
    assert not rows.duplicated(["source", "variant", "context"]).any()


def test_variants_are_the_benchmarks():
    folder = benchmarks_dir()
    if folder is None:
        pytest.skip("outside the repository")
    sys.path.insert(0, str(folder))
    try:
        import harness
    finally:
        sys.path.remove(str(folder))
    for name, config in reference.VARIANTS.items():
        assert (harness.VARIANTS[name] or reference.MomConfig()) == config, name


def test_unknown_variant_and_schema_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown variant"):
        reference.config_of("mom-turbo")
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"schema": "mom.measured/1", "runs": []}))
    with pytest.raises(ValueError, match="not a mom.reference/1 file"):
        reference.load_reference(path)
