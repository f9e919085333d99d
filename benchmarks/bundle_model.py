"""Ship a trained run as one of the package's models (minivit/weights/NAME.npz; NAME
cifar10-vit is ``default``, hybrid-pool is ``hybrid``, resnet-20 is ``resnet``: see
minivit.hub.ALIASES).

    python benchmarks/bundle_model.py runs/cifar10-60min --name cifar10-vit --command "minivit train ..."
    python benchmarks/bundle_model.py runs/knob_ablation_r9c/pool_a_s16_10ep \
        --name hybrid-pool --command "python benchmarks/knob_ablation.py ..."

Writes the parameters only (no optimizer state, so it stays small), with the class names,
the run's final test accuracy and the command that trained it in meta.json. ``--ema`` ships
the run's moving average of the weights (a run trained with ``--ema-decay``) and records
the average's test accuracy instead: which of the two a recipe ships is part of the recipe,
decided before its runs, not picked from their test figures.
"""
import argparse
import json
from pathlib import Path

from minivit.checkpoint import load_model, save_checkpoint
from minivit.data.cifar10 import CLASSES

WEIGHTS = Path(__file__).resolve().parents[1] / "minivit" / "weights"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="training output directory (checkpoint.npz, metrics.jsonl)")
    ap.add_argument("--command", default="", help="the command that trained it")
    ap.add_argument("--name", default="cifar10-vit",
                    help="file name in minivit/weights (default cifar10-vit, the default model)")
    ap.add_argument("--out", default=None, help="another path instead of minivit/weights/NAME.npz")
    ap.add_argument("--ema", action="store_true",
                    help="ship the moving average of the weights (and its test accuracy)")
    a = ap.parse_args(argv)
    a.out = a.out or str(WEIGHTS / f"{a.name}.npz")
    run = Path(a.run)
    model, meta = load_model(run / "checkpoint.npz", dtype="float32", ema=a.ema)
    history = [json.loads(line) for line in open(run / "metrics.jsonl")]
    last = [h for h in history if h.get("test_acc") is not None][-1]   # last evaluated epoch
    acc = last["ema_test_acc"] if a.ema else last["test_acc"]
    path = save_checkpoint(a.out, model, classes=list(CLASSES), test_acc=acc,
                           epoch=last["epoch"], train_command=a.command,
                           wall_time_s=last["elapsed_s"], weights="ema" if a.ema else "raw")
    print(f"wrote {path} ({path.stat().st_size / 2**20:.2f} MiB), test acc "
          f"{100 * acc:.2f}% after {last['epoch']} epochs"
          + (" (moving average of the weights)" if a.ema else ""))


if __name__ == "__main__":
    main()
