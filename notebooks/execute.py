"""Execute the course notebooks top to bottom and save their outputs in place.

    python notebooks/execute.py              # every notebook, normal mode (what is committed)
    python notebooks/execute.py 05 06        # only these
    python notebooks/execute.py --fast       # fast mode (MINIVIT_FAST=1): tiny data, seconds
    python notebooks/execute.py --no-save    # run only (a smoke test), keep the files as they are

Run it with the project's interpreter (``.venv/bin/python``): the kernel is the one of
the interpreter that runs this script. Each notebook starts from a clean kernel in
``notebooks/`` (so ``_common.py`` and relative paths resolve). A cell that raises stops
that notebook, which is then left unchanged on disk, and the script exits with status 1.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

HERE = Path(__file__).resolve().parent


def notebook_paths(prefixes=()):
    """The numbered notebooks in order, optionally only those whose name starts with one of
    ``prefixes``."""
    paths = sorted(p for p in HERE.glob("[0-9][0-9]_*.ipynb"))
    if prefixes:
        paths = [p for p in paths if any(p.name.startswith(a) for a in prefixes)]
    return paths


def execute(path: Path, timeout=1800, fast=False):
    """Run one notebook from a clean kernel (cwd = notebooks/); return (nb, seconds).

    fast: set MINIVIT_FAST=1 in the kernel's environment. Raises CellExecutionError when a
    cell fails. The kernel is this interpreter's: jupyter_client replaces the kernelspec's
    ``python`` with ``sys.executable``.
    """
    nb = nbformat.read(path, as_version=4)
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", help="name prefixes, e.g. 01 05 (default: all)")
    ap.add_argument("--fast", action="store_true", help="MINIVIT_FAST=1: tiny data and steps")
    ap.add_argument("--no-save", action="store_true", help="do not write the outputs")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per cell (default 1800)")
    args = ap.parse_args(argv)
    paths = notebook_paths(args.notebooks)
    if not paths:
        print("no notebooks found; run notebooks/build_notebooks.py first")
        return 1
    failed = 0
    for path in paths:
        print(f"{path.name} ...", end=" ", flush=True)
        try:
            nb, seconds = execute(path, args.timeout, args.fast)
        except CellExecutionError as e:
            failed += 1
            print("FAILED\n" + str(e)[-3000:])
            continue
        if not args.no_save:
            nbformat.write(nb, path)
        print(f"ok in {seconds:.0f} s" + ("" if args.no_save else " (saved)"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
