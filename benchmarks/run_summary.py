"""Commit a finished CIFAR-10 training run as evidence: copy its ``metrics.jsonl`` into
``benchmarks/results/NAME/`` and write ``summary.json`` beside it (the command, the commit
that trained it, the final test and EMA accuracy, the compute as a fraction of the
60-minute recipe's, the wall time, the median speed and the accuracy and minutes at every
evaluated epoch).

    python benchmarks/run_summary.py runs/cifar10-60min \\
        --command "make cifar10-60min" --out benchmarks/results/cifar10_60min_v2 \\
        --machine "2 CPU cores, a second run beside it"

The README's curves (``recipe_curves.py``) and tables read these files, never a run folder,
so the figures survive the run folder being deleted. An existing summary is not replaced
without ``--overwrite``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shutil
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minivit.config import ViTConfig  # noqa: E402
from minivit.models import epoch_flops  # noqa: E402
from minivit.provenance import code_commit  # noqa: E402

RECIPE_60MIN_EPOCHS = 28           # make cifar10-60min before issue 15's search: the budget


def recipe_60min_flops(n_train: int = 50_000, batch_size: int = 64) -> int:
    """Training FLOP of 28 epochs of cifar10-tiny: issue 15's full budget (≈ 3.26e14)."""
    return RECIPE_60MIN_EPOCHS * epoch_flops(ViTConfig.preset("cifar10-tiny"), n_train,
                                             batch_size)


def summarize(rows: list[dict], command: str, machine: str, data: str) -> dict:
    """summary.json's content from a run's metrics.jsonl rows (one dict per epoch)."""
    if not rows:
        raise ValueError("metrics.jsonl has no epochs")
    evaluated = [r for r in rows if r.get("test_acc") is not None]
    if not evaluated:
        raise ValueError("the run was never evaluated (no test_acc in metrics.jsonl)")
    last = rows[-1]
    # the code that trained it: minivit train writes the commit on every line (a resumed
    # run may name several); older runs did not, and then the checkout at summary time is
    # all there is, recorded under its own name so it is not mistaken for the former
    trained_on = list(dict.fromkeys(r["commit"] for r in rows if r.get("commit")))
    commit = " then ".join(trained_on) or None
    summary = {
        "command": command,
        "commit": commit,
        "final_test_acc": evaluated[-1]["test_acc"],
        "final_ema_test_acc": evaluated[-1].get("ema_test_acc"),
        "epochs": last["epoch"],
        "train_flops": last["train_flops"],
        "budget_fraction_of_60min_recipe": last["train_flops"] / recipe_60min_flops(),
        "train_plus_eval_s": last["elapsed_s"],
        "images_per_s_median": statistics.median(r["images_per_s"] for r in rows),
        "date": datetime.date.today().isoformat(),
        "machine": machine,
        "data": data,
        "test_acc_by_epoch": {str(r["epoch"]): r["test_acc"] for r in evaluated},
        "minutes_by_epoch": {str(r["epoch"]): round(r["elapsed_s"] / 60, 1) for r in evaluated},
    }
    if commit is None:
        summary["commit_at_summary"] = code_commit(ROOT) or "unknown"
    if any(r.get("ema_test_acc") is not None for r in evaluated):
        summary["ema_test_acc_by_epoch"] = {str(r["epoch"]): r.get("ema_test_acc")
                                            for r in evaluated}
    return summary


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a finished run folder of minivit train (metrics.jsonl)")
    ap.add_argument("--command", required=True, help="the command that trained it")
    ap.add_argument("--out", required=True, help="benchmarks/results/NAME")
    ap.add_argument("--machine", default="2 CPU cores (shared), numba backend, float32")
    ap.add_argument("--data", default="../shared/data/cifar-10-binary.tar.gz (JPEG-derived copy)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing summary")
    a = ap.parse_args(argv)
    src, out = Path(a.run) / "metrics.jsonl", Path(a.out)
    if not src.is_file():
        ap.error(f"{src} not found (give a run folder of minivit train)")
    if (out / "summary.json").exists() and not a.overwrite:
        ap.error(f"{out} already holds a summary.json; pass --overwrite to replace it")
    try:
        rows = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
        summary = summarize(rows, a.command, a.machine, a.data)
    except (ValueError, KeyError) as e:
        ap.error(f"{src}: {e}")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, out / "metrics.jsonl")
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{out}/summary.json: {100 * summary['final_test_acc']:.2f}% after "
          f"{summary['epochs']} epochs, {summary['train_flops']:.3g} training FLOP "
          f"({summary['budget_fraction_of_60min_recipe']:.3f} of the 60-minute recipe's)")


if __name__ == "__main__":
    main()
