"""Execute the course notebooks from their source and save the outputs beside it.

    python notebooks/execute.py              # every notebook, normal mode (what is committed)
    python notebooks/execute.py 05 06        # only these
    python notebooks/execute.py --fast       # fast mode (MINIVIT_FAST=1): tiny data, seconds
    python notebooks/execute.py --no-save    # run only (a smoke test), keep the files as they are
    python notebooks/execute.py --sync       # no run: carry prose edits of the .py into the
                                             # .ipynb (edited code cells lose their outputs)
    (`make notebooks` runs the first line.)

The source of notebook ``NN_name`` is ``NN_name.py``, a Jupytext percent-format script
(``# %%`` starts a code cell, ``# %% [markdown]`` a markdown cell); ``NN_name.ipynb`` is the
same cells with the outputs of a run. The two are paired (Jupytext metadata
``formats: ipynb,py:percent``): a Jupyter front end with Jupytext installed saves both, and
this script writes the ``.ipynb`` from the ``.py``. ``tests/test_notebooks.py`` checks that
every pair is in sync and that the saved outputs come from a complete run.

Run it with the project's interpreter (``.venv/bin/python``): the kernel is the one of
the interpreter that runs this script. Each notebook starts from a clean kernel in
``notebooks/`` (so ``_common.py`` and relative paths resolve). A cell that raises (or runs
past ``--timeout``) stops that notebook, which is then left unchanged on disk, and the
script exits with status 1.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jupytext
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError

HERE = Path(__file__).resolve().parent
FORMATS = "ipynb,py:percent"            # the pairing every notebook declares
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def notebook_sources(prefixes=()):
    """The numbered notebooks' sources (``NN_name.py``) in order, optionally only those
    whose name starts with one of ``prefixes``."""
    paths = sorted(HERE.glob("[0-9][0-9]_*.py"))
    if prefixes:
        paths = [p for p in paths if any(p.name.startswith(a) for a in prefixes)]
    return paths


def read_source(path: Path):
    """The notebook of the percent script ``path``, outputs empty, with stable cell ids
    (``NN-ii``: re-running gives a minimal diff) and the pairing and kernel metadata."""
    nb = jupytext.read(path)
    for i, cell in enumerate(nb.cells):
        cell.id = f"{path.name[:2]}-{i:02d}"
    nb.metadata.setdefault("jupytext", {})["formats"] = FORMATS
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    return nb


def execute(path: Path, timeout=1800, fast=False):
    """Run the notebook of source ``path`` from a clean kernel (cwd = notebooks/); return
    (nb, seconds).

    fast: set MINIVIT_FAST=1 in the kernel's environment. Raises CellExecutionError when a
    cell fails. The kernel is this interpreter's: jupyter_client replaces the kernelspec's
    ``python`` with ``sys.executable``.
    """
    nb = read_source(path)
    old = os.environ.get("MINIVIT_FAST")
    os.environ["MINIVIT_FAST"] = "1" if fast else "0"
    try:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(HERE)}},
                                record_timing=False, coalesce_streams=True)
        t = time.perf_counter()
        client.execute()
        return nb, time.perf_counter() - t
    finally:
        if old is None:
            os.environ.pop("MINIVIT_FAST", None)
        else:
            os.environ["MINIVIT_FAST"] = old


def save(nb, path: Path):
    """Write the executed notebook to ``NN_name.ipynb`` and its source to ``NN_name.py``
    (re-written by Jupytext, so both files carry the same metadata)."""
    jupytext.write(nb, path.with_suffix(".ipynb"))
    jupytext.write(nb, path, fmt="py:percent")


def sync(path: Path):
    """Carry the cells of ``NN_name.py`` into ``NN_name.ipynb`` without running anything:
    a code cell whose text is unchanged keeps its outputs, an edited or new code cell has
    none (so the test asks for a real run). Meant for prose edits. Returns True if the
    .ipynb changed."""
    ipynb = path.with_suffix(".ipynb")
    nb = read_source(path)
    if ipynb.is_file():
        old = jupytext.read(ipynb)
        ran = {}                                    # source -> the old cells with it, in order
        for cell in old.cells:
            if cell.cell_type == "code":
                ran.setdefault(cell.source, []).append(cell)
        for cell in nb.cells:
            if cell.cell_type == "code" and ran.get(cell.source):
                match = ran[cell.source].pop(0)
                cell.outputs, cell.execution_count = match.outputs, match.execution_count
        nb.metadata = {**old.metadata, **nb.metadata}       # keep language_info of the run
        if jupytext.writes(nb, "ipynb").rstrip() == ipynb.read_text(encoding="utf-8").rstrip():
            return False
    save(nb, path)
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", help="name prefixes, e.g. 01 05 (default: all)")
    ap.add_argument("--fast", action="store_true", help="MINIVIT_FAST=1: tiny data and steps")
    ap.add_argument("--no-save", action="store_true", help="do not write the outputs")
    ap.add_argument("--sync", action="store_true",
                    help="run nothing: write each .ipynb's cells from its .py, keeping the "
                         "outputs of unchanged cells")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per cell (default 1800)")
    args = ap.parse_args(argv)
    paths = notebook_sources(args.notebooks)
    if not paths:
        print(f"no notebook source NN_name.py in {HERE} matches {args.notebooks}")
        return 1
    if args.sync:
        for path in paths:
            print(f"{path.with_suffix('.ipynb').name}: "
                  + ("updated from " + path.name if sync(path) else "in sync"))
        return 0
    failed = 0
    for path in paths:
        print(f"{path.name} ...", end=" ", flush=True)
        try:
            nb, seconds = execute(path, args.timeout, args.fast)
        except (CellExecutionError, CellTimeoutError) as e:
            failed += 1
            print("FAILED\n" + str(e)[-3000:])
            continue
        if not args.no_save:
            save(nb, path)
        print(f"ok in {seconds:.0f} s" + ("" if args.no_save else
                                          f" (saved {path.with_suffix('.ipynb').name})"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
