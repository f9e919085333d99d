"""The course notebooks run top to bottom, from a clean kernel, in fast mode.

Each notebook in ``notebooks/`` is executed with nbclient (``MINIVIT_FAST=1``: tiny data,
few steps; working directory ``notebooks/``), and the test fails if any cell raises or
any check the notebook prints reports a mismatch. The kernel must be this interpreter's
(jupyter_client substitutes ``sys.executable`` for the kernelspec's ``python``), so the
notebooks test the checkout's own environment. The committed ``.ipynb`` files must also
match their source, ``notebooks/build_notebooks.py``.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT = 300                  # seconds per cell; the whole fast run takes ~1–2 min


def _run(nb, monkeypatch):
    monkeypatch.setenv("MINIVIT_FAST", "1")
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(NB_DIR)}})
    client.execute()
    return nb


def _text(nb):
    """All text the notebook printed or returned."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream":
                out.append(o.get("text", ""))
            elif "data" in o and "text/plain" in o["data"]:
                out.append(o["data"]["text/plain"])
    return "\n".join(out)


def test_there_are_seven_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06", "07"]


def test_kernel_is_this_interpreter(monkeypatch):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import sys, os\nprint(sys.prefix)\nprint(os.getcwd())")]
    text = _text(_run(nb, monkeypatch)).split("\n")
    assert Path(text[0]).resolve() == Path(sys.prefix).resolve(), (
        f"the notebook kernel runs in {text[0]}, not in this environment ({sys.prefix})")
    assert Path(text[1]).resolve() == NB_DIR


def test_notebooks_match_their_source():
    spec = importlib.util.spec_from_file_location("build_notebooks", NB_DIR / "build_notebooks.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert sorted(f"{n}.ipynb" for n in build.NOTEBOOKS) == [p.name for p in NOTEBOOKS]
    for path in NOTEBOOKS:
        committed = nbformat.read(path, as_version=4)
        fresh = build.build(path.stem)
        assert [(c.cell_type, c.source) for c in committed.cells] == \
               [(c.cell_type, c.source) for c in fresh.cells], (
            f"{path.name} differs from notebooks/build_notebooks.py: edit the source there and "
            f"run build_notebooks.py, then execute.py")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:                   # start from the source, not the saved outputs
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    text = _text(_run(nb, monkeypatch))     # raises CellExecutionError if a cell fails
    assert "MISMATCH" not in text, f"{path.name} printed a failed check:\n{text[-3000:]}"
