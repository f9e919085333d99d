"""Looking inside a trained ViT (paper §4.5, Fig. 6–7, Appendix D.7–D.8).

* :func:`attention_maps` — every layer's attention matrices for a batch of images;
* :func:`attention_rollout` / :func:`cls_rollout_map` — Abnar & Zuidema (2020): what the
  class token attends to in the input, through all layers (Fig. 6, D.8);
* :func:`mean_attention_distance` — how far, in pixels, each head looks (Fig. 7 right,
  D.7): the "receptive field size" of a head;
* :func:`pos_embed_similarity` — cosine similarity between position embeddings (Fig. 7
  centre): the model learns the 2-D image topology from 1-D embeddings;
* :func:`embedding_filters_pca` — principal components of the patch projection E
  (Fig. 7 left): plausible basis functions for the structure inside a patch.

CLI: ``minivit inspect [CKPT] --out DIR [--data-dir D] [--images N]`` (CKPT: a file, a
run folder or ``default``). Layers and heads are numbered from 1 in files and figures.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from minivit.errors import ConfigError


# ---------------------------------------------------------------------- attention
def attention_maps(model, images, batch_size=64) -> list[np.ndarray]:
    """Every layer's attention matrices for ``images``.

    model: a :class:`~minivit.model.ViT`; images: (B, H, W, C) normalised floats.
    Returns a list of L host arrays (B, heads, N+1, N+1); row i of a matrix is the
    softmax over keys of query token i (token 0 is the class token).
    """
    per_layer: list[list[np.ndarray]] = [[] for _ in range(model.config.depth)]
    for s in range(0, len(images), batch_size):
        model.forward(images[s:s + batch_size], keep_attention=True)
        for layer, a in enumerate(model.last_attention):
            per_layer[layer].append(np.asarray(a, dtype=np.float64))
        model.last_attention = []
        model.clear_cache()                  # free the activations kept for backward
    return [np.concatenate(chunks, axis=0) for chunks in per_layer]


def _as_list(attentions):
    if isinstance(attentions, np.ndarray) and attentions.ndim == 4:
        attentions = [attentions]
    out = [np.asarray(a, dtype=np.float64) for a in attentions]
    if not out or any(a.ndim != 4 or a.shape[-1] != a.shape[-2] for a in out):
        raise ConfigError("attentions must be a non-empty list of (B, heads, T, T) arrays")
    return out


def attention_rollout(attentions, add_residual=True) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020; paper Appendix D.8).

    attentions: list over layers of (B, heads, T, T) with T = N + 1.
    Per layer: average the heads, Ā = mean_h A_h; account for the residual connection by
    adding the identity, Ā + I (add_residual); re-normalise every row to sum to 1. Then
    multiply through the layers, R = Ā_L · … · Ā_1, so R[i, j] is how much input token j
    flows into output token i. Returns R: (B, T, T).
    """
    atts = _as_list(attentions)
    R = None
    for A in atts:
        a = A.mean(axis=1)                                   # (B, T, T)
        if add_residual:
            a = a + np.eye(a.shape[-1])
        a = a / a.sum(axis=-1, keepdims=True)
        R = a if R is None else a @ R                        # later layers on the left
    return R


def cls_rollout_map(attentions, grid=None, add_residual=True) -> np.ndarray:
    """The class token's row of the rollout over the patches, as an image-shaped map.

    attentions: list of (B, heads, T, T) (rolled out here) or an already rolled-out
    (B, T, T) array. grid: (G_h, G_w); None: a square grid from N = T − 1.
    Returns (B, G_h, G_w), non-negative; the paper overlays it (normalised to its max)
    on the input image (Fig. 6). A model without class token (``classifier="gap"``,
    T = G_h·G_w given by ``grid``) has its head read the mean of all tokens: the map is
    then the mean of the rollout's rows.
    """
    if isinstance(attentions, np.ndarray) and attentions.ndim == 3:
        R = np.asarray(attentions, dtype=np.float64)
    else:
        R = attention_rollout(attentions, add_residual)
    B, T, _ = R.shape
    if grid is not None and grid[0] * grid[1] == T:          # GAP: no class token
        return R.mean(axis=1).reshape(B, grid[0], grid[1])
    N = T - 1
    if grid is None:
        g = int(round(np.sqrt(N)))
        if g * g != N:
            raise ConfigError(f"cannot infer a square grid from N={N}; pass grid")
        grid = (g, g)
    if grid[0] * grid[1] != N:
        raise ConfigError(f"grid {grid} does not hold N={N} patches")
    return R[:, 0, 1:].reshape(B, grid[0], grid[1])


def patch_centres(grid, patch_size, stride=None) -> np.ndarray:
    """Centres of the patches in pixels: (G_h·G_w, 2) as (y, x), row-major grid order.
    Patch (r, c) covers pixels [r·S, r·S + P) × [c·S, c·S + P)."""
    S = patch_size if stride is None else stride
    gh, gw = grid
    r, c = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    return np.stack([r.ravel() * S + patch_size / 2.0, c.ravel() * S + patch_size / 2.0],
                    axis=1).astype(np.float64)


def mean_attention_distance(attentions, grid, patch_size, stride=None,
                            renormalize=True) -> np.ndarray:
    """Mean attention distance per layer and head, in pixels (paper Fig. 7 right, D.7).

    attentions: list over L layers of (B, heads, N+1, N+1); grid: (G_h, G_w);
    patch_size: P; stride: S (None: S = P).
    For each query patch i the distance to key patch j is the Euclidean distance between
    the patch centres, ‖c_i − c_j‖ (pixels); it is weighted by the attention A[i, j] and
    summed over j, then averaged over the query patches and the images. The class token
    has no position: it is left out as a query and as a key; with renormalize=True the
    weights over the patch keys are rescaled to sum to 1 (the distance given that a patch
    is attended to), with False they are used as they are (the common
    ``A[..., 1:, 1:] * dist`` implementation). Returns (L, heads).
    """
    atts = _as_list(attentions)
    cen = patch_centres(grid, patch_size, stride)
    dist = np.sqrt(((cen[:, None, :] - cen[None, :, :]) ** 2).sum(-1))   # (N, N)
    N = dist.shape[0]
    out = []
    for A in atts:
        if A.shape[-1] not in (N, N + 1):
            raise ConfigError(f"attention over {A.shape[-1]} tokens does not match the grid "
                              f"{tuple(grid)} (+ class token = {N + 1})")
        a = A[:, :, 1:, 1:] if A.shape[-1] == N + 1 else A  # (B, heads, N, N); GAP: no cls
        if renormalize:
            a = a / np.maximum(a.sum(-1, keepdims=True), 1e-30)
        per_query = (a * dist).sum(-1)                        # (B, heads, N)
        out.append(per_query.mean(axis=(0, 2)))
    return np.stack(out)


# ---------------------------------------------------------------------- embeddings
def _host_params(model_or_params):
    if isinstance(model_or_params, dict):
        return model_or_params
    return model_or_params.state_dict()


def patch_position_embeddings(model) -> np.ndarray:
    """The patch tokens' position embeddings as a (G_h, G_w, D) host array, for learned
    1-D (E_pos without the class token's row) or learned 2-D ([row_r ; col_c]) kinds."""
    c = model.config
    p = _host_params(model)
    gh, gw = c.grid
    k = 1 if c.classifier == "token" else 0               # the class token's row, if any
    if c.pos_embed == "learned-1d":
        return np.asarray(p["pos_embed"], dtype=np.float64)[0, k:].reshape(gh, gw, c.dim)
    if c.pos_embed == "learned-2d":
        from minivit.ops.embedding import pos2d_forward
        pcls = p.get("pos_embed_cls")
        pos, _ = pos2d_forward(None if pcls is None else np.asarray(pcls, np.float64),
                               np.asarray(p["pos_embed_row"], np.float64),
                               np.asarray(p["pos_embed_col"], np.float64))
        return pos[0, k:].reshape(gh, gw, c.dim)
    if c.pos_embed == "sincos2d":
        from minivit.ops.embedding import sincos2d_pos_embed
        return sincos2d_pos_embed(gh, gw, c.dim).reshape(gh, gw, c.dim)
    raise ConfigError("this model has no position embeddings (pos_embed='none')")


def pos_embed_similarity(model) -> np.ndarray:
    """Cosine similarity between the position embeddings of every pair of patches
    (paper Fig. 7 centre). Returns S: (G_h, G_w, G_h, G_w); S[r, c] is the map of patch
    (r, c)'s similarity with every patch, S[r, c, r, c] = 1."""
    E = patch_position_embeddings(model)
    gh, gw, D = E.shape
    X = E.reshape(gh * gw, D)
    X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    return (X @ X.T).reshape(gh, gw, gh, gw)


def embedding_filters_pca(model, k=28, center=True):
    """Principal components of the patch-embedding filters (paper Fig. 7 left).

    E: (P·P·C, D) — each of its D columns is one linear filter over a P × P × C patch
    (rows in (h, w, c) order). The filters are the samples: PCA of Eᵀ (D, P·P·C), centred
    over the D filters when center=True. k: number of components (the paper shows 28);
    clipped to min(D, P·P·C).
    Returns (components: (k, P, P, C), unit-norm, sorted by variance; explained_variance_ratio:
    (k,), each component's share of the total variance).
    """
    c = model.config
    p = _host_params(model)
    W = np.asarray(p["patch_embed.weight"], dtype=np.float64)      # (P²C, D)
    X = W.T                                                         # (D, P²C): samples
    if center:
        X = X - X.mean(axis=0, keepdims=True)
    _, s, Vt = np.linalg.svd(X, full_matrices=False)
    var = s ** 2
    total = var.sum()
    k = int(min(k, Vt.shape[0]))
    ratio = var[:k] / total if total > 0 else np.zeros(k)
    P = c.patch_size
    return Vt[:k].reshape(k, P, P, c.channels), ratio


# ---------------------------------------------------------------------- data for the CLI
SYNTHETIC_NOTE = ("SYNTHETIC images (random colour blobs, not photographs): the attention "
                  "maps show how the model reacts to them, not to real objects")


def load_images(n, image_size, data_dir=None, seed=0, channels=3, verbose=True,
                data_source=None):
    """n test images for inspection: the model's own image folder (``data_source``, a
    checkpoint's record) or CIFAR-10's test set when it can be found (never downloaded),
    else smooth random synthetic images, with a message saying so and how to point at
    the data (``--data-dir`` / ``$MINIVIT_DATA_DIR``).

    Returns (uint8 images (n, image_size, image_size, C) for display, normalised float32
    model input, labels (n,) or None, source string: "cifar10", "image-folder" or
    "synthetic").
    """
    from minivit.errors import DataError
    imgs = labels = None
    source = "synthetic"
    if data_source and channels == 3:
        from minivit.data.sources import load_dataset
        d = load_dataset(data_source, image_size, limit_train=0, limit_test=n)
        imgs, labels, source = d["x_test"][:n], d["y_test"][:n], "image-folder"
    elif channels == 3:
        try:
            from minivit.data import load_cifar10
            d = load_cifar10(data_dir, download=False, progress=False, limit_train=0,
                             limit_test=n, expected_counts=None)
            imgs, labels, source = d["x_test"][:n], d["y_test"][:n], "cifar10"
        except (DataError, OSError) as e:    # no data here → synthetic, said out loud
            if verbose:
                print(f"note: CIFAR-10 not found ({_why(e)}); using {SYNTHETIC_NOTE}. To "
                      f"inspect real test images pass --data-dir FOLDER or set "
                      f"MINIVIT_DATA_DIR=FOLDER (a folder holding cifar-10-binary.tar.gz)")
    elif verbose:
        print(f"note: a {channels}-channel model; using {SYNTHETIC_NOTE}")
    if imgs is None:
        rng = np.random.default_rng(seed)
        # Low-frequency colour blobs: a coarse random grid upsampled, so attention has
        # some structure to follow.
        from minivit.finetune import resize_images
        coarse = rng.integers(0, 256, size=(n, 4, 4, channels)).astype(np.uint8)
        imgs = resize_images(coarse, 32)
    if imgs.shape[1] != image_size:
        from minivit.finetune import resize_images
        imgs = resize_images(imgs, image_size)
    return imgs, normalize_images(imgs), labels, source


def _why(e) -> str:
    """The first clause of a data error (its hint about download=True is for Python)."""
    text = " ".join(str(e).split())
    return text.split("; ")[0].removeprefix("CIFAR-10 not found: ")


def image_names(source, labels, classes, n):
    """Titles saying which image each figure shows: "CIFAR-10 test image 1 (cat)",
    "synthetic image 2", numbered from 1 like layers and heads."""
    what = {"cifar10": "CIFAR-10 test image", "image-folder": "test image"}.get(
        source, "synthetic image")
    names = []
    for i in range(n):
        label = f" ({classes[int(labels[i])]})" if labels is not None and classes else ""
        names.append(f"{what} {i + 1}{label}")
    return names


def normalize_images(imgs_uint8):
    """uint8 pixels → the model's normalised float32 input (``minivit.data.normalize``;
    falls back to scaling to [−1, 1], the official convention, if it is unavailable)."""
    try:
        from minivit.data import normalize
    except ImportError:
        return (np.asarray(imgs_uint8, dtype=np.float32) / 127.5 - 1.0).astype(np.float32)
    return normalize(imgs_uint8)


# ---------------------------------------------------------------------- CLI
def configure_parser(p):
    """``minivit inspect [CKPT] --out DIR [--data-dir D] [--images N]``."""
    from .flags import add_backend_flag
    p.add_argument("checkpoint", nargs="?", default="default",
                   help="checkpoint .npz, a run folder (its checkpoint.npz), or 'default' for "
                        "the bundled CIFAR-10 model (default: default)")
    p.add_argument("--out", required=True, help="directory for the PNGs and JSON")
    p.add_argument("--data-dir", default=None,
                   help="CIFAR-10 location (default: $MINIVIT_DATA_DIR, else the user cache; "
                        "never downloaded here: without it, synthetic images are used and "
                        "the output says so)")
    p.add_argument("--images", type=int, default=8, help="number of test images (default 8)")
    add_backend_flag(p, default="numpy")


def inspect_checkpoint(checkpoint, out, data_dir=None, n_images=8, backend="numpy",
                       verbose=True) -> dict:
    """Everything of §4.5 for one checkpoint, written to ``out``: attention maps of the
    first image (one PNG per layer), rollout overlays, mean attention distance vs depth
    (PNG + ``mean_attention_distance.json``), position-embedding similarity, embedding
    filters. Layers and heads are numbered from 1 in file names and figures, as in the
    notebooks. A hybrid ViT (paper §3.1) gets the same on its trunk's feature-map cells
    (distances in input pixels), without embedding filters; a ResNet, which has no
    attention, is refused. checkpoint: a path, a run folder or ``default``. Returns a dict
    of the paths written and the distances."""
    from minivit import plots_inspect as pi
    from minivit.checkpoint import load_model
    from minivit.hub import class_names, require_vit, resolve_checkpoint
    if n_images < 1:
        raise ConfigError(f"--images must be >= 1, got {n_images}")
    checkpoint = resolve_checkpoint(checkpoint)
    model, meta = load_model(checkpoint, backend=backend)
    hybrid = meta.get("model_kind") == "hybrid"
    if not hybrid:
        require_vit(meta, checkpoint, "inspect")       # a ResNet has no attention
    c = model.config
    # The encoder whose attention and position embeddings are read. A hybrid's tokens are
    # the cells of its trunk's feature map (paper §3.1): for distances and overlays each
    # covers image_size / feature_size pixels, as a P×P patch does for the plain ViT.
    vit = model.vit if hybrid else model
    grid = vit.config.grid
    cell = c.image_size // c.feature_size if hybrid else c.patch_size
    stride = cell if hybrid else c.S
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    imgs, x, labels, source = load_images(n_images, c.image_size, data_dir,
                                          channels=c.channels, verbose=verbose,
                                          data_source=meta.get("data_source"))
    names = image_names(source, labels, class_names(meta, c.num_classes, checkpoint),
                        len(imgs))
    atts = attention_maps(model, x)
    written = []
    for layer, A in enumerate(atts):
        pth = out / f"attention_layer{layer + 1}.png"
        pi.plot_attention_heads(imgs[0], A[0], grid, layer=layer, path=pth,
                                image_name=names[0])
        written.append(str(pth))
    maps = cls_rollout_map(atts, grid)
    pi.plot_rollout(imgs, maps, path=out / "rollout.png", image_names=names)
    written.append(str(out / "rollout.png"))
    dist = mean_attention_distance(atts, grid, cell, stride)
    pi.plot_mean_distance(dist, path=out / "mean_attention_distance.png",
                          image_size=c.image_size)
    written.append(str(out / "mean_attention_distance.png"))
    info = {"checkpoint": str(checkpoint), "images": int(n_images), "source": source,
            "units": "pixels", "config": c.to_dict(),
            "layout": "mean_attention_distance[l][h] is layer l+1, head h+1 (figures and "
                      "file names number layers and heads from 1)",
            "mean_attention_distance": dist.tolist()}
    with open(out / "mean_attention_distance.json", "w") as f:
        json.dump(info, f, indent=1)
    written.append(str(out / "mean_attention_distance.json"))
    if vit.config.pos_embed != "none":
        # fixed sine-cosine embeddings show their construction, not anything learned
        fixed = vit.config.pos_embed == "sincos2d"
        pi.plot_pos_embed_similarity(pos_embed_similarity(vit),
                                     path=out / "pos_embed_similarity.png",
                                     title="position embedding similarity"
                                     + (" (fixed 2-D sine-cosine, not learned)" if fixed else ""))
        written.append(str(out / "pos_embed_similarity.png"))
    if not hybrid:      # a hybrid's E projects feature channels, not RGB pixels: no filters
        comps, ratio = embedding_filters_pca(model, k=28)
        pi.plot_embedding_filters(comps, ratio, path=out / "embedding_filters.png")
        written.append(str(out / "embedding_filters.png"))
    if verbose:
        what = {"cifar10": "CIFAR-10 test", "image-folder": "test"}.get(source, "SYNTHETIC")
        print(f"inspected {checkpoint} on {len(imgs)} {what} images; wrote "
              f"{len(written)} files to {out}")
    return {"written": written, "mean_attention_distance": dist, "source": source}


def cli_run(args) -> int:
    inspect_checkpoint(args.checkpoint, args.out, args.data_dir, args.images, args.backend)
    return 0
