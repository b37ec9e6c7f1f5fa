"""notebooks/demo.ipynb runs top to bottom."""
from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

from lightning_helpers import REPO


@pytest.mark.slow
def test_demo_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("VSREID_NOTEBOOK_WORK", str(tmp_path))
    nb = nbformat.read(REPO / "notebooks" / "demo.ipynb", as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum(1 for o in outputs if "image/jpeg" in o.get("data", {})) >= 2
    assert os.listdir(tmp_path)
