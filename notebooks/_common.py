"""Plumbing shared by the course notebooks — and nothing else.

No model math lives here: the notebooks call ``minivit`` for that. This module only knows
where the data is, whether the notebooks run in *fast mode* (``MINIVIT_FAST=1``, used by
``tests/test_notebooks.py`` to execute every notebook in seconds on tiny data), and how to
fall back to synthetic images when CIFAR-10 is not available; and it reads what the
bundled model's files record (its training settings, the saved results of its run) so
that the notebooks quote those, never a hand-typed figure.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent          # notebooks/
REPO = HERE.parent                              # the checkout

if str(REPO) not in sys.path:                   # works without `pip install -e .` too
    sys.path.insert(0, str(REPO))

#: True when the notebooks run in fast mode (tiny data, few steps): MINIVIT_FAST=1.
FAST = os.environ.get("MINIVIT_FAST", "").strip().lower() not in ("", "0", "false", "no")

#: Where the notebooks write training runs (git ignores runs/), fast and normal runs
#: apart; relative to notebooks/, the notebooks' working directory.
RUNS = Path("runs") / ("fast" if FAST else "normal")


def data_dir():
    """The CIFAR-10 location: ``$MINIVIT_DATA_DIR`` if set, else ``../../shared/data``
    relative to notebooks/ when it exists, else None (the library's default cache
    directory, where CIFAR-10 is downloaded on first use)."""
    env = os.environ.get("MINIVIT_DATA_DIR")
    if env:
        return Path(env).expanduser()
    shared = (HERE / ".." / ".." / "shared" / "data").resolve()
    return shared if shared.exists() else None


def load_data(limit_train=None, limit_test=None, seed=0):
    """CIFAR-10 as the library loads it (uint8 images), or — if it cannot be found (and in
    fast mode nothing is downloaded) — the library's small synthetic set, with a note.

    Returns (data, source): data is the dict of ``minivit.data.load_cifar10``; source is
    "cifar10" or "synthetic".
    """
    from minivit.data import load_cifar10
    from minivit.data.synthetic import make_synthetic
    try:
        data = load_cifar10(data_dir(), download=not FAST, progress=False,
                            limit_train=limit_train, limit_test=limit_test)
        return data, "cifar10"
    except Exception as e:                      # noqa: BLE001 — any failure: say it, fall back
        print(f"Note: CIFAR-10 is not available ({e}).\n"
              f"      Using the library's synthetic images instead (minivit.data.synthetic).")
        n_train = 1024 if limit_train is None else max(limit_train, 1)
        n_test = 256 if limit_test is None else max(limit_test, 1)
        return make_synthetic(n_train=n_train, n_test=n_test, seed=seed), "synthetic"


def setup():
    """Quiet, readable defaults for the notebooks; prints the mode they run in."""
    import numpy as np
    # Without ipywidgets, tqdm falls back to a text bar; its warning about that is noise.
    warnings.filterwarnings("ignore", message="IProgress not found")
    np.set_printoptions(precision=6, suppress=True, linewidth=100)
    mode = "FAST mode (MINIVIT_FAST=1): tiny data, few steps" if FAST else "normal mode"
    print(f"minivit notebooks — {mode}")


#: The saved results of the run that produced the bundled model (README "Training on
#: CIFAR-10"): summary.json (command, final accuracy, wall time) and metrics.jsonl.
BUNDLED_RUN = REPO / "benchmarks" / "results" / "cifar10_60min_d5h8_wd10" / "d5h8wd10_seed0"


def recorded_settings(meta):
    """The ``TrainSettings`` a checkpoint was trained with, from its ``meta``.

    A training checkpoint stores them (``meta["settings"]``); the bundled model keeps only
    the command line that trained it (``meta["train_command"]``): there each ``--flag VALUE``
    that names a ``TrainSettings`` field (dashes for underscores) sets that field,
    ``--no-flip`` clears ``flip``, and every other field keeps its default. Raises KeyError
    if ``meta`` records neither.
    """
    from minivit.train import TrainSettings
    if "settings" in meta:
        return TrainSettings.from_dict(meta["settings"])
    fields = {f.name: f for f in dataclasses.fields(TrainSettings)}
    args, values = shlex.split(meta["train_command"]), {}
    for i, arg in enumerate(args):
        name = arg[2:].replace("-", "_") if arg.startswith("--") else None
        if name == "rand_augment":                                  # "--rand-augment N,M"
            n, m = args[i + 1].split(",")
            values[name] = (int(n), float(m))
        elif name in fields and fields[name].type not in (bool, "bool"):
            default = fields[name].default
            kind = float if default is None else type(default)     # warmup_epochs: float | None
            values[name] = kind(args[i + 1])
        elif name and name.startswith("no_") and name[3:] in fields:
            values[name[3:]] = False
    return TrainSettings(**values)


def bundled_run_summary():
    """The saved results of the bundled model's run: summary.json as a dict, plus
    ``images_per_s``, the mean training throughput over its epochs (metrics.jsonl)."""
    summary = json.loads((BUNDLED_RUN / "summary.json").read_text())
    epochs = [json.loads(line) for line in (BUNDLED_RUN / "metrics.jsonl").read_text().splitlines()
              if line.strip()]
    summary["images_per_s"] = sum(e["images_per_s"] for e in epochs) / len(epochs)
    return summary
