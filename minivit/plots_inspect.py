"""Figures for :mod:`minivit.inspect` (paper Fig. 6–7, Appendix D.7–D.8).

Every function builds a :class:`matplotlib.figure.Figure` directly (no pyplot state, so
nothing accumulates in long sessions), returns it, and writes a PNG when ``path`` is
given. The Agg backend is selected only inside the functions that save, so importing this
module never changes a notebook's backend.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _figure(figsize):
    from matplotlib.figure import Figure
    return Figure(figsize=figsize, layout="constrained")


def _save(fig, path, dpi=120):
    if path is not None:
        import matplotlib
        matplotlib.use("Agg")               # headless: no display needed to write a PNG
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    return fig


def _display(image):
    """uint8 pixels or floats → floats in [0, 1] for imshow (floats outside [0, 1],
    e.g. normalised inputs, are min–max rescaled)."""
    x = np.asarray(image)
    if x.dtype == np.uint8:
        return x.astype(np.float64) / 255.0
    x = x.astype(np.float64)
    lo, hi = x.min(), x.max()
    if lo < 0 or hi > 1:
        x = (x - lo) / max(hi - lo, 1e-12)
    return x


def _upsample(m, shape):
    """Nearest-neighbour upsampling of a (G_h, G_w) map to the image's (H, W)."""
    gh, gw = m.shape
    ry = np.minimum((np.arange(shape[0]) * gh) // shape[0], gh - 1)
    rx = np.minimum((np.arange(shape[1]) * gw) // shape[1], gw - 1)
    return m[ry][:, rx]


def plot_attention_heads(image, attention, grid, layer=0, query=0, path=None,
                         image_name=None):
    """One layer's attention of one image, a panel per head, overlaid on the image.

    image: (H, W, C); attention: (heads, T, T) for that image, T = N + 1 with a class
    token or T = N = G_h·G_w without one (``classifier="gap"``); grid: (G_h, G_w);
    layer: the layer's index (0-based, as in ``model.last_attention``; titles number
    layers and heads from 1, as the notebooks do); query: the query token whose row is
    drawn (0, the class token, by default); image_name: which image this is (the title).
    Without a class token the head reads the mean of all tokens (Appendix D.3), so the
    panels show the mean of the rows (query is then ignored).
    """
    A = np.asarray(attention)
    H, T = A.shape[0], A.shape[-1]
    gap = T == grid[0] * grid[1]
    img = _display(image)
    fig = _figure((2.0 * (H + 1), 2.3))
    axes = fig.subplots(1, H + 1, squeeze=False)[0]
    axes[0].imshow(img)
    axes[0].set_title("input", fontsize=8)
    who = ("all tokens, averaged (GAP head)" if gap else
           "the class token" if query == 0 else f"token {query}")
    fig.suptitle(f"{image_name + ': ' if image_name else ''}attention of {who} in "
                 f"layer {layer + 1} (heads numbered from 1)", fontsize=9)
    for h in range(H):
        m = (A[h].mean(axis=0) if gap else A[h, query, 1:]).reshape(grid)
        m = m / max(m.max(), 1e-12)
        axes[h + 1].imshow(img)
        axes[h + 1].imshow(_upsample(m, img.shape[:2]), cmap="inferno", alpha=0.6,
                           vmin=0, vmax=1)
        axes[h + 1].set_title(f"layer {layer + 1}, head {h + 1}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    return _save(fig, path)


def plot_rollout(images, maps, path=None, max_images=8, image_names=None):
    """Attention rollout (Abnar & Zuidema; paper Fig. 6): each input image above the
    class token's rollout map (normalised to its max) multiplied onto it.

    images: (B, H, W, C); maps: (B, G_h, G_w) from :func:`minivit.inspect.cls_rollout_map`;
    image_names: B titles saying which image each column shows (default "image 1" …).
    """
    B = min(len(images), len(maps), max_images)
    fig = _figure((2.0 * B, 4.2))
    axes = fig.subplots(2, B, squeeze=False)
    for i in range(B):
        img = _display(images[i])
        m = np.asarray(maps[i], dtype=np.float64)
        m = _upsample(m / max(m.max(), 1e-12), img.shape[:2])
        axes[0, i].imshow(img)
        axes[1, i].imshow(img * m[..., None] if img.ndim == 3 else img * m)
        axes[0, i].axis("off")
        axes[1, i].axis("off")
        name = image_names[i] if image_names is not None else f"image {i + 1}"
        axes[0, i].set_title(name.replace(" (", "\n("), fontsize=7)
    axes[1, 0].set_title("attention rollout", fontsize=8, loc="left")
    fig.suptitle("top: input; bottom: what the class token attends to through all layers",
                 fontsize=9)
    return _save(fig, path)


def plot_mean_distance(distances, path=None, image_size=None):
    """Mean attention distance vs depth (paper Fig. 7 right): one dot per head.

    distances: (L, heads) in pixels. image_size: draws the image side as a reference.
    """
    d = np.asarray(distances)
    L, H = d.shape
    fig = _figure((4.5, 3.5))
    ax = fig.subplots()
    for h in range(H):                       # layers and heads numbered from 1
        ax.scatter(np.arange(1, L + 1), d[:, h], s=14, label=f"head {h + 1}")
    ax.set_xlabel("network depth (layer)")
    ax.set_ylabel("mean attention distance (pixels)")
    if image_size:
        ax.set_ylim(0, image_size)
    ax.set_xticks(np.arange(1, L + 1))
    if H <= 16:
        ax.legend(fontsize=6, ncol=2)
    return _save(fig, path)


def _mosaic(tiles, cols, gap=1):
    """Tiles (k, h, w[, c]) laid out on one canvas, ``cols`` per row, NaN-filled gaps
    (drawn blank). One ``imshow`` of a mosaic instead of one Axes per tile: a 64-tile
    figure draws in a fraction of a second instead of seconds."""
    k, h, w = tiles.shape[:3]
    rows = -(-k // cols)
    canvas = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap) + tiles.shape[3:],
                     np.nan)
    for i in range(k):
        r, c = divmod(i, cols)
        canvas[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = tiles[i]
    return canvas


def plot_pos_embed_similarity(similarity, path=None, title="position embedding similarity"):
    """Position-embedding similarity as a grid of grids (paper Fig. 7 centre): the tile at
    (r, c) shows patch (r, c)'s cosine similarity with every patch (rows and columns of
    patches numbered from 1).

    similarity: (G_h, G_w, G_h, G_w) from :func:`minivit.inspect.pos_embed_similarity`.
    title: the figure's title (e.g. saying the embeddings are fixed, not learned).
    """
    S = np.asarray(similarity, dtype=np.float64)
    gh, gw = S.shape[:2]
    fig = _figure((max(4.0, 0.5 * gw + 1), max(4.0, 0.5 * gh)))
    ax = fig.subplots()
    im = ax.imshow(_mosaic(S.reshape(gh * gw, gh, gw), gw), vmin=-1, vmax=1,
                   cmap="viridis", interpolation="nearest")
    ax.set_xticks([c * (gw + 1) + (gw - 1) / 2 for c in range(gw)], range(1, gw + 1))
    ax.set_yticks([r * (gh + 1) + (gh - 1) / 2 for r in range(gh)], range(1, gh + 1))
    ax.set(xlabel="input patch column", ylabel="input patch row")
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, shrink=0.6, label="cosine similarity")
    return _save(fig, path)


def plot_embedding_filters(components, explained=None, path=None, cols=7):
    """RGB embedding filters (paper Fig. 7 left): the principal components of E, each
    rescaled to [0, 1] on its own for display, numbered from 1 in order of variance.

    components: (k, P, P, C); explained: (k,) variance ratios, printed under each.
    """
    comp = np.asarray(components, dtype=np.float64)
    k, P = comp.shape[0], comp.shape[1]
    lo = comp.reshape(k, -1).min(axis=1)[:, None, None, None]
    hi = comp.reshape(k, -1).max(axis=1)[:, None, None, None]
    comp = (comp - lo) / np.maximum(hi - lo, 1e-12)
    rgb = comp.shape[-1] == 3
    tiles = comp if rgb else comp[..., 0]
    cols = min(cols, k)
    rows = -(-k // cols)
    gap = max(1, P // 2)
    canvas = _mosaic(tiles, cols, gap)
    if rgb:                                  # blank (white) gaps in an RGB image
        canvas = np.where(np.isnan(canvas), 1.0, canvas)
    fig = _figure((1.2 * cols, 1.3 * rows + 0.4))
    ax = fig.subplots()
    ax.imshow(canvas, cmap=None if rgb else "gray", interpolation="nearest")
    ax.axis("off")
    if explained is not None:
        for i in range(k):
            r, c = divmod(i, cols)
            ax.text(c * (P + gap) + (P - 1) / 2, r * (P + gap) + P - 0.3,
                    f"{i + 1}: {100 * explained[i]:.1f}%", ha="center", va="top", fontsize=6)
    fig.suptitle("RGB embedding filters (first principal components)")
    return _save(fig, path)
