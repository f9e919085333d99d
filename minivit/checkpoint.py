"""Checkpoints: ``.npz`` files written atomically, read without pickle.

Layout of a minivit checkpoint (format 1):
    param/<name>        every model parameter (host arrays, the model's dtype)
    optim/<key>         optimizer state (``AdamW.state_dict()`` keys), when saved
    meta.json           uint8 bytes of a JSON object: format, config, dtype, step, epoch,
                        and whatever the trainer adds (seed, metrics, …)

Writing goes to a temporary file in the same directory, is flushed and fsynced, then
renamed over the target (``os.replace`` is atomic on POSIX), so a crash mid-write never
leaves a corrupt ``checkpoint.npz``: either the old file or the new one is there.
Reading uses ``np.load(..., allow_pickle=False)``: object arrays are refused.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .config import ViTConfig
from .errors import CheckpointError, ConfigError

FORMAT = 1


def atomic_write_npz(path, arrays: dict) -> Path:
    """Write ``arrays`` (name → ndarray) to ``path`` as .npz, atomically (temp file,
    fsync, rename, fsync of the directory). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:                                    # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def read_npz(path) -> dict[str, np.ndarray]:
    """Read every array of an .npz without pickle. Raises CheckpointError naming the file
    when it is missing, not a valid npz/zip, truncated, or holds object arrays."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as e:                 # object arrays need pickle: refused
        raise CheckpointError(f"{path}: refused to load ({e}); object arrays are never "
                              f"unpickled") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
    except Exception as e:                  # zlib.error, struct.error, … on corrupt bytes
        raise CheckpointError(f"{path}: corrupt .npz file ({type(e).__name__}: {e})") from None


def save_checkpoint(path, model, optimizer=None, **meta) -> Path:
    """Save a model (and optionally its optimizer) to ``path`` atomically.

    meta: extra JSON-serialisable fields (step, epoch, seed, …) stored in meta.json.
    """
    arrays = {f"param/{k}": v for k, v in model.state_dict().items()}
    if optimizer is not None:
        arrays.update({f"optim/{k}": v for k, v in optimizer.state_dict().items()})
    info = {"format": FORMAT, "config": model.config.to_dict(), "dtype": str(model.dtype)}
    info.update(meta)
    arrays["meta.json"] = np.frombuffer(json.dumps(info).encode("utf-8"), dtype=np.uint8)
    return atomic_write_npz(path, arrays)


def load_checkpoint(path) -> dict:
    """Read and validate a checkpoint.

    Returns ``{"config": ViTConfig, "params": {name: array}, "optim": {key: array},
    "meta": dict}``. Raises CheckpointError naming the key for missing or mis-shaped
    parameters, non-float arrays, a missing/invalid meta.json or a config that disagrees
    with the arrays.
    """
    arrays = read_npz(path)
    if "meta.json" not in arrays:
        raise CheckpointError(f"{path}: missing key meta.json (not a minivit checkpoint?)")
    raw = arrays.pop("meta.json")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"{path}: meta.json must be a 1-D uint8 array")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: meta.json is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or "config" not in meta:
        raise CheckpointError(f"{path}: meta.json has no config")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unsupported checkpoint format {meta.get('format')!r}")
    try:
        config = ViTConfig.from_dict(meta["config"])
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{path}: invalid config in meta.json: {e}") from None
    params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    optim = {k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")}
    unknown = [k for k in arrays if not k.startswith(("param/", "optim/"))]
    if unknown:
        raise CheckpointError(f"{path}: unexpected key(s): {', '.join(sorted(unknown))}")
    expected = config.param_shapes()
    for name, shape in expected.items():
        if name not in params:
            raise CheckpointError(f"{path}: missing key param/{name}")
        a = params[name]
        if a.shape != shape:
            raise CheckpointError(f"{path}: param/{name} has shape {a.shape}, the config "
                                  f"says {shape}")
        if a.dtype.kind != "f":
            raise CheckpointError(f"{path}: param/{name} has dtype {a.dtype}, expected float")
        if not np.isfinite(a).all():
            raise CheckpointError(f"{path}: param/{name} contains NaN or inf")
    extra = sorted(set(params) - set(expected))
    if extra:
        raise CheckpointError(f"{path}: unexpected key(s) for this config: "
                              f"{', '.join('param/' + k for k in extra)}")
    return {"config": config, "params": params, "optim": optim, "meta": meta}


def load_model(path, backend="numpy", dtype=None):
    """Build a :class:`~minivit.model.ViT` from a checkpoint. dtype: None keeps the saved
    dtype. Returns (model, meta)."""
    from .model import ViT
    ck = load_checkpoint(path)
    model = ViT(ck["config"], dtype=dtype or ck["meta"].get("dtype", "float32"),
                backend=backend, params=ck["params"])
    return model, ck["meta"]
