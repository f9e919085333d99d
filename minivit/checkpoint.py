"""Checkpoints: ``.npz`` files written atomically, read without pickle.

Layout of a minivit checkpoint (format 1):
    param/<name>        every model parameter (host arrays, the model's dtype)
    optim/<key>         optimizer state (``AdamW.state_dict()`` keys), when saved
    extra/<name>        arrays an objective trains besides the ViT (masked patch
                        prediction: its head and [mask] token), when any
    ema/<name>          the exponential moving average of every parameter, when the run
                        keeps one (:mod:`minivit.ema`)
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
import stat
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from . import models
from .errors import CheckpointError, ConfigError
from .errors import one_line as _one_line
from .settings import DataSettings, TrainSettings

FORMAT = 1


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def _remove_stale_temps(path: Path) -> None:
    """Delete temporary files that earlier writers of ``path`` left behind when they were
    killed mid-write (``kill -9``, power loss): ``.NAME.PID.XXXX.tmp`` whose PID is no
    longer running. Temp files of live processes (another writer) are left alone, so at
    most one stray temp file per killed writer exists, and only until the next write."""
    prefix = f".{path.name}."
    try:
        entries = os.listdir(path.parent)
    except OSError:
        return
    for entry in entries:
        if not (entry.startswith(prefix) and entry.endswith(".tmp")):
            continue
        pid = entry[len(prefix):].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue                        # its writer is alive: not ours to remove
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError, OSError):
            continue                        # alive (another user's) or unknowable: keep
        try:
            os.unlink(path.parent / entry)
        except OSError:
            pass


def _default_mode(path: Path) -> int:
    """The mode a plain ``open(path, "w")`` would give: the existing file's mode, else
    0o666 minus the umask (``mkstemp`` creates 0o600, which would hide checkpoints from
    the rest of a team)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        pass
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (os.umask sets it,
    briefly, for every thread: a prefetch thread creating a file then would get 0)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_npz(path, arrays: dict) -> Path:
    """Write ``arrays`` (name → ndarray) to ``path`` as .npz, atomically (temp file,
    fsync, rename, fsync of the directory). Returns the path.

    A crash or kill at any moment leaves either the old file or the new one at ``path``,
    never a partial one; temp files of killed writers are removed by the next write.
    Raises CheckpointError naming the path when the file cannot be written (disk full,
    permissions); the previous file is then left untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(path)
        mode = _default_mode(path)
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise CheckpointError(f"cannot write {path}: {e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise CheckpointError(f"cannot write {path}: {e}") from None
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
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, not an .npz file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None
    if not is_zip:
        raise CheckpointError(f"{path}: not an .npz file (no zip structure; truncated, "
                              f"corrupt or another format)")
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise CheckpointError(f"{path}: not an .npz archive")
            return {k: z[k] for k in z.files}
    except CheckpointError:
        raise
    except ValueError as e:
        if "pickle" in str(e):              # object arrays need pickle: refused
            raise CheckpointError(f"{path}: refused to load an object array (it would need "
                                  f"pickle, which could run arbitrary code); minivit files "
                                  f"hold numeric arrays only") from None
        raise CheckpointError(f"{path}: corrupt .npz file ({_one_line(e)})") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a readable .npz file "
                              f"({type(e).__name__}: {_one_line(e)})") from None
    except MemoryError:
        raise CheckpointError(f"{path}: corrupt .npz file (an array header asks for more "
                              f"memory than there is)") from None
    except Exception as e:                  # zlib.error, struct.error, … on corrupt bytes
        raise CheckpointError(f"{path}: corrupt .npz file "
                              f"({type(e).__name__}: {_one_line(e)})") from None


def save_checkpoint(path, model, optimizer=None, extra=None, ema=None, **meta) -> Path:
    """Save a model (and optionally its optimizer and weight average) to ``path``
    atomically.

    extra: host arrays an objective trains besides the model (e.g. the MPP head and
    [mask] token), stored as ``extra/<name>``: one file holds the whole run.
    ema: a :class:`minivit.ema.EMA` or None, stored as ``ema/<name>``.
    meta: extra JSON-serialisable fields (step, epoch, seed, …) stored in meta.json.
    """
    arrays = {f"param/{k}": v for k, v in model.state_dict().items()}
    if optimizer is not None:
        arrays.update({f"optim/{k}": v for k, v in optimizer.state_dict().items()})
    arrays.update({f"extra/{k}": np.asarray(v) for k, v in (extra or {}).items()})
    if ema is not None:
        arrays.update({f"ema/{k}": v for k, v in ema.state_dict().items()})
    info = {"format": FORMAT, "config": model.config.to_dict(), "dtype": str(model.dtype)}
    info.update(meta)
    # which family the config is; not "model" (a re-saved meta's **fields would collide
    # with the ``model`` argument), and set last: a stale value in ``meta`` cannot lie
    info["model_kind"] = models.model_kind(model.config)
    arrays["meta.json"] = np.frombuffer(json.dumps(info).encode("utf-8"), dtype=np.uint8)
    return atomic_write_npz(path, arrays)


# Types of the meta.json fields minivit itself writes; checked when present, so that a
# corrupt or hand-edited file fails here, naming the field, not deep inside the trainer.
_META_TYPES = {
    "dtype": str, "epoch": int, "batch": int, "step": int, "seed": int,
    "elapsed": (int, float), "history": list, "running": dict, "settings": dict,
    "objective": str, "data_settings": dict, "objective_settings": dict, "data": dict,
    "extended_from": list, "model_kind": str,
}


def _check_meta(meta: dict, path) -> None:
    for key, typ in _META_TYPES.items():
        if key not in meta:
            continue
        v = meta[key]
        if isinstance(v, bool) or not isinstance(v, typ):
            raise CheckpointError(f"{path}: meta.json field {key!r} has the wrong type "
                                  f"({type(v).__name__}: {v!r:.60})")
        if typ is int and v < 0:
            raise CheckpointError(f"{path}: meta.json field {key!r} must be >= 0, got {v}")
    if "dtype" in meta and meta["dtype"] not in ("float32", "float64"):
        raise CheckpointError(f"{path}: meta.json field 'dtype' must be float32 or float64, "
                              f"got {meta['dtype']!r:.60}")
    if "elapsed" in meta and not (meta["elapsed"] >= 0 and meta["elapsed"] < float("inf")):
        raise CheckpointError(f"{path}: meta.json field 'elapsed' must be a finite number "
                              f">= 0, got {meta['elapsed']!r}")


def load_checkpoint(path) -> dict:
    """Read and validate a checkpoint.

    Returns ``{"config": ViTConfig | ResNetConfig | HybridConfig (meta.json "model_kind"; a
    ViT when absent), "params": {name: array}, "optim": {key: array},
    "extra": {name: array}, "ema": {name: array} (empty without a weight average),
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
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: meta.json is not valid JSON ({_one_line(e)})") from None
    if not isinstance(meta, dict) or "config" not in meta:
        raise CheckpointError(f"{path}: meta.json has no config")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unsupported checkpoint format {meta.get('format')!r}")
    try:
        config = models.config_from_dict(meta["config"], meta.get("model_kind", "vit"))
    except (ConfigError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid config in meta.json: {_one_line(e)}") from None
    _check_meta(meta, path)
    params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    optim = {k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")}
    extra = {k[len("extra/"):]: v for k, v in arrays.items() if k.startswith("extra/")}
    ema = {k[len("ema/"):]: v for k, v in arrays.items() if k.startswith("ema/")}
    unknown = [k for k in arrays if not k.startswith(("param/", "optim/", "extra/", "ema/"))]
    if unknown:
        raise CheckpointError(f"{path}: unexpected key(s): {', '.join(sorted(unknown))}")
    # The config comes from the file: a hostile "depth": 10**12 must not make
    # param_shapes() enumerate (and store) 10**13 names. The blocks present bound it.
    blocks = {k.split(".")[1] for k in params if k.startswith("blocks.") and k.count(".") >= 2}
    n_blocks = sum(1 for b in blocks if b.isdigit())
    if getattr(config, "depth", 0) > n_blocks:     # a ResNet has no transformer blocks
        first = next(k for k in config.replace(depth=n_blocks + 1).param_shapes()
                     if k.startswith(f"blocks.{n_blocks}."))
        raise CheckpointError(f"{path}: missing key param/{first} (the config says "
                              f"depth={config.depth}, the file holds {n_blocks} blocks)")
    expected = models.state_shapes(config)   # parameters (+ a conv model's BN statistics)
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
    for key, a in optim.items():
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            raise CheckpointError(f"{path}: optim/{key} contains NaN or inf")
        if a.dtype.kind not in "fiub":
            raise CheckpointError(f"{path}: optim/{key} has dtype {a.dtype}, expected numbers")
    for key, a in extra.items():
        if a.dtype.kind != "f" or not np.isfinite(a).all():
            raise CheckpointError(f"{path}: extra/{key} must hold finite floats")
    if "step" in optim:
        st = optim["step"]
        if st.shape != () or st.dtype.kind not in "iu" or int(st) < 0:
            raise CheckpointError(f"{path}: optim/step must be an integer scalar >= 0, got "
                                  f"{st.dtype} {st.shape}")
    _refuse_surplus(path, "param/", params, expected)
    if ema:                                  # the weight average: the parameters' names
        expected = config.param_shapes()     # and shapes (not the BN statistics)
        for name, shape in expected.items():
            a = ema.get(name)
            if a is None:
                raise CheckpointError(f"{path}: missing key ema/{name}")
            if a.shape != shape or a.dtype.kind != "f" or not np.isfinite(a).all():
                raise CheckpointError(f"{path}: ema/{name} must be finite floats of shape "
                                      f"{shape}, got {a.dtype} {a.shape}")
        _refuse_surplus(path, "ema/", ema, expected)
    return {"config": config, "params": params, "optim": optim, "extra": extra, "ema": ema,
            "meta": meta}


def _refuse_surplus(path, prefix, arrays: dict, expected: dict) -> None:
    """CheckpointError naming the arrays under ``prefix`` the config has no place for."""
    surplus = sorted(set(arrays) - set(expected))
    if surplus:
        raise CheckpointError(f"{path}: unexpected key(s) for this config: "
                              f"{', '.join(prefix + k for k in surplus)}")


TRAINING_FIELDS = ("settings", "epoch", "batch", "step", "history", "elapsed", "running")
_RUNNING_FIELDS = ("loss_sum", "correct", "seen", "time")


def require_training_state(ck: dict, path) -> None:
    """Check that a loaded checkpoint (``load_checkpoint``'s result) can be resumed by
    :func:`minivit.train.train`: meta.json holds every training field with a sane type,
    valid training settings and optimizer state. Raises CheckpointError naming the
    field; e.g. for a bare model (``save_checkpoint`` without training state)."""
    meta = ck["meta"]
    missing = [k for k in TRAINING_FIELDS if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint (meta.json lacks "
                              f"{', '.join(missing)}); --resume continues a run of "
                              f"minivit train, finetune or pretrain — to start from these "
                              f"weights, fine-tune")
    running = meta["running"]
    bad = [k for k in _RUNNING_FIELDS
           if isinstance(running.get(k), bool) or not isinstance(running.get(k), (int, float))]
    if bad:
        raise CheckpointError(f"{path}: meta.json field 'running' lacks numeric {', '.join(bad)}")
    if not all(isinstance(row, dict) for row in meta["history"]):
        raise CheckpointError(f"{path}: meta.json field 'history' must be a list of objects")
    try:
        settings = TrainSettings.from_dict(meta["settings"])
        settings.validate()
        DataSettings.from_dict(meta.get("data_settings", {})).validate()
    except (ConfigError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid training settings in meta.json: "
                              f"{_one_line(e)}") from None
    if meta["epoch"] > settings.epochs:
        raise CheckpointError(f"{path}: meta.json epoch {meta['epoch']} is past the run's "
                              f"{settings.epochs} epochs")
    if "step" not in ck["optim"]:
        raise CheckpointError(f"{path}: missing key optim/step (no optimizer state to resume)")


def load_model(path, backend="numpy", dtype=None, ema=False):
    """Build the checkpoint's model (a :class:`~minivit.model.ViT`, or the ResNet /
    hybrid ViT its meta.json "model_kind" names) from a checkpoint. dtype: None keeps the saved
    dtype. ema: load the moving average of the weights instead of the raw weights
    (CheckpointError when the file holds none). Returns (model, meta)."""
    ck = load_checkpoint(path)
    if ema and not ck["ema"]:
        raise CheckpointError(f"{path}: holds no weight average (train with --ema-decay)")
    params = ck["params"]
    if ema:                                  # the average's weights, the BN statistics kept
        params = {**params, **ck["ema"]}
    model = models.build_model(ck["config"], dtype=dtype or ck["meta"].get("dtype", "float32"),
                               backend=backend, params=params)
    return model, ck["meta"]
