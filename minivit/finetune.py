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

import numpy as np

from minivit.config import ViTConfig
from minivit.errors import ConfigError
from minivit.settings import TrainSettings
# Re-exported: the resampling lives with the embeddings and images it resamples.
from minivit.ops.embedding import resample_pos_embed, resample_pos_embed_2d  # noqa: F401
from minivit.ops.resample import bilinear_resize, interp_matrix, resize_images  # noqa: F401


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


# ---------------------------------------------------------------------- recipe
# The paper's fine-tuning recipe (§4.1, B.1.1) as TrainSettings defaults; the warm-up
# defaults to 5% of the run.
RECIPE = dict(epochs=1, optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=0.0,
              schedule="cosine", clip_norm=1.0)


def finetune(checkpoint, out, image_size=None, num_classes=None, *, data=None,
             data_dir=None, limit=None, settings=None, resume=False, overwrite=False,
             **overrides):
    """Fine-tune a checkpoint with the paper's recipe (§3.2, §4.1, B.1.1).

    New zero-initialised linear head (``num_classes``), position embeddings resampled to
    ``image_size`` (images resized bilinearly to it), patch dropout off (``patch_keep``
    1; dropout and stochastic depth are kept), then :func:`minivit.train.train` with
    :data:`RECIPE`: SGD momentum 0.9, cosine decay, no weight decay, clipping at global
    norm 1. data: a dict like ``load_cifar10`` returns (uint8 images); None loads CIFAR-10
    from ``data_dir`` (first ``limit`` images of each split when given). settings /
    overrides: :class:`~minivit.settings.TrainSettings` fields on top of the recipe, and
    any other keyword of ``train`` (progress, log, limit_train, …). resume: continue the
    fine-tuning run in ``out`` (``checkpoint`` is then not read). Returns what ``train``
    returns.
    """
    from minivit.checkpoint import load_checkpoint
    from minivit.hub import require_vit, resolve_checkpoint
    from minivit.train import recipe_settings, train
    if limit is not None:
        overrides.setdefault("limit_train", limit)
        overrides.setdefault("limit_test", limit)
    names = set(TrainSettings.__dataclass_fields__)
    typed = {k: overrides.pop(k) for k in list(overrides) if k in names}
    if resume:                              # the run's own settings; typed ones must agree
        return train(None, data=data, data_dir=data_dir, out_dir=out, resume=True,
                     settings=settings, **typed, **overrides)
    # Validated once, here, before the checkpoint and the data set are read (or downloaded).
    s = recipe_settings(settings, typed, RECIPE).validate()
    checkpoint = resolve_checkpoint(checkpoint)      # "default", a run folder or a file
    ck = load_checkpoint(checkpoint)
    require_vit(ck["meta"], checkpoint, "finetune")
    old = ck["config"]
    new = old.replace(image_size=old.image_size if image_size is None else image_size,
                      num_classes=old.num_classes if num_classes is None else num_classes,
                      head_type="linear",
                      # Patch dropout is a pre-training saving (Liu et al. fine-tune on
                      # every token); at a new resolution round(f·N) would also change.
                      patch_keep=1.0)
    params = adapt_params(ck["params"], old, new, seed=s.seed)
    overrides.setdefault("log", print)
    overrides["log"](f"fine-tuning {checkpoint}: {old.image_size}px → {new.image_size}px, "
                     f"a new zero-initialised head for {new.num_classes} classes"
                     + (f", every patch token (pre-trained with patch_keep={old.patch_keep})"
                        if old.patch_keep < 1 else ""))
    return train(new, data=data, data_dir=data_dir, out_dir=out, init_params=params,
                 settings=s, overwrite=overwrite, **overrides)


# ---------------------------------------------------------------------- CLI
def configure_parser(p):
    """``minivit finetune CKPT --image-size 48 --num-classes 10 --epochs E --lr 0.01 --out DIR``."""
    from minivit.flags import add_flags
    from minivit.train import add_run_flags
    p.add_argument("checkpoint", help="checkpoint .npz to start from, a run folder (its "
                   "checkpoint.npz), or 'default' for the bundled CIFAR-10 model")
    add_flags(p, ViTConfig, only=("image_size", "num_classes"), title="the new model", help={
        "image_size": "fine-tuning resolution; images are resized bilinearly, position "
                      "embeddings resampled (default: the checkpoint's)",
        "num_classes": "classes of the new zero-initialised linear head (default: the "
                       "checkpoint's)"})
    add_run_flags(p, defaults=dict(RECIPE, warmup_epochs="5% of the run"), model=False)


def cli_run(args) -> int:
    from minivit.flags import given
    from minivit.train import cli_main, run_args
    m = given(args, ViTConfig)
    kw = run_args(args, model=False)
    kw["out"] = kw.pop("out_dir")
    return cli_main(finetune, args, checkpoint=args.checkpoint, image_size=m.get("image_size"),
                    num_classes=m.get("num_classes"), **kw)
