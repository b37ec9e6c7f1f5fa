"""Re-execute ``notebooks/demo.ipynb`` in place, so it is committed with its outputs (``make notebook``)."""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent / "demo.ipynb"


def main() -> int:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=1800, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    for cell in nb.cells:  # outputs only: no run-specific metadata in the committed file
        cell.metadata.pop("execution", None)
    nbformat.write(nb, NOTEBOOK)
    print(f"executed {NOTEBOOK.name}: {sum(len(c.get('outputs') or []) for c in nb.cells)} outputs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
