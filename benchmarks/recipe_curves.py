"""Test accuracy against training compute and against wall time for several CIFAR-10 runs
on one figure (issue 15's curves: minivit's recipes beside the PyTorch peer).

Each run is a folder holding the ``metrics.jsonl`` that ``minivit train`` (or
``torch_peer_train.py``) writes: one line per epoch with ``train_flops`` (cumulative
training compute, forward + backward = 3 × forward), ``elapsed_s`` and, on evaluated
epochs, ``test_acc``. Only evaluated epochs are plotted.

    python benchmarks/recipe_curves.py \\
        --run "minivit 60-min recipe=benchmarks/results/cifar10_60min" \\
        --run "PyTorch peer=benchmarks/results/torch_peer_60min" \\
        --out benchmarks/results/recipe_curves.png

With no ``--run``, the committed runs in ``benchmarks/results`` that exist are drawn
(``DEFAULT_RUNS``). Wall time is of each run's own day: compare runs at equal
``train_flops``; the wall-time panel shows what a user waited.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_data import save_accuracy_figure  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_RUNS = {
    "minivit, 60-min recipe (28 ep)": RESULTS / "cifar10_60min",
    "minivit, 60-min recipe re-run, 2026-11-30 backend": RESULTS / "cifar10_60min_rerun",
    "minivit, 60-min recipe + sincos2d (28 ep)": RESULTS / "cifar10_60min_sincos2d",
    "minivit, 30-min recipe (14 ep)": RESULTS / "cifar10_30min",
    "minivit, 60-min budget + patch dropout 0.5 (57 ep)": RESULTS / "cifar10_60min_pk50",
    "minivit, 60-min budget, depth 6 + pk50 + reflect crops + mimetic (38 ep)":
        RESULTS / "cifar10_60min_d6m",
    "minivit, 60-min budget, the same + last 2 epochs on every token (36 ep)":
        RESULTS / "cifar10_60min_d6m_ft2",
    "minivit, 60-min budget, the same with their lr restarted at 6e-4 (36 ep)":
        RESULTS / "cifar10_60min_d6m_ft2_ftlr" / "ftlr6e-4",
    "minivit, 60-min budget, the same at depth 5 (44 ep)":
        RESULTS / "cifar10_60min_d5_h8" / "d5_seed0",
    "minivit, 60-min budget, the same with 8 heads and weight decay 0.1 (44 ep)":
        RESULTS / "cifar10_60min_d5h8_wd10" / "d5h8wd10_seed0",
    "minivit, 60-min budget, the same with pk25 (70 ep)":
        RESULTS / "cifar10_60min_d6pk25_ft2",
    "minivit, 30-min budget, pk50 + reflect crops + mimetic (29 ep)":
        RESULTS / "knob_ablation_14ep" / "pk50_pad2_reflect_mimetic",
    "minivit, 30-min budget, the same + last 2 epochs on every token (27 ep)":
        RESULTS / "knob_ablation_14ep" / "pk50_pad2_reflect_mimetic_ft2",
    "minivit, 30-min budget, pk25 + last 2 epochs on every token (50 ep)":
        RESULTS / "knob_ablation_14ep" / "pk25_pad2_reflect_mimetic_ft2_50ep",
    "minivit, 30-min budget, pk25 + last 3 epochs on every token (47 ep)":
        RESULTS / "knob_ablation_14ep" / "pk25_pad2_reflect_mimetic_ft3_47ep",
    "minivit, 30-min budget, pk25 + last 4 epochs on every token (44 ep)":
        RESULTS / "knob_ablation_14ep" / "pk25_pad2_reflect_mimetic_ft4_44ep",
    "minivit, 30-min budget, the same with their lr restarted at 3e-4 (44 ep)":
        RESULTS / "knob_ablation_14ep" / "pk25_pad2_reflect_mimetic_ft4_ftlr3e-4_44ep",
    "PyTorch peer, same recipe (28 ep)": RESULTS / "torch_peer_60min",
}


def read_curve(folder: Path) -> dict:
    """The evaluated epochs of a run: {"flops": [...], "minutes": [...], "acc": [...],
    "ema": [...], "epoch": [...], "train_acc": [...]} (accuracies in %; "ema" and
    "train_acc" hold None where the run has none). Raises ValueError naming the file when
    it is missing or has no evaluated epoch with ``train_flops``."""
    path = Path(folder) / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    curve = {"flops": [], "minutes": [], "acc": [], "ema": [], "epoch": [], "train_acc": []}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{path}:{n}: not a JSON line") from None
        if d.get("test_acc") is None:
            continue
        if d.get("train_flops") is None or d.get("elapsed_s") is None:
            raise ValueError(f"{path}:{n}: an evaluated epoch without train_flops/elapsed_s")
        curve["flops"].append(d["train_flops"])
        curve["minutes"].append(d["elapsed_s"] / 60)
        curve["acc"].append(100 * d["test_acc"])
        curve["epoch"].append(d.get("epoch"))
        for key, field in (("ema", "ema_test_acc"), ("train_acc", "train_acc")):
            curve[key].append(None if d.get(field) is None else 100 * d[field])
    if not curve["acc"]:
        raise ValueError(f"{path}: no evaluated epoch (test_acc) in it")
    return curve


def draw(curves: dict, path: Path, targets=((3.3e14, 80.0), (1.65e14, 78.0))) -> None:
    """Two panels (accuracy vs training FLOP, accuracy vs wall minutes), one line per run;
    the issue's targets as crosses on the compute panel."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))   # grows by its legend's rows
    colors = plt.cm.tab20.colors                          # one colour per run, up to 20
    for i, (name, c) in enumerate(curves.items()):
        style = dict(color=colors[i % len(colors)], marker="o", ms=3, label=name)
        axes[0].plot([f / 1e14 for f in c["flops"]], c["acc"], **style)
        axes[1].plot(c["minutes"], c["acc"], **style)
    for flops, acc in targets:
        axes[0].plot([flops / 1e14], [acc], "kx", ms=8)
    axes[0].set_xlabel("training compute (1e14 FLOP, forward + backward); x: targets")
    axes[1].set_xlabel("wall time (minutes, each run's own day)")
    save_accuracy_figure(fig, axes, "CIFAR-10 from scratch on 2 CPU cores: accuracy against "
                         "compute and time", path, None)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", default=[], metavar="LABEL=FOLDER",
                   help="a run to draw (repeatable); default: the committed runs that exist")
    p.add_argument("--out", default=str(RESULTS / "recipe_curves.png"))
    args = p.parse_args(argv)
    runs = {}
    for spec in args.run:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            p.error(f"--run must be LABEL=FOLDER, got {spec!r}")
        runs[name] = Path(folder)
    if not runs:
        runs = {k: v for k, v in DEFAULT_RUNS.items() if (v / "metrics.jsonl").is_file()}
    try:
        curves = {name: read_curve(folder) for name, folder in runs.items()}
    except ValueError as e:
        p.error(str(e))
    if not curves:
        p.error("no run to draw")
    draw(curves, Path(args.out))
    for name, c in curves.items():
        print(f"{name}: {c['acc'][-1]:.2f}% after {c['flops'][-1]:.3g} FLOP, "
              f"{c['minutes'][-1]:.1f} min")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
