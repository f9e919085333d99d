"""Runs against a reference run at equal training compute: at each evaluated epoch of a
run, its test accuracy (and EMA accuracy) minus the reference's at the same
``train_flops``, the reference linearly interpolated between its own evaluations. This is
the "ahead at the same FLOP" of the README's issue-15 paragraphs.

    python benchmarks/compare_runs.py benchmarks/results/cifar10_60min_d5_h8/d5_seed0 \\
        benchmarks/results/cifar10_60min_d5_seed1_dp/d5_seed1 \\
        benchmarks/results/cifar10_60min_d5_seed1_dp/d5dp10_seed0

Each argument is a folder holding a ``metrics.jsonl`` of ``minivit train``; the first is
the reference. An epoch whose compute lies outside the reference's evaluated range has no
difference ("–"): the reference is interpolated, never extrapolated.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from recipe_curves import read_curve  # noqa: E402


def ahead(run: dict, ref: dict, key: str = "acc") -> list:
    """run[key] minus ref[key] interpolated at run's train_flops, in points, one per
    evaluated epoch of ``run``; None where either has no value or the compute is outside
    the reference's evaluated range. run, ref: :func:`recipe_curves.read_curve` dicts."""
    known = [(f, a) for f, a in zip(ref["flops"], ref[key]) if a is not None]
    rf, ra = np.array([f for f, _ in known]), np.array([a for _, a in known])
    return [None if a is None or not len(rf) or not rf[0] <= f <= rf[-1]
            else a - float(np.interp(f, rf, ra))
            for f, a in zip(run["flops"], run[key])]


def _fmt(x, signed=False):
    return "–" if x is None else (f"{x:+.2f}" if signed else f"{x:.2f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reference", help="run folder (metrics.jsonl) compared against")
    ap.add_argument("runs", nargs="+", help="run folders (metrics.jsonl)")
    a = ap.parse_args(argv)
    try:
        ref = read_curve(Path(a.reference))
        runs = {r: read_curve(Path(r)) for r in a.runs}
    except ValueError as e:
        ap.error(str(e))
    print(f"reference: {a.reference}")
    for name, run in runs.items():
        d_acc, d_ema = ahead(run, ref), ahead(run, ref, "ema")
        print(f"\n{name}\n  epoch  train FLOP   test %  ahead   EMA %  ahead  train %")
        for i, f in enumerate(run["flops"]):
            print(f"  {run['epoch'][i]!s:>5}  {f:.3e}  {_fmt(run['acc'][i]):>6}  "
                  f"{_fmt(d_acc[i], True):>5}  {_fmt(run['ema'][i]):>6}  "
                  f"{_fmt(d_ema[i], True):>5}  {_fmt(run['train_acc'][i]):>6}")


if __name__ == "__main__":
    main()
