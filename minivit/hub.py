"""Finding and loading a checkpoint from what a user types: the name of a model bundled
with the package (``default``), a run folder of ``minivit train`` (its ``checkpoint.npz``)
or a file path. One line from Python::

    model = minivit.load("default")          # the bundled CIFAR-10 model
    model = minivit.load("runs/demo")        # a run folder
    model.meta["classes"]                     # what it was trained to tell apart

Every command that takes a checkpoint (eval, predict, inspect, finetune) resolves it with
:func:`resolve_checkpoint`, so the three spellings work everywhere.
"""
from __future__ import annotations

from pathlib import Path

from .errors import CheckpointError

WEIGHTS_DIR = Path(__file__).parent / "weights"
# names accepted in place of a path -> file in WEIGHTS_DIR
ALIASES = {"default": "cifar10-vit", "hybrid": "hybrid-pool", "resnet": "resnet-20"}
RUN_CHECKPOINT = "checkpoint.npz"           # what minivit train/pretrain/finetune write
MPP = "masked-patch-prediction"


def bundled_models() -> list[str]:
    """Names of the checkpoints shipped inside the package (e.g. ``["cifar10-vit", "hybrid-pool"]``)."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.npz"))


def bundled_checkpoint(name: str = "default") -> Path:
    """Path of a bundled model by name (``default`` = ``cifar10-vit``, the best plain ViT). Raises
    CheckpointError naming the shipped ones when there is no such model."""
    stem = ALIASES.get(name, name)
    path = WEIGHTS_DIR / f"{stem}.npz"
    if not path.is_file():
        have = ", ".join(["default"] + bundled_models()) if bundled_models() else "none"
        raise CheckpointError(f"no bundled model {name!r} (bundled: {have})")
    return path


def is_bundled(path) -> bool:
    """True when ``path`` is one of the package's own checkpoints."""
    try:
        return Path(path).resolve().parent == WEIGHTS_DIR.resolve()
    except OSError:
        return False


def resolve_checkpoint(spec=None) -> Path:
    """The checkpoint file a user means by ``spec``:

    * None or ``"default"``: the bundled CIFAR-10 model; the name of another bundled model
      (``"cifar10-vit"``, ``"hybrid"``, ``"resnet"``) when no file or folder of that name
      exists here;
    * a folder: its ``checkpoint.npz`` (a run folder of ``minivit train``);
    * anything else: the path itself.

    Raises CheckpointError, one line, for a missing path (saying what is accepted) and a
    folder without a checkpoint.
    """
    if spec is None:
        return bundled_checkpoint("default")
    text = str(spec)
    path = Path(text).expanduser()
    # "default" always means the bundled model; another bundled name ("hybrid",
    # "cifar10-vit") only when no file or folder of that name is here, so a run folder
    # called hybrid/ stays the user's
    if text == "default" or (not path.exists() and (text in ALIASES or text in bundled_models())):
        return bundled_checkpoint(text)
    if path.is_dir():
        inner = path / RUN_CHECKPOINT
        if inner.is_file():
            return inner
        raise CheckpointError(f"checkpoint {path} is a directory without a {RUN_CHECKPOINT} "
                              f"(give a run folder of minivit train, a .npz file, or "
                              f"'default' for the bundled model)")
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path} (give a .npz file, a run folder "
                              f"holding {RUN_CHECKPOINT}, or 'default' for the bundled model)")
    return path


def checkpoint_kind(meta: dict) -> str:
    """What a checkpoint's head was trained for: ``"masked-patch-prediction"`` for the
    self-supervised weights of ``minivit pretrain`` (the classification head is untrained
    there), else ``"classifier"``."""
    # every run of the one training loop records its objective; "pretrain" is the field
    # the masked-patch checkpoints of earlier versions wrote
    if MPP in (meta.get("objective"), meta.get("pretrain")):
        return MPP
    return "classifier"


def require_classifier(meta: dict, path) -> None:
    """Refuse a checkpoint whose class scores mean nothing (a masked-patch-prediction one),
    naming what it is and what to do instead."""
    if checkpoint_kind(meta) == MPP:
        raise CheckpointError(
            f"{path} is a masked-patch-prediction checkpoint (self-supervised, from minivit "
            f"pretrain): its class head was never trained, so its predictions would be "
            f"chance; fine-tune it first (minivit finetune {path} --out DIR)")


def require_vit(meta: dict, path, command: str) -> None:
    """Refuse a ResNet / hybrid ViT checkpoint (meta.json "model_kind") in a ``command`` that
    works on a plain ViT's patches and parameters (finetune, inspect), in one line."""
    kind = meta.get("model_kind", "vit")
    if kind != "vit":
        raise CheckpointError(f"{path} holds a {kind} model; minivit {command} works on "
                              f"ViT checkpoints only (eval and predict take any model)")


def class_names(meta: dict, num_classes: int, path) -> list[str]:
    """The class names a checkpoint was trained with: ``meta["classes"]`` when saved, else
    CIFAR-10's for a 10-class model, else ``class0 … class{C-1}``. Raises CheckpointError
    when the saved list does not name exactly ``num_classes`` classes."""
    from .data.cifar10 import CLASSES
    classes = meta.get("classes")
    if classes is None:
        return list(CLASSES) if num_classes == 10 else [f"class{i}" for i in range(num_classes)]
    if (not isinstance(classes, (list, tuple)) or len(classes) != num_classes
            or not all(isinstance(c, str) for c in classes)):
        raise CheckpointError(f"{path}: meta.json 'classes' must list {num_classes} class names")
    return list(classes)


def load(spec="default", backend="numpy", dtype=None):
    """Load a checkpoint in one line: ``minivit.load("default")``, a run folder or a path.

    Returns a :class:`~minivit.model.ViT` ready for ``predict_proba`` (images
    (B, H, W, C) normalised), with ``model.meta`` (the checkpoint's meta.json: classes,
    training settings, …) and ``model.checkpoint`` (the file's path). backend: numpy,
    numba or cuda; dtype: None keeps the saved one.
    """
    from .checkpoint import load_model
    path = resolve_checkpoint(spec)
    model, meta = load_model(path, backend=backend, dtype=dtype)
    model.meta = meta
    model.checkpoint = path
    return model
