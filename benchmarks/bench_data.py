"""The data flags, loader and result writers (JSON, accuracy figures) shared by the
training benchmarks (mpp_vs_scratch.py, knob_ablation.py, vit_vs_resnet.py,
torch_peer_train.py, recipe_curves.py): CIFAR-10, or a small synthetic set for a smoke
test."""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def add_data_flags(p):
    """--data-dir, --limit, --limit-test, --synthetic, --seed, --tag, --out."""
    p.add_argument("--data-dir", default=None)
    p.add_argument("--limit", type=int, default=None, help="first N training images")
    p.add_argument("--limit-test", type=int, default=None)
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))


def load_data(args, config) -> dict:
    """The images of ``args`` (see :func:`add_data_flags`) at ``config``'s size: the
    synthetic set (--limit images, a quarter as many test images, at least 32) or
    CIFAR-10 (all of it unless limited). Returns a dict like ``load_cifar10``'s."""
    if args.synthetic:
        from minivit.data.synthetic import make_synthetic
        n = args.limit or 1024
        data = make_synthetic(n_train=n, n_test=max(n // 4, 32), image_size=config.image_size,
                              num_classes=config.num_classes, seed=args.seed)
        return dict(data, source="synthetic")
    from minivit.data import load_cifar10
    data = load_cifar10(args.data_dir, limit_train=args.limit, limit_test=args.limit_test,
                        expected_counts=None if (args.limit or args.limit_test) else (50000, 10000))
    return dict(data, source="cifar10")   # train() logs and records where the images came from


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (a temporary file renamed over it), so
    a benchmark interrupted mid-write keeps its previous results."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float))
    tmp.replace(path)


def save_accuracy_figure(fig, axes, title: str, path: Path, legend_loc: str | None) -> None:
    """Finish a figure whose panels plot CIFAR-10 test accuracy (grid, legend, title) and
    save it to ``path``. ``legend_loc`` None: one legend for the figure, below the panels
    (for many lines, which a legend inside a panel would hide); the figure grows by the
    legend's rows, so callers size it for the panels alone."""
    import matplotlib.pyplot as plt
    for ax in axes:
        ax.set_ylabel("CIFAR-10 test accuracy (%)")
        ax.grid(alpha=0.3)
        if legend_loc is not None:
            ax.legend(loc=legend_loc, fontsize=8)
    fig.suptitle(title)
    if legend_loc is None:
        handles, labels = axes[0].get_legend_handles_labels()
        width, height = fig.get_size_inches()
        fig.set_size_inches(width, height + 0.26 * ((len(labels) + 1) // 2))
        fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
        # leave the rows of the legend below the panels
        fig.tight_layout(rect=(0, 0.04 + 0.024 * ((len(labels) + 1) // 2), 1, 1))
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
