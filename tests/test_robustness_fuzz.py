"""Property-based fuzzing of every reader of untrusted bytes.

Each reader, fed random bytes, random truncations or random byte flips of a valid file,
either returns valid data or raises the library's own error (a ``MinivitError``
subclass) — never another exception type, never a hang. Every test is bounded
(``max_examples``, ``deadline``) so the file runs in well under a minute.
"""
import io
import os
import tarfile
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from minivit import ViT, ViTConfig  # noqa: E402
from minivit.checkpoint import load_checkpoint, read_npz, save_checkpoint  # noqa: E402
from minivit.data.cifar10 import (  # noqa: E402
    CLASSES, DIR_NAME, META_FILE, RECORD_BYTES, TEST_FILE, TRAIN_FILES, extract_archive,
    load_cifar10, read_batch,
)
from minivit.errors import DataError, MinivitError  # noqa: E402
from minivit.predict import load_image  # noqa: E402

# MINIVIT_FUZZ_EXAMPLES=5000 runs a long, randomised campaign; by default a short,
# deterministic one (the same examples every run, so CI never flakes).
_LONG = int(os.environ.get("MINIVIT_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=_LONG or 120, deadline=2000 if not _LONG else None,
                derandomize=not _LONG,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
N = 3                                    # records per batch file of the small archive


def _tmpdir():
    # hypothesis runs many examples per test: a fresh directory each (function-scoped
    # tmp_path fixtures are not reset between examples)
    return Path(tempfile.mkdtemp(prefix="minivit-fuzz-"))


def _rm(d: Path):
    for p in sorted(d.rglob("*"), reverse=True):
        try:
            p.chmod(0o700) if p.is_dir() else None
            p.rmdir() if p.is_dir() else p.unlink()
        except OSError:
            pass
    try:
        d.rmdir()
    except OSError:
        pass


def _batch_bytes(n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    pixels = rng.integers(0, 256, (n, RECORD_BYTES - 1), dtype=np.uint8)
    return np.concatenate([labels[:, None], pixels], axis=1).tobytes()


def _archive_bytes():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo(DIR_NAME)
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tf.addfile(info)
        files = {name: _batch_bytes(N, i) for i, name in enumerate(TRAIN_FILES + (TEST_FILE,))}
        files[META_FILE] = "\n".join(CLASSES).encode()
        for name, data in files.items():
            info = tarfile.TarInfo(f"{DIR_NAME}/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


VALID_BATCH = _batch_bytes(4, 99)
VALID_ARCHIVE = _archive_bytes()
CFG = ViTConfig(image_size=8, patch_size=4, dim=8, depth=1, heads=2, mlp_dim=8, num_classes=3)


def _checkpoint_bytes():
    d = _tmpdir()
    try:
        from minivit.optim import AdamW
        m = ViT(CFG, seed=0)
        save_checkpoint(d / "c.npz", m, AdamW(m, 1e-3), epoch=1, batch=0, step=3)
        return (d / "c.npz").read_bytes()
    finally:
        _rm(d)


VALID_CKPT = _checkpoint_bytes()


def _flip(data: bytes, positions, values) -> bytes:
    b = bytearray(data)
    for p, v in zip(positions, values):
        b[p % len(b)] ^= v or 1
    return bytes(b)


flips = st.tuples(st.lists(st.integers(0, 10 ** 9), min_size=1, max_size=8),
                  st.lists(st.integers(0, 255), min_size=8, max_size=8))


# ---------------------------------------------------------------------- read_batch
def _check_batch(data: bytes):
    d = _tmpdir()
    try:
        (d / "b.bin").write_bytes(data)
        try:
            x, y = read_batch(d / "b.bin")
        except DataError:
            return
        assert len(data) % RECORD_BYTES == 0 and len(data) > 0
        assert x.shape == (len(data) // RECORD_BYTES, 32, 32, 3) and x.dtype == np.uint8
        assert y.max() <= 9
    finally:
        _rm(d)


@FUZZ
@given(st.binary(max_size=4 * RECORD_BYTES))
def test_fuzz_read_batch_random_bytes(data):
    _check_batch(data)


@FUZZ
@given(st.binary(min_size=RECORD_BYTES, max_size=RECORD_BYTES).map(lambda b: b * 2))
def test_fuzz_read_batch_random_records(data):
    # sizes right, labels random: label bytes 10..255 must be refused by name
    _check_batch(data)


@FUZZ
@given(st.integers(0, len(VALID_BATCH)))
def test_fuzz_read_batch_truncated(n):
    _check_batch(VALID_BATCH[:n])


# ---------------------------------------------------------------------- archives
def _check_archive(data: bytes):
    d = _tmpdir()
    try:
        arc = d / "cifar-10-binary.tar.gz"
        arc.write_bytes(data)
        try:
            out = extract_archive(arc, d / "x")
        except DataError:
            # nothing half-extracted is left behind
            assert not (d / "x" / DIR_NAME).exists()
            assert not [p for p in (d / "x").iterdir()] if (d / "x").exists() else True
        else:
            assert sorted(p.name for p in out.iterdir()) == sorted(TRAIN_FILES + (TEST_FILE, META_FILE))
        # the loader (which reads in memory when it cannot write) behaves the same
        ro = d / "ro"
        ro.mkdir()
        (ro / arc.name).write_bytes(data)
        ro.chmod(0o555)
        try:
            r = load_cifar10(ro, download=False, expected_counts=None)
        except DataError:
            pass
        else:
            assert r["x_train"].dtype == np.uint8 and r["x_train"].shape[1:] == (32, 32, 3)
            assert r["y_train"].max() <= 9
        finally:
            ro.chmod(0o755)
    finally:
        _rm(d)


@FUZZ
@given(st.binary(max_size=2048))
def test_fuzz_archive_random_bytes(data):
    _check_archive(data)


@FUZZ
@given(st.binary(max_size=600).map(lambda b: b"\x1f\x8b\x08\x00" + b))
def test_fuzz_archive_random_gzip_like(data):
    _check_archive(data)


@FUZZ
@given(st.integers(0, len(VALID_ARCHIVE)))
def test_fuzz_archive_truncated(n):
    _check_archive(VALID_ARCHIVE[:n])


@FUZZ
@given(flips)
def test_fuzz_archive_byte_flips(f):
    _check_archive(_flip(VALID_ARCHIVE, *f))


def test_fuzz_archive_uncompressed_tar_flips():
    """The same for a plain (uncompressed) tar, where flips hit headers directly."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(VALID_ARCHIVE), mode="r:gz") as src, \
            tarfile.open(fileobj=raw, mode="w") as dst:
        for m in src:
            dst.addfile(m, src.extractfile(m) if m.isreg() else None)
    data = raw.getvalue()
    rng = np.random.default_rng(0)
    for _ in range(40):
        pos = rng.integers(0, 3 * 512, size=rng.integers(1, 4))    # headers of 1st members
        _check_archive(_flip(data, pos.tolist(), rng.integers(1, 256, 8).tolist()))


# ---------------------------------------------------------------------- checkpoints
def _check_ckpt(data: bytes):
    d = _tmpdir()
    try:
        (d / "c.npz").write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ck = load_checkpoint(d / "c.npz")
            except MinivitError:
                return
            for k, shape in ck["config"].param_shapes().items():
                assert ck["params"][k].shape == shape
                assert np.isfinite(ck["params"][k]).all()
            # what loads, builds a model
            ViT(ck["config"], params=ck["params"], dtype=ck["meta"].get("dtype", "float32"))
    finally:
        _rm(d)


@FUZZ
@given(st.binary(max_size=2048))
def test_fuzz_checkpoint_random_bytes(data):
    _check_ckpt(data)


@FUZZ
@given(st.binary(max_size=512).map(lambda b: b"PK\x03\x04" + b))
def test_fuzz_checkpoint_random_zip_like(data):
    _check_ckpt(data)


@FUZZ
@given(st.integers(0, len(VALID_CKPT)))
def test_fuzz_checkpoint_truncated(n):
    _check_ckpt(VALID_CKPT[:n])


@settings(FUZZ, max_examples=_LONG or 300)
@given(flips)
def test_fuzz_checkpoint_byte_flips(f):
    _check_ckpt(_flip(VALID_CKPT, *f))


def test_fuzz_checkpoint_header_flips_exhaustive():
    """Every single byte of every local zip header and .npy header, flipped: the
    places where one bit changes a name, a size, a dtype or a shape."""
    import zipfile
    with zipfile.ZipFile(io.BytesIO(VALID_CKPT)) as z:
        offsets = [(i.header_offset, 30 + len(i.filename) + 128) for i in z.infolist()]
    positions = sorted({o + k for o, n in offsets[:6] for k in range(n)})
    for p in positions:
        _check_ckpt(_flip(VALID_CKPT, [p], [0x55]))


def test_fuzz_read_npz_never_unpickles(tmp_path):
    """read_npz refuses object arrays whatever their place in the file."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    arr = np.empty(1, dtype=object)
    arr[0] = Evil()
    np.savez(tmp_path / "evil.npz", a=np.zeros(3), b=arr)
    with pytest.raises(MinivitError, match="object array"):
        read_npz(tmp_path / "evil.npz")
    assert not marker.exists()


# ---------------------------------------------------------------------- images
def _png_bytes():
    from PIL import Image
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


VALID_PNG = _png_bytes()


def _check_image(data: bytes, suffix):
    d = _tmpdir()
    try:
        p = d / f"img{suffix}"
        p.write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                a = load_image(p, 8)
            except DataError:
                return
        assert a.shape == (8, 8, 3) and a.dtype == np.uint8
    finally:
        _rm(d)


@FUZZ
@given(st.integers(0, len(VALID_PNG)), st.sampled_from([".png", ".jpg"]))
def test_fuzz_image_truncated(n, suffix):
    _check_image(VALID_PNG[:n], suffix)


@FUZZ
@given(flips)
def test_fuzz_image_byte_flips(f):
    _check_image(_flip(VALID_PNG, *f), ".png")


@FUZZ
@given(st.binary(max_size=512), st.sampled_from([".png", ".npy", ".bmp"]))
def test_fuzz_image_random_bytes(data, suffix):
    _check_image(data, suffix)


@FUZZ
@given(st.binary(max_size=256).map(lambda b: b"\x93NUMPY\x01\x00" + b))
def test_fuzz_npy_image_random_header(data):
    _check_image(data, ".npy")


# A corrupt file is caught by the zip CRC; a *hand-edited* or hostile one has valid CRCs
# and arbitrary meta.json values. Replace one field (or add one) with any JSON value.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10 ** 20, 10 ** 20)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=8)
_META_KEYS = ["format", "config", "dtype", "epoch", "batch", "step", "seed", "elapsed",
              "history", "running", "settings", "classes"]
_CFG_KEYS = list(CFG.to_dict())


def _rewrite_meta(edit):
    import json
    import zipfile
    arrays = {}
    with zipfile.ZipFile(io.BytesIO(VALID_CKPT)) as z, warnings.catch_warnings():
        for name in z.namelist():
            arrays[name[:-4]] = np.load(io.BytesIO(z.read(name)), allow_pickle=False)
    meta = json.loads(arrays["meta.json"].tobytes())
    edit(meta)
    arrays["meta.json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _check_model_load(data: bytes):
    from minivit.checkpoint import load_model
    d = _tmpdir()
    try:
        (d / "c.npz").write_bytes(data)
        try:
            model, meta = load_model(d / "c.npz")
        except MinivitError:
            return
        assert model.config.param_shapes() == CFG.param_shapes()
    finally:
        _rm(d)


@FUZZ
@given(st.sampled_from(_META_KEYS), json_values)
def test_fuzz_checkpoint_meta_fields(key, value):
    _check_model_load(_rewrite_meta(lambda m: m.__setitem__(key, value)))


@FUZZ
@given(st.sampled_from(_CFG_KEYS), json_values)
def test_fuzz_checkpoint_config_fields(key, value):
    _check_model_load(_rewrite_meta(lambda m: m["config"].__setitem__(key, value)))
