"""The example notebooks under examples/ run top to bottom in a real Jupyter kernel (nbclient).

Each notebook checks its own claims with `assert` cells (e.g. the user's model is unchanged by
`transfer`, the delta on a fresh copy reproduces the trained logits), so executing it tests them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from circuit_transfer.paths import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "examples").glob("*.ipynb"))


def test_the_examples_folder_has_the_own_data_notebook():
    assert REPO_ROOT / "examples" / "own_model_and_data.ipynb" in NOTEBOOKS


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path: Path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    # The kernel is a new process in tmp_path: it must import this checkout, on one thread (the tests' setting).
    paths = [str(REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
