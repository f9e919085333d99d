"""Train the PyTorch peer ViT on CIFAR-10 with minivit's recipe, logging the same
``metrics.jsonl`` as ``minivit train`` (so the README's curves put both on one axis).

The peer (``torch_peer.py``) is minivit's architecture written in PyTorch, with learned
1-D position embeddings and torch's default initialisation. Everything around the model is
minivit's own NumPy code, so the two runs differ only in the network and its arithmetic:

* the same batches: ``minivit.data.BatchLoader`` with the same seed and the same
  ``Augmenter`` (pad-4 random crops, horizontal flips, CIFAR normalisation);
* the same schedule: ``minivit.optim.LRSchedule`` (linear warm-up of ``TrainSettings``'
  default length, cosine to ``min_lr``), evaluated per step;
* the same optimizer settings: ``torch.optim.AdamW`` (β 0.9/0.999, eps 1e-8) with weight
  decay only where ``minivit.optim.decays`` puts it (dense kernels), global-norm clipping
  at 1, label smoothing 0.1;
* the same compute count: ``train_flops`` = images seen × ``ViTConfig.train_flops_per_image``.

    python benchmarks/torch_peer_train.py --data-dir ../shared/data --epochs 28 \\
        --out benchmarks/results/torch_peer_60min
    python benchmarks/torch_peer_train.py --synthetic --limit 128 --epochs 1 \\
        --batch-size 16 --out /tmp/peer          # a smoke run (seconds)

Writes ``OUT/metrics.jsonl`` (one line per epoch) and ``OUT/summary.json``; refuses an
``OUT`` that already holds a finished run unless ``--overwrite``. Threads: torch's own
(``--threads``, default 2, this machine's cores).
"""
import numpy as np  # noqa: I001  (first, as in any user's script)

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_data import add_data_flags, load_data, write_json  # noqa: E402
from minivit import ViTConfig  # noqa: E402
from minivit.data.augment import Augmenter, normalize  # noqa: E402
from minivit.data.batches import BatchLoader  # noqa: E402
from minivit.optim import LRSchedule, decays  # noqa: E402
from minivit.settings import TrainSettings  # noqa: E402


def _param_groups(model):
    """AdamW groups: decayed (dense kernels, minivit's rule) and not decayed. The peer's
    names map onto minivit's: ``embed``/``qkv``/``proj``/``fc*``/``head`` weights decay;
    biases, LayerNorm scales, the class token and position embeddings do not."""
    alias = {"cls": "cls_token", "pos": "pos_embed"}
    decay, keep = [], []
    for name, p in model.named_parameters():
        (decay if decays(alias.get(name, name)) else keep).append(p)
    return decay, keep


def evaluate(torch, model, x_uint8, y, batch=500):
    """(mean loss, accuracy) of the model on uint8 images (no augmentation)."""
    import torch.nn.functional as F
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            xb = torch.from_numpy(normalize(x_uint8[i:i + batch]))
            yb = torch.from_numpy(np.asarray(y[i:i + batch], dtype=np.int64))
            logits = model(xb)
            loss += F.cross_entropy(logits, yb, reduction="sum").item()
            correct += (logits.argmax(1) == yb).sum().item()
    model.train()
    return loss / len(y), correct / len(y)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cifar10-tiny")
    p.add_argument("--epochs", type=int, default=28)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-every", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--overwrite", action="store_true")
    add_data_flags(p)
    args = p.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.eval_every < 1:
        p.error("--epochs, --batch-size and --eval-every must be >= 1")
    out = Path(args.out)
    if (out / "summary.json").exists() and not args.overwrite:
        p.error(f"{out} holds a finished run (summary.json); pass --overwrite to replace it")

    import torch
    import torch.nn.functional as F
    from torch_peer import build_torch_vit

    cfg = ViTConfig.preset(args.preset)
    s = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    data = load_data(args, cfg)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = build_torch_vit(torch, cfg, attention="explicit")
    decay, keep = _param_groups(model)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": s.weight_decay},
                             {"params": keep, "weight_decay": 0.0}],
                            lr=s.lr, betas=(s.beta1, s.beta2), eps=1e-8)
    loader = BatchLoader(data["x_train"], np.asarray(data["y_train"]), s.batch_size,
                         shuffle=True, seed=s.seed, drop_last=True, prefetch=2,
                         transform=Augmenter(crop_padding=s.crop_padding, crop_mode=s.crop_mode,
                                             flip=s.flip,
                                             num_classes=cfg.num_classes))
    spe = len(loader)
    sched = LRSchedule.of_run(s, spe)
    flops_per_image = cfg.train_flops_per_image()
    out.mkdir(parents=True, exist_ok=True)
    metrics = out / "metrics.jsonl"
    metrics.write_text("")
    print(f"torch peer: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{s.epochs} epochs of {spe} steps, batch {s.batch_size}, {args.threads} threads",
          flush=True)

    step, seen, history = 0, 0, []
    t_start = time.perf_counter()
    for epoch in range(1, s.epochs + 1):
        loader.set_epoch(epoch - 1)
        t0 = time.perf_counter()
        loss_sum, correct, n = 0.0, 0, 0
        for xb, yb in loader:
            lr = sched(step)
            for g in opt.param_groups:
                g["lr"] = lr
            x, y = torch.from_numpy(xb), torch.from_numpy(np.asarray(yb, dtype=np.int64))
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=s.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.clip_norm)
            opt.step()
            step += 1
            seen += len(yb)
            loss_sum += loss.item() * len(yb)
            correct += (logits.argmax(1) == y).sum().item()
            n += len(yb)
        epoch_s = time.perf_counter() - t0
        line = {"epoch": epoch, "step": step, "lr": lr, "train_loss": loss_sum / n,
                "train_acc": correct / n, "test_loss": None, "test_acc": None,
                "epoch_time_s": epoch_s, "images_per_s": n / epoch_s,
                "train_flops": seen * flops_per_image}
        t1 = time.perf_counter()
        if epoch % args.eval_every == 0 or epoch == s.epochs:
            line["test_loss"], line["test_acc"] = evaluate(torch, model, data["x_test"],
                                                           data["y_test"])
        line["eval_time_s"] = time.perf_counter() - t1
        line["elapsed_s"] = time.perf_counter() - t_start
        history.append(line)
        with open(metrics, "a") as f:
            f.write(json.dumps(line) + "\n")
        acc = "" if line["test_acc"] is None else f" | test acc {100 * line['test_acc']:.2f}%"
        print(f"epoch {epoch}/{s.epochs}: train loss {line['train_loss']:.4f} "
              f"acc {100 * line['train_acc']:.2f}%{acc} | {line['images_per_s']:.0f} img/s | "
              f"{line['elapsed_s'] / 60:.1f} min", flush=True)

    summary = {"framework": f"torch {torch.__version__}", "preset": args.preset,
               "command": "python benchmarks/torch_peer_train.py " + " ".join(sys.argv[1:]),
               "settings": {"epochs": s.epochs, "batch_size": s.batch_size, "lr": s.lr,
                            "warmup_epochs": s.warmup, "min_lr": s.min_lr,
                            "weight_decay": s.weight_decay, "label_smoothing": s.label_smoothing,
                            "clip_norm": s.clip_norm, "seed": s.seed, "threads": args.threads},
               "final_test_acc": history[-1]["test_acc"], "train_flops": seen * flops_per_image,
               "wall_s": history[-1]["elapsed_s"], "date": time.strftime("%Y-%m-%d")}
    write_json(out / "summary.json", summary)
    print(f"final test accuracy {100 * summary['final_test_acc']:.2f}% "
          f"({summary['wall_s'] / 60:.1f} min); {metrics}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
