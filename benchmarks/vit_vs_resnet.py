"""ViT vs ResNet vs hybrid at equal training compute (the lecture's "ViT vs ResNet", the
paper's Fig. 5 in miniature), on CIFAR-10.

Each model is trained once per compute budget, with its own schedule: the number of
epochs whose training compute (``train_flops``: matmul, conv and attention FLOPs, forward
+ backward = 3 × forward, as every ``metrics.jsonl`` logs it) comes closest to the budget,
a full warm-up + cosine schedule over those epochs. Every model gets the same recipe
(AdamW, batch 64, lr 1e-3, weight decay 0.05, label smoothing 0.1, pad-4 crops and
flips, seed 0): the comparison is between architectures, not tuning efforts.

Budgets run smallest first, all models at one budget before the next, so an interrupted
search has whole budgets; the JSON is rewritten after every run (with ``--add`` it keeps
the runs of the budgets not given, so budgets can be run on different days). Each run's
``metrics.jsonl`` is copied to ``benchmarks/results/vit_vs_resnet[_TAG]/BUDGET/MODEL/``
(the figure is drawn from those), and the figure — test accuracy against training compute
and against wall time, measured on the same day — goes to
``benchmarks/results/vit_vs_resnet[_TAG].png``.

    python benchmarks/vit_vs_resnet.py --data-dir ../shared/data \\
        [--models cifar10-tiny,hybrid-tiny,resnet-20] [--budgets 0.5e14,1e14,1.6e14] [--add]
    python benchmarks/vit_vs_resnet.py --synthetic --limit 64 --budgets 2e10 \\
        --batch-size 16 --backend numpy --tag smoke          # a smoke test (seconds)

Wall time on the shared 2-core machine swings by 2× between days: compare accuracy at
equal ``train_flops``; the wall-time panel is of one day only.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_data import add_data_flags, load_data, save_accuracy_figure, write_json  # noqa: E402
from minivit.models import config_from_preset, epochs_for_budget, model_kind  # noqa: E402
from minivit.train import train  # noqa: E402

MODELS = "cifar10-tiny,hybrid-tiny,resnet-20"
BUDGETS = "0.5e14,1e14,1.6e14"
RECIPE = dict(batch_size=64, lr=1e-3)            # the rest: TrainSettings defaults


def label(budget: float) -> str:
    """A budget as a folder name: 1.6e14 → '1.6e14' (always in units of 1e14)."""
    return f"{budget / 1e14:g}e14"


def draw(result: dict, path: Path):
    """Accuracy against training compute and against wall time, one line per model
    (its final accuracy at each budget), like the paper's Fig. 5."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name in result["models"]:
        runs = sorted((r for r in result["runs"] if r["model"] == name),
                      key=lambda r: r["train_flops"])
        if not runs:
            continue
        acc = [100 * r["test_acc"] for r in runs]
        axes[0].plot([r["train_flops"] / 1e14 for r in runs], acc, "o-", label=name)
        axes[1].plot([r["wall_s"] / 60 for r in runs], acc, "o-", label=name)
    # linear in units of 1e14: the budgets span only ~3×, where a log axis has no labels
    axes[0].set_xlabel("training compute (1e14 FLOP, forward + backward)")
    # budgets run on different days (--add) are named, so nobody reads them as one day's
    dates = sorted({r.get("date", result["date"]) for r in result["runs"]}) or [result["date"]]
    axes[1].set_xlabel(f"wall time (minutes, this machine; runs of {', '.join(dates)})")
    for ax in axes:
        ax.set_xlim(0, 1.15 * ax.get_xlim()[1])         # room right of the last point
    save_accuracy_figure(fig, axes, "ViT vs ResNet vs hybrid at equal training compute", path,
                         "upper left")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=MODELS, help=f"comma-separated presets ({MODELS})")
    p.add_argument("--budgets", default=BUDGETS, help=f"training FLOP budgets ({BUDGETS})")
    p.add_argument("--batch-size", type=int, default=RECIPE["batch_size"])
    p.add_argument("--backend", default="numba", choices=("numpy", "numba"))
    p.add_argument("--add", action="store_true",
                   help="keep the runs already in the JSON (same recipe and data) except those "
                        "of the models and budgets given here, instead of starting it anew")
    p.add_argument("--runs", default=str(ROOT / "runs"),
                   help="where the runs' checkpoints go (a vit_vs_resnet[_TAG] folder)")
    add_data_flags(p)
    args = p.parse_args(argv)

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    configs = {m: config_from_preset(m) for m in models}          # unknown names fail here
    try:
        budgets = sorted(float(b) for b in args.budgets.split(","))
    except ValueError:
        p.error(f"--budgets: comma-separated FLOP counts, e.g. {BUDGETS}; got {args.budgets!r}")
    if not budgets or min(budgets) <= 0:
        p.error(f"--budgets must be positive, got {args.budgets!r}")
    data = load_data(args, configs[models[0]])
    n_train = len(data["x_train"])

    tag = "_" + args.tag if args.tag else ""
    out = Path(args.out)
    curves = out / f"vit_vs_resnet{tag}"
    runs_dir = Path(args.runs) / f"vit_vs_resnet{tag}"
    result = {"benchmark": "vit_vs_resnet", "models": models, "budgets": budgets,
              "recipe": dict(RECIPE, batch_size=args.batch_size, backend=args.backend,
                             seed=args.seed),
              "data": "synthetic" if args.synthetic else "cifar10", "n_train": n_train,
              "date": time.strftime("%Y-%m-%d"),
              "machine": {"platform": platform.platform(), "python": platform.python_version()},
              "runs": []}
    path = out / f"vit_vs_resnet{tag}.json"
    out.mkdir(parents=True, exist_ok=True)
    if args.add and path.is_file():
        old = json.loads(path.read_text())
        same = {k: old.get(k) for k in ("recipe", "data", "n_train")}
        if same != {k: result[k] for k in same}:
            p.error(f"--add: {path} was measured with other settings "
                    f"({same}); run without --add to start it anew")
        result["runs"] = [dict(r, date=r.get("date", old["date"])) for r in old["runs"]
                          if not (r["budget"] in budgets and r["model"] in models)]
        result["budgets"] = sorted(set(old["budgets"]) | set(budgets))
        result["models"] = old["models"] + [m for m in models if m not in old["models"]]

    def write():
        # after every run, so an interrupted comparison keeps what it finished
        write_json(path, result)
        draw(result, out / f"vit_vs_resnet{tag}.png")

    for budget in budgets:
        for name in models:
            config = configs[name]
            epochs = epochs_for_budget(budget, config, n_train, args.batch_size)
            run_dir = runs_dir / label(budget) / name
            t0 = time.perf_counter()
            r = train(config, data=data, out_dir=run_dir, progress=False, overwrite=True,
                      epochs=epochs, eval_every=max(1, epochs // 4), backend=args.backend,
                      seed=args.seed, **dict(RECIPE, batch_size=args.batch_size))
            wall = time.perf_counter() - t0
            last = r["history"][-1]
            keep = curves / label(budget) / name
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(run_dir / "metrics.jsonl", keep / "metrics.jsonl")
            result["runs"].append({
                "model": name, "kind": model_kind(config), "budget": budget,
                "epochs": epochs, "params": config.num_params(),
                "train_flops_per_image": config.train_flops_per_image(),
                "train_flops": last["train_flops"], "test_acc": r["test_acc"],
                "wall_s": wall, "images_per_s": last["images_per_s"],
                "date": time.strftime("%Y-%m-%d"),
                "metrics": str(keep.relative_to(out))})
            write()
            print(f"{budget:.2g} FLOP  {name}: {100 * r['test_acc']:.2f}% in {epochs} epochs "
                  f"({last['train_flops']:.3g} FLOP, {wall / 60:.1f} min)", flush=True)

    print()
    print("| budget (FLOP) | " + " | ".join(result["models"]) + " |")
    print("|---|" + "---|" * len(result["models"]))
    for budget in result["budgets"]:
        cells = []
        for name in result["models"]:
            r = next((r for r in result["runs"] if r["model"] == name and r["budget"] == budget),
                     None)
            cells.append(f"{100 * r['test_acc']:.2f}% ({r['epochs']} ep, {r['wall_s'] / 60:.0f} min)"
                         if r else "not run yet")
        print(f"| {budget:.2g} | " + " | ".join(cells) + " |")
    print(f"→ {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
