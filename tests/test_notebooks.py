"""The example notebooks run as they are, top to bottom, and show pictures (never a blank one)."""

from __future__ import annotations

import base64
import io
import pathlib

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from PIL import Image

from examples import build_notebooks
from tests.conftest import REPO

EXAMPLES = REPO / "examples"
NOTEBOOKS = sorted(p.name for p in EXAMPLES.glob("*.ipynb"))


def test_the_notebooks_are_the_ones_the_builder_writes_and_the_readme_lists():
    assert NOTEBOOKS == sorted(build_notebooks.NOTEBOOKS)
    for name, cells in build_notebooks.NOTEBOOKS.items():
        stored = nbformat.read(EXAMPLES / name, as_version=4)
        built = build_notebooks.notebook(cells)
        assert [(c.cell_type, c.source) for c in stored.cells] == [(c.cell_type, c.source) for c in built.cells], \
            f"{name} differs from its cells: rerun examples/build_notebooks.py"
        assert all(not c.get("outputs") for c in stored.cells), f"{name} is stored with outputs"
    readme = (REPO / "README.md").read_text()
    assert all(f"examples/{name}" in readme for name in NOTEBOOKS)


def _pictures(nb: nbformat.NotebookNode) -> list[np.ndarray]:
    found = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if png:
                found.append(np.asarray(Image.open(io.BytesIO(base64.b64decode(png))).convert("L")))
    return found


@pytest.mark.slow  # each starts a kernel and compiles its runs: 30-90 s apiece on a 2-core CPU
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_and_shows_pictures(name, tmp_path):
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    pictures = _pictures(nb)
    assert pictures, f"{name} displays no picture"
    for picture in pictures:
        assert picture.std() > 5, f"{name} shows a blank picture"
