"""`report --example N` names a test sentence that exists: out of range is refused, not wrapped around."""

from __future__ import annotations

import pytest

from circuit_transfer.cli import main


@pytest.mark.parametrize("index", ["99999", "-1"])
def test_report_refuses_an_example_index_out_of_range(run_dir, tmp_path, capsys, index):
    out = tmp_path / "report.html"
    assert main(["report", str(run_dir), "--out", str(out), "--example", index]) == 2
    err = capsys.readouterr().err
    assert f"example index {index} is out of range" in err and "400 sentences" in err
    assert not out.exists()
