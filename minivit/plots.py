"""Matplotlib figures for training and evaluation: curves, confusion matrix, predictions,
and the patch pictures of the notebooks. Every function returns the Figure and, given a
path, also saves it as PNG (headless-safe: figures are created with the object API, so no
display is needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _figure(figsize):
    from matplotlib.figure import Figure
    return Figure(figsize=figsize, layout="constrained")


def _save(fig, path):
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig


def plot_training_curves(history, path=None):
    """history: list of per-epoch dicts (``metrics.jsonl`` rows) with epoch, train_loss,
    train_acc, test_loss, test_acc, lr. Draws loss, accuracy and learning rate."""
    fig = _figure((12, 3.6))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    ep = [h["epoch"] for h in history]
    ev = [h for h in history if h.get("test_acc") is not None]   # evaluated epochs
    ax1.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    if ev:
        ax1.plot([h["epoch"] for h in ev], [h["test_loss"] for h in ev], "s-", label="test")
    ax1.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax1.legend()
    ax2.plot(ep, [100 * h["train_acc"] for h in history], "o-", label="train")
    if ev:
        ax2.plot([h["epoch"] for h in ev], [100 * h["test_acc"] for h in ev], "s-", label="test")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    ax2.legend()
    ax3.plot(ep, [h["lr"] for h in history], "o-")
    ax3.set(xlabel="epoch", ylabel="learning rate (end of epoch)", title="schedule")
    from matplotlib.ticker import MaxNLocator
    for ax in (ax1, ax2, ax3):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # epochs are whole numbers
    if len(ep) <= 3:
        # A short run has one point per epoch and curve: widen the axis around them and
        # print each value, so a one-epoch run reads as numbers, not as stray dots.
        for ax in (ax1, ax2, ax3):
            ax.set_xlim(min(ep) - 0.5, max(ep) + 0.5)
            ax.set_xticks(ep)
            top = max(max(line.get_ydata()) for line in ax.get_lines())
            ax.set_ylim(0, 100 if ax is ax2 else 1.25 * top if top > 0 else 1)
            for line in ax.get_lines():
                for x, y in zip(line.get_xdata(), line.get_ydata()):
                    ax.annotate(f"{y:.3g}", (x, y), textcoords="offset points",
                                xytext=(6, 4), fontsize=8, color=line.get_color())
        fig.suptitle(f"{len(ep)} epoch{'s' if len(ep) != 1 else ''}: one point per epoch "
                     f"(values printed)", fontsize=9)
    return _save(fig, path)


def plot_confusion_matrix(confusion, classes, path=None, normalize=True):
    """confusion: (C, C) counts, rows = true class, columns = predicted."""
    cm = np.asarray(confusion, dtype=np.float64)
    if normalize:
        cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig = _figure((6.5, 5.5))
    ax = fig.subplots()
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]:.2f}" if normalize else int(cm[i, j]), ha="center",
                    va="center", fontsize=7, color="white" if cm[i, j] > 0.5 * cm.max() else "black")
    fig.colorbar(im, ax=ax)
    return _save(fig, path)


def plot_predictions(images_uint8, probs, classes, labels=None, path=None, cols=8):
    """images_uint8: (B, H, W, C); probs: (B, classes). Shows each image with its top
    prediction: green when it matches ``labels``, red with the true class underneath
    otherwise."""
    B = len(images_uint8)
    rows = -(-B // cols)
    fig = _figure((1.6 * cols, 1.9 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for i in range(B):
        k = int(np.argmax(probs[i]))
        axes[i].imshow(images_uint8[i])
        color = "black" if labels is None else ("green" if labels[i] == k else "red")
        title = f"{classes[k]} {probs[i, k]:.0%}"
        if labels is not None and labels[i] != k:
            title += f"\ntrue: {classes[int(labels[i])]}"
        axes[i].set_title(title, fontsize=8, color=color)
    return _save(fig, path)


def plot_patches(image_uint8, P, S=None, path=None):
    """image_uint8: (H, W, C). Left: the image with the patch grid; right: the N patches
    laid out in token order (row-major), as the model sees them (x_p¹ … x_pᴺ)."""
    from .ops.patches import patches_forward
    S = P if S is None else S
    H, W, C = image_uint8.shape
    p, _ = patches_forward(image_uint8[None].astype(np.float64), P, S)
    N = p.shape[1]
    g = int(round(np.sqrt(N)))
    fig = _figure((10, 4.8))
    left, right = fig.subfigures(1, 2, width_ratios=[1, 1.1])
    ax = left.subplots()
    ax.imshow(image_uint8)
    for k in range(g):
        for j in range(g):
            from matplotlib.patches import Rectangle
            ax.add_patch(Rectangle((j * S - 0.5, k * S - 0.5), P, P, fill=False,
                                   lw=0.8, ec=("yellow" if S == P else f"C{(k + j) % 10}")))
    ax.set_title(f"{H}×{W} image, P={P}, S={S}: N={N} patches")
    ax.axis("off")
    axes = right.subplots(g, g)
    for n, a in enumerate(np.atleast_1d(axes).ravel()):
        a.imshow(p[0, n].reshape(P, P, C).astype(np.uint8))
        a.axis("off")
    right.suptitle("patches in token order")
    return _save(fig, path)
