"""Ship a trained run as one of the package's models (minivit/weights/NAME.npz; NAME
cifar10-vit is ``default``, hybrid-pool is ``hybrid``, resnet-20 is ``resnet``: see
minivit.hub.ALIASES).

    python benchmarks/bundle_model.py runs/cifar10-60min --name cifar10-vit --command "minivit train ..."
    python benchmarks/bundle_model.py runs/knob_ablation_r9c/pool_a_s16_10ep \
        --name hybrid-pool --command "python benchmarks/knob_ablation.py ..."

Writes the parameters only (no optimizer state, so it stays small), with the class names,
the run's final test accuracy and the command that trained it in meta.json.
"""
import argparse
import json
from pathlib import Path

from minivit.checkpoint import load_model, save_checkpoint
from minivit.data.cifar10 import CLASSES

WEIGHTS = Path(__file__).resolve().parents[1] / "minivit" / "weights"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="training output directory (checkpoint.npz, metrics.jsonl)")
    ap.add_argument("--command", default="", help="the command that trained it")
    ap.add_argument("--name", default="cifar10-vit",
                    help="file name in minivit/weights (default cifar10-vit, the default model)")
    ap.add_argument("--out", default=None, help="another path instead of minivit/weights/NAME.npz")
    a = ap.parse_args()
    a.out = a.out or str(WEIGHTS / f"{a.name}.npz")
    run = Path(a.run)
    model, meta = load_model(run / "checkpoint.npz", dtype="float32")
    history = [json.loads(line) for line in open(run / "metrics.jsonl")]
    last = [h for h in history if h.get("test_acc") is not None][-1]   # last evaluated epoch
    path = save_checkpoint(a.out, model, classes=list(CLASSES), test_acc=last["test_acc"],
                           epoch=last["epoch"], train_command=a.command,
                           wall_time_s=last["elapsed_s"])
    print(f"wrote {path} ({path.stat().st_size / 2**20:.2f} MiB), test acc "
          f"{100 * last['test_acc']:.2f}% after {last['epoch']} epochs")


if __name__ == "__main__":
    main()
