"""Fine-tuning a pre-trained ViT (paper §3.2, §4.1, Appendix B.1.1).

Two things change between pre-training and fine-tuning:

* **the head** — the pre-training head (for ViT: a tanh MLP "pre-logits" + linear) is
  removed and a single zero-initialised linear layer D → K is attached for the K
  downstream classes;
* **the resolution** — fine-tuning at a higher resolution than pre-training helps. The
  patch size P is kept, so the grid (and N) grows, and the learned position embeddings
  no longer fit: the paper interpolates them in 2-D according to their location in the
  original image. The class token's embedding is kept as it is.

The recipe (§4.1, B.1.1): SGD with momentum 0.9, cosine decay, no weight decay, gradient
clipping at global norm 1, small learning rates (CIFAR: 0.001 … 0.03).
"""
from __future__ import annotations

import math

import numpy as np

from minivit.config import ViTConfig
from minivit.errors import ConfigError


# ---------------------------------------------------------------------- interpolation
def interp_matrix(n_in: int, n_out: int, align_corners: bool = False) -> np.ndarray:
    """Weights of 1-D linear interpolation from n_in samples to n_out: (n_out, n_in).

    align_corners=False (the default of torch's ``F.interpolate`` and of timm's
    ``resample_abs_pos_embed``): samples are cell centres; output i sits at source
    coordinate (i + ½)·n_in/n_out − ½, clamped to [0, n_in − 1] at the borders.
    align_corners=True: the first and last samples coincide; i ↦ i·(n_in − 1)/(n_out − 1).
    Each row sums to 1, so a constant is reproduced exactly.
    """
    if n_in < 1 or n_out < 1:
        raise ConfigError(f"interpolation sizes must be positive, got {n_in} → {n_out}")
    i = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = i * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros(1)
    else:
        src = (i + 0.5) * n_in / n_out - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    w_hi = src - lo
    W = np.zeros((n_out, n_in))
    np.add.at(W, (np.arange(n_out), lo), 1.0 - w_hi)
    np.add.at(W, (np.arange(n_out), hi), w_hi)
    return W


def bilinear_resize(grid, new_hw, align_corners=False):
    """2-D bilinear interpolation of a (G_h, G_w, ...) array to (G_h', G_w', ...).

    Bilinear interpolation is separable: interpolate along the rows, then the columns,
    i.e. out = W_h · grid · W_wᵀ with the 1-D matrices of :func:`interp_matrix`.
    """
    g = np.asarray(grid)
    Wh = interp_matrix(g.shape[0], new_hw[0], align_corners)
    Ww = interp_matrix(g.shape[1], new_hw[1], align_corners)
    out = np.tensordot(Wh, g, axes=(1, 0))                  # (G_h', G_w, ...)
    out = np.moveaxis(np.tensordot(Ww, out, axes=(1, 1)), 0, 1)   # (G_h', G_w', ...)
    return out


def resize_images(images, size, align_corners=False):
    """Resize images (B, H, W, C) to (B, size, size, C) bilinearly (for fine-tuning at a
    higher resolution than the data's, e.g. CIFAR's 32 px at 48 px). uint8 in → uint8
    out (rounded); floats stay floats."""
    x = np.asarray(images)
    if x.ndim != 4:
        raise ConfigError(f"images must be (B, H, W, C), got shape {x.shape}")
    if x.shape[1] == size and x.shape[2] == size:
        return x
    out = bilinear_resize(np.moveaxis(x.astype(np.float64), 0, 2), (size, size),
                          align_corners)                  # (size, size, B, C)
    out = np.moveaxis(out, 2, 0)
    if x.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out.astype(x.dtype)


# ---------------------------------------------------------------------- position embeddings
def resample_pos_embed(pos, new_grid, old_grid=None, align_corners=False):
    """Resample learned 1-D position embeddings to a new patch grid (paper §3.2).

    pos: (1, 1 + G_h·G_w, D), the class token's embedding first, then the grid in
    row-major order. new_grid: (G_h', G_w'). old_grid: (G_h, G_w); None infers a square
    grid from N. Returns (1, 1 + G_h'·G_w', D): the class token's embedding kept, the grid
    part interpolated bilinearly in 2-D (align_corners=False by default, like timm's
    ``resample_abs_pos_embed``). The same grid is returned unchanged (a copy).
    """
    pos = np.asarray(pos)
    if pos.ndim != 3 or pos.shape[0] != 1:
        raise ConfigError(f"position embeddings must be (1, 1 + N, D), got shape {pos.shape}")
    N, D = pos.shape[1] - 1, pos.shape[2]
    if old_grid is None:
        g = int(round(math.sqrt(N)))
        if g * g != N:
            raise ConfigError(f"cannot infer a square grid from N={N} patch embeddings; "
                              f"pass old_grid")
        old_grid = (g, g)
    gh, gw = old_grid
    if gh * gw != N:
        raise ConfigError(f"old grid {gh}x{gw} does not hold the N={N} patch embeddings")
    new_grid = tuple(int(v) for v in new_grid)
    if tuple(old_grid) == new_grid:
        return pos.copy()
    grid = pos[0, 1:].reshape(gh, gw, D).astype(np.float64)
    new = bilinear_resize(grid, new_grid, align_corners).reshape(-1, D)
    out = np.concatenate([pos[0, :1].astype(np.float64), new], axis=0)[None]
    return out.astype(pos.dtype)


def resample_pos_embed_2d(row, col, new_grid, align_corners=False):
    """Resample 2-D position embeddings (Appendix D.4): the row table (G_h, D/2) and the
    column table (G_w, D/2) are each interpolated linearly in 1-D, to (G_h', D/2) and
    (G_w', D/2). Returns (row', col')."""
    row, col = np.asarray(row), np.asarray(col)
    Wh = interp_matrix(row.shape[0], int(new_grid[0]), align_corners)
    Ww = interp_matrix(col.shape[0], int(new_grid[1]), align_corners)
    return (Wh @ row.astype(np.float64)).astype(row.dtype), \
        (Ww @ col.astype(np.float64)).astype(col.dtype)


# ---------------------------------------------------------------------- parameters
_SAME_FIELDS = ("channels", "patch_size", "dim", "depth", "heads", "mlp_dim", "pos_embed",
                "classifier")


def adapt_params(params, old_config: ViTConfig, new_config: ViTConfig, seed=0,
                 align_corners=False, reset_head=None) -> dict[str, np.ndarray]:
    """Turn parameters trained under ``old_config`` into parameters for ``new_config``.

    params: host dict name → array (``model.state_dict()``). The backbone must be the same
    (channels, P, D, depth, heads, MLP width, kind of position embedding); what may change:

    * the grid (image size or stride): position embeddings are resampled
      (:func:`resample_pos_embed` / :func:`resample_pos_embed_2d`);
    * the head: when the number of classes or the head type changes (or reset_head=True)
      the head is replaced by a zero-initialised linear layer D → K (paper §3.2); the
      pre-logits layer is dropped when the new head type is "linear", and freshly
      initialised (LeCun normal, ``seed``) if a pre-logits head is asked for and the old
      model had none.

    Returns a new dict in ``new_config.param_shapes()`` order (float64 copies of the
    resampled/new arrays, the other arrays copied as they are).
    """
    for f in _SAME_FIELDS:
        if getattr(old_config, f) != getattr(new_config, f):
            raise ConfigError(f"cannot adapt {f}={getattr(old_config, f)!r} to "
                              f"{getattr(new_config, f)!r}: only the image size, stride, "
                              f"number of classes and head type may change")
    shapes = old_config.param_shapes()
    for k, shape in shapes.items():
        if k not in params:
            raise ConfigError(f"missing parameter {k}")
        if tuple(np.shape(params[k])) != shape:
            raise ConfigError(f"parameter {k} has shape {np.shape(params[k])}, the old "
                              f"config says {shape}")
    out = {k: np.array(v) for k, v in params.items() if k in shapes}
    if old_config.grid != new_config.grid:
        if new_config.pos_embed == "learned-1d" and new_config.classifier == "gap":
            # no class-token row: resample with a dummy one, then drop it
            D = new_config.dim
            pos = np.concatenate([np.zeros((1, 1, D), out["pos_embed"].dtype),
                                  out["pos_embed"]], axis=1)
            out["pos_embed"] = resample_pos_embed(pos, new_config.grid, old_config.grid,
                                                  align_corners)[:, 1:]
        elif new_config.pos_embed == "learned-1d":
            out["pos_embed"] = resample_pos_embed(out["pos_embed"], new_config.grid,
                                                  old_config.grid, align_corners)
        elif new_config.pos_embed == "learned-2d":
            out["pos_embed_row"], out["pos_embed_col"] = resample_pos_embed_2d(
                out["pos_embed_row"], out["pos_embed_col"], new_config.grid, align_corners)
    if reset_head is None:
        reset_head = (old_config.num_classes != new_config.num_classes
                      or old_config.head_type != new_config.head_type)
    dtype = out["head.weight"].dtype
    if reset_head:
        D, K = new_config.dim, new_config.num_classes
        out["head.weight"] = np.zeros((D, K), dtype=dtype)       # zero-init (paper §3.2)
        out["head.bias"] = np.zeros((K,), dtype=dtype)
    if new_config.head_type == "linear":
        out.pop("pre_logits.weight", None)
        out.pop("pre_logits.bias", None)
    elif "pre_logits.weight" not in out:
        from minivit.model import init_params
        fresh = init_params(new_config, seed)
        out["pre_logits.weight"] = fresh["pre_logits.weight"].astype(dtype)
        out["pre_logits.bias"] = fresh["pre_logits.bias"].astype(dtype)
    return {k: out[k] for k in new_config.param_shapes()}


# ---------------------------------------------------------------------- CLI
def configure_parser(p):
    """``minivit finetune CKPT --image-size 48 --num-classes 10 --epochs E --lr 0.01 --out DIR``."""
    p.add_argument("checkpoint", help="minivit checkpoint (.npz) to start from")
    p.add_argument("--image-size", type=int, default=None,
                   help="fine-tuning resolution (default: the checkpoint's); images are "
                        "resized bilinearly, position embeddings resampled")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classes of the new zero-initialised linear head (default: keep)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.01,
                   help="SGD learning rate (paper, CIFAR: 0.001, 0.003, 0.01, 0.03)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--warmup-epochs", type=float, default=None,
                   help="linear warm-up (default: 5%% of the epochs)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 location")
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first N training (and N test) images")
    p.add_argument("--backend", default=None, choices=("numpy", "numba", "cuda"),
                   help="default: the trainer's")
    p.add_argument("--seed", type=int, default=0)


def finetune(checkpoint, out, image_size=None, num_classes=None, epochs=1, lr=0.01,
             batch_size=128, warmup_epochs=None, data=None, data_dir=None, limit=None,
             backend=None, seed=0, **train_kwargs):
    """Fine-tune a checkpoint with the paper's recipe (§3.2, §4.1, B.1.1).

    New zero-initialised linear head (``num_classes``), position embeddings resampled to
    ``image_size`` (images resized bilinearly to it), then :func:`minivit.train.train` with
    SGD momentum 0.9, cosine decay, no weight decay, clipping at global norm 1.
    data: a dict like ``load_cifar10`` returns (uint8 images); None loads CIFAR-10 from
    ``data_dir`` (first ``limit`` images of each split when given). train_kwargs: further
    :class:`minivit.train.TrainSettings` fields. Returns what ``train`` returns.
    """
    from minivit.checkpoint import load_checkpoint
    from minivit.train import train
    # bad flags fail before the checkpoint and the data set are read (or downloaded);
    # the messages are TrainSettings.validate's, which checks them again in train()
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"lr must be > 0, got {lr}")
    if warmup_epochs is not None and not 0 <= warmup_epochs <= epochs:
        raise ConfigError(f"warmup epochs must lie in [0, epochs={epochs}], got {warmup_epochs}")
    ck = load_checkpoint(checkpoint)
    old = ck["config"]
    new = old.replace(image_size=image_size or old.image_size,
                      num_classes=num_classes or old.num_classes,
                      head_type="linear")
    params = adapt_params(ck["params"], old, new, seed=seed)
    if data is None:
        from minivit.data import load_cifar10
        data = load_cifar10(data_dir, limit_train=limit, limit_test=limit,
                            expected_counts=None if limit else (50000, 10000))
    if data["x_train"].shape[1] != new.image_size:
        data = dict(data, x_train=resize_images(data["x_train"], new.image_size),
                    x_test=resize_images(data["x_test"], new.image_size))
    if warmup_epochs is None:
        warmup_epochs = 0.05 * epochs
    if backend is not None:
        train_kwargs["backend"] = backend
    return train(new, data=data, out_dir=out, init_params=params,
                 optimizer="sgd", momentum=0.9, weight_decay=0.0, schedule="cosine",
                 clip_norm=1.0, lr=lr, epochs=epochs, batch_size=batch_size,
                 warmup_epochs=warmup_epochs, seed=seed, **train_kwargs)


def cli_run(args) -> int:
    finetune(args.checkpoint, args.out, image_size=args.image_size,
             num_classes=args.num_classes, epochs=args.epochs, lr=args.lr,
             batch_size=args.batch_size, warmup_epochs=args.warmup_epochs,
             data_dir=args.data_dir, limit=args.limit, backend=args.backend, seed=args.seed)
    return 0
