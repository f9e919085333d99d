"""Hostile and corrupt files, bad values: refused at the boundary with a message that
names the key, member or file at fault.

tests/test_data_cifar10.py already refuses ``..``, absolute paths, symlinks, hardlinks,
fifos, character devices and unexpected names; here: block devices, directory symlinks,
pax-header path overrides, oversized members, and a property test over random member
lists. Then .npz files (object arrays, for checkpoints and the official loader),
checkpoint validation, NaN/inf at every entry point, and image files for predict.
"""
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minivit import ViT, ViTConfig
from minivit.checkpoint import load_checkpoint, load_model, read_npz, save_checkpoint
from minivit.data.cifar10 import (
    ARCHIVE_NAME, CLASSES, DIR_NAME, META_FILE, RECORD_BYTES, TEST_FILE, TRAIN_FILES,
    extract_archive, load_cifar10,
)
from minivit.errors import CheckpointError, ConfigError, DataError, MinivitError

CFG = ViTConfig(image_size=8, patch_size=4, dim=8, depth=1, heads=2, mlp_dim=8, num_classes=3)


def _files():
    rng = np.random.default_rng(0)
    files = {}
    for name in TRAIN_FILES + (TEST_FILE,):
        labels = rng.integers(0, 10, (2, 1), dtype=np.uint8)
        pixels = rng.integers(0, 256, (2, RECORD_BYTES - 1), dtype=np.uint8)
        files[name] = np.concatenate([labels, pixels], axis=1).tobytes()
    files[META_FILE] = "\n".join(CLASSES).encode()
    return files


FILES = _files()


def _tar(path, members, fmt=tarfile.GNU_FORMAT):
    """members: list of (TarInfo, bytes or None); the valid files come first."""
    with tarfile.open(path, "w:gz", format=fmt) as tf:
        for name, data in FILES.items():
            info = tarfile.TarInfo(f"{DIR_NAME}/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _member(name, kind=tarfile.REGTYPE, size=0, linkname="", pax=None):
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, linkname
    if pax:
        info.pax_headers = pax
    return info


def _listing(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*"))


# ---------------------------------------------------------------------- archives
@pytest.mark.parametrize("case, info, data, why", [
    ("block_device", _member(f"{DIR_NAME}/readme.html", tarfile.BLKTYPE), None,
     "device or fifo"),
    ("fifo_new_name", _member(f"{DIR_NAME}/data_batch_7.bin", tarfile.FIFOTYPE), None,
     "device or fifo"),
    ("dir_symlink", _member(DIR_NAME, tarfile.SYMTYPE, linkname="/tmp"), None, "link"),
    ("hardlink_outside", _member(f"{DIR_NAME}/readme.html", tarfile.LNKTYPE,
                                 linkname="/etc/passwd"), None, "link"),
    ("dotdot_dir", _member(f"{DIR_NAME}/../../up", tarfile.DIRTYPE), None, "'..'"),
    ("pax_path_override", _member(f"{DIR_NAME}/readme.html", size=1,
                                  pax={"path": "../../minivit-pax-evil"}), b"x", "'..'"),
    ("pax_absolute", _member(f"{DIR_NAME}/readme.html", size=1,
                             pax={"path": "/tmp/minivit-pax-evil"}), b"x", "absolute"),
    ("backslash_abs", _member("\\tmp\\evil.bin", size=1), b"x", "absolute"),
    ("drive_letter", _member("C:/evil.bin", size=1), b"x", "absolute"),
    ("dot_segment", _member(f"./{DIR_NAME}/readme.html", size=1), b"x", "not an expected"),
    ("oversized_member", _member(f"{DIR_NAME}/readme.html", size=10 ** 9), None,
     "implausibly large"),
])
def test_more_hostile_members_refused(tmp_path, case, info, data, why):
    fmt = tarfile.PAX_FORMAT if info.pax_headers else tarfile.GNU_FORMAT
    arc = _tar(tmp_path / ARCHIVE_NAME, [(info, data)], fmt)
    with pytest.raises(DataError, match=why):
        extract_archive(arc, tmp_path)
    assert _listing(tmp_path) == [ARCHIVE_NAME]
    tmp_path.chmod(0o555)                              # the in-memory path refuses it too
    try:
        with pytest.raises(DataError, match=why):
            load_cifar10(tmp_path, download=False, expected_counts=None)
    finally:
        tmp_path.chmod(0o755)
    assert not Path("/tmp/minivit-pax-evil").exists()


_names = st.sampled_from([
    DIR_NAME, f"{DIR_NAME}/readme.html", f"{DIR_NAME}/data_batch_1.bin", f"{DIR_NAME}/x",
    f"{DIR_NAME}/../x", "../x", "/x", "x", f"{DIR_NAME}/sub/readme.html", "C:/x",
    f"{DIR_NAME}/./readme.html", f"{DIR_NAME}//readme.html", ""])
_types = st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
                          tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE,
                          b"7", b"x"])


@settings(max_examples=30, deadline=3000, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_names, _types, _names), min_size=1, max_size=3))
def test_random_member_lists_never_write_outside(members):
    """Whatever extra members an archive holds, extraction either produces exactly the
    expected files inside the target or refuses, writing nothing anywhere."""
    import shutil
    import tempfile
    root = Path(tempfile.mkdtemp(prefix="minivit-arc-"))
    try:
        extra = []
        for name, kind, link in members:
            data = b"x" if kind in (tarfile.REGTYPE, tarfile.CONTTYPE) else None
            extra.append((_member(name, kind, len(data or b""), link), data))
        arc = _tar(root / ARCHIVE_NAME, extra)
        target = root / "a" / "b"
        try:
            out = extract_archive(arc, target)
        except DataError:
            assert _listing(root) in ([ARCHIVE_NAME], sorted([ARCHIVE_NAME, "a", "a/b"]))
        else:
            names = {p.name for p in out.iterdir()}
            assert set(FILES) <= names <= set(FILES) | {"readme.html"}
            assert all(p.is_file() and not p.is_symlink() for p in out.iterdir())
            assert _listing(root) == sorted([ARCHIVE_NAME, "a", "a/b", f"a/b/{DIR_NAME}"]
                                            + [f"a/b/{DIR_NAME}/{n}" for n in names])
        assert not Path("/x").exists()
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------- .npz files
def _evil_object_array(marker):
    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    a = np.empty(2, dtype=object)
    a[0], a[1] = Evil(), "x"
    return a


def test_checkpoint_with_object_array_refused_never_unpickled(tmp_path):
    save_checkpoint(tmp_path / "ck.npz", ViT(CFG))
    arrays = read_npz(tmp_path / "ck.npz")
    marker = tmp_path / "pwned"
    arrays["param/head.bias"] = _evil_object_array(marker)
    np.savez(tmp_path / "evil.npz", **arrays)
    for load in (load_checkpoint, load_model):
        with pytest.raises(CheckpointError, match="object array"):
            load(tmp_path / "evil.npz")
    assert not marker.exists()


def test_official_loader_refuses_object_arrays(tmp_path):
    official = pytest.importorskip("minivit.official")
    arrays = official.params_to_official(ViT(CFG).state_dict(), CFG)
    marker = tmp_path / "pwned"
    arrays["head/kernel"] = _evil_object_array(marker)
    np.savez(tmp_path / "official.npz", **arrays)
    with pytest.raises(CheckpointError, match="object array"):
        official.load_official(tmp_path / "official.npz")
    assert not marker.exists()


@pytest.mark.parametrize("content, why", [
    (b"", "not an .npz"),
    (b"root:x:0:0:root:/root:/bin/bash\n", "not an .npz"),
    (b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }" + b" " * 53
     + b"\n" + bytes(8), "not an .npz"),
    (b"\x80\x04\x95" + bytes(20), "not an .npz"),           # a pickle stream
])
def test_non_npz_files_refused_by_name(tmp_path, content, why):
    (tmp_path / "x.npz").write_bytes(content)
    with pytest.raises(CheckpointError, match=why):
        load_checkpoint(tmp_path / "x.npz")


def test_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)


# ---------------------------------------------------------------------- checkpoint contents
def _edit(tmp_path, change_arrays=None, change_meta=None):
    save_checkpoint(tmp_path / "ck.npz", ViT(CFG), epoch=1)
    arrays = read_npz(tmp_path / "ck.npz")
    meta = json.loads(arrays["meta.json"].tobytes())
    if change_arrays:
        change_arrays(arrays)
    if isinstance(change_meta, (str, bytes)):            # raw meta.json text
        raw = change_meta.encode() if isinstance(change_meta, str) else change_meta
        arrays["meta.json"] = np.frombuffer(raw, np.uint8)
    elif "meta.json" in arrays:
        if change_meta:
            change_meta(meta)
        arrays["meta.json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / "bad.npz", **arrays)
    return tmp_path / "bad.npz"


def _pop(key):
    return lambda a: a.pop(key)


def _set(key, value):
    return lambda a: a.__setitem__(key, value)


@pytest.mark.parametrize("arrays, meta, needle", [
    (_pop("param/blocks.0.attn.qkv.weight"), None, "missing key param/blocks.0.attn.qkv.weight"),
    (_set("param/head.weight", np.zeros((8, 4), np.float32)), None,
     r"param/head.weight has shape \(8, 4\), the config says \(8, 3\)"),
    (_set("param/head.bias", np.zeros(3, np.int32)), None, "param/head.bias has dtype int32"),
    (_set("param/pos_embed", np.full((1, 5, 8), np.nan, np.float32)), None,
     "param/pos_embed contains NaN or inf"),
    (_set("param/cls_token", np.full((1, 1, 8), np.inf, np.float32)), None,
     "param/cls_token contains NaN or inf"),
    (_set("param/blocks.7.norm1.weight", np.ones(8, np.float32)), None,
     "unexpected key.*param/blocks.7.norm1.weight"),
    (_set("weights/x", np.ones(2)), None, "unexpected key.*weights/x"),
    (_pop("meta.json"), None, "missing key meta.json"),
    (None, "{not json", "meta.json is not valid JSON"),
    (None, "[1, 2]", "meta.json has no config"),
    (None, b"\xff\xfe{}", "meta.json is not valid JSON"),
    (_set("optim/step", np.zeros(3, np.int64)), None, "optim/step must be an integer scalar"),
    (_set("optim/m/head.bias", np.full(3, np.nan)), None, "optim/m/head.bias contains NaN"),
    # the config disagrees with the arrays: the first key it expects and cannot find
    (None, lambda m: m["config"].update(depth=2), "missing key param/blocks.1.norm1.weight"),
    (None, lambda m: m["config"].update(depth=10 ** 12),          # must not enumerate
     r"depth.*1000000000000"),
    (None, lambda m: m["config"].update(dim=16), r"param/patch_embed.weight has shape"),
    (None, lambda m: m["config"].update(num_classes=5), "param/head.weight has shape"),
    (None, lambda m: m["config"].update(wibble=1), "unknown config field.*wibble"),
    (None, lambda m: m["config"].update(heads=3), "not divisible by heads=3"),
    (None, lambda m: m.pop("config"), "meta.json has no config"),
    (None, lambda m: m.update(format=99), "unsupported checkpoint format 99"),
    (None, lambda m: m.update(dtype="float3x"), "field 'dtype' must be float32 or float64"),
    (None, lambda m: m.update(epoch="one"), "field 'epoch' has the wrong type"),
    (None, lambda m: m.update(step=-4), "field 'step' must be >= 0"),
    (None, lambda m: m.update(elapsed=float("nan")), "field 'elapsed' must be a finite"),
])
def test_bad_checkpoint_names_the_key(tmp_path, arrays, meta, needle):
    bad = _edit(tmp_path, arrays, meta)
    with pytest.raises(CheckpointError, match=needle) as info:
        load_model(bad)
    assert "\n" not in str(info.value) and str(bad) in str(info.value)


# ---------------------------------------------------------------------- NaN/inf, dtype, range
@pytest.mark.parametrize("images, needle", [
    (np.full((2, 8, 8, 3), np.nan, np.float32), "NaN or inf"),
    (np.full((1, 8, 8, 3), -np.inf), "NaN or inf"),
    (np.zeros((1, 8, 8, 3), np.uint8), "uint8 pixels are never scaled silently"),
    (np.zeros((1, 8, 8, 3), np.int64), "normalised floats"),
    (np.zeros((8, 8, 3), np.float32), r"\(B, H, W, C\)"),
    (np.zeros((1, 16, 16, 3), np.float32), "does not match"),
    (np.zeros((1, 8, 8, 1), np.float32), "channels"),
    (np.zeros((0, 8, 8, 3), np.float32), "empty batch"),
])
def test_model_forward_refuses_bad_images(images, needle):
    with pytest.raises(ConfigError, match=needle):
        ViT(CFG).forward(images)


def test_non_finite_weights_refused_when_loaded():
    m = ViT(CFG)
    p = m.state_dict()
    p["head.weight"] = np.full_like(p["head.weight"], np.nan)
    with pytest.raises(MinivitError):
        ViT(CFG, params=p)
    with pytest.raises(MinivitError):
        m.load_params(p)


@pytest.mark.parametrize("y, needle", [
    (np.array([0, 3]), r"labels span 0..3, the model has 3 classes"),
    (np.array([0, -1]), "labels span -1..0"),
    (np.array([0.0, 1.0]), "labels must be integers"),
    (np.array([0]), "2 images but labels"),
])
def test_evaluate_refuses_bad_labels(y, needle):
    from minivit.evaluate import evaluate
    x = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(DataError, match=needle):
        evaluate(ViT(CFG), x, y)


def test_evaluate_refuses_pre_scaled_float_images():
    from minivit.evaluate import evaluate
    x = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 3))
    with pytest.raises(DataError, match="0..1|scale"):
        evaluate(ViT(CFG), x, np.array([0, 1]))


# ---------------------------------------------------------------------- images for predict
def _save(img, path, **kw):
    img.save(path, **kw)
    return path


def test_predict_loads_8bit_and_scales_16bit_images(tmp_path):
    from PIL import Image
    from minivit.predict import load_image
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert np.array_equal(load_image(_save(Image.fromarray(rgb), tmp_path / "a.png"), 8), rgb)
    # a 16-bit greyscale PNG: 0..65535 becomes 0..255, never clipped to white
    g16 = np.linspace(0, 65535, 64).astype(np.uint16).reshape(8, 8)
    img = Image.fromarray(g16)
    out = load_image(_save(img, tmp_path / "g16.png"), 8)
    expect = np.round(g16 / 257.0).astype(np.uint8)
    assert np.abs(out[..., 0].astype(int) - expect).max() <= 1
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255 and 100 < out[4, 0, 0] < 155


@pytest.mark.parametrize("make, needle", [
    (lambda p: p.write_bytes(b""), "not a readable image"),
    (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40)), "not a readable image"),
    # seeded bytes: os.urandom failed one run in ~10, when the random header declared a
    # huge GIF (refused as a decompression bomb, the case below, not as unreadable)
    (lambda p: p.write_bytes(b"GIF89a" + np.random.default_rng(0).bytes(64)),
     "not a readable image"),
    (lambda p: p.write_bytes(b"GIF89a" + np.random.default_rng(2).bytes(64)),
     "refused: Image size .* exceeds limit"),
])
def test_predict_refuses_corrupt_image_files(tmp_path, make, needle):
    from minivit.predict import load_image
    p = tmp_path / "bad.png"
    make(p)
    with pytest.raises(DataError, match=needle) as info:
        load_image(p, 8)
    assert str(p) in str(info.value) and "\n" not in str(info.value)


def test_predict_refuses_truncated_png(tmp_path):
    from PIL import Image
    from minivit.predict import load_image
    rng = np.random.default_rng(0)
    good = _save(Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)),
                 tmp_path / "good.png")
    data = good.read_bytes()
    # cuts inside the pixel data (a cut after it, in the trailing CRC/IEND, loses no
    # pixel and Pillow rightly decodes it)
    for cut in (60, len(data) // 3, len(data) // 2, 3 * len(data) // 4):
        (tmp_path / "cut.png").write_bytes(data[:cut])
        with pytest.raises(DataError, match="cut.png"):
            load_image(tmp_path / "cut.png", 8)


@pytest.mark.parametrize("array, needle", [
    (np.full((8, 8, 3), np.nan, np.float32), "uint8"),
    (np.full((8, 8, 3), 0.5), "uint8"),                    # 0..1 floats: not guessed
    (np.zeros((8, 8, 3), np.uint16), "uint8"),
    (np.zeros((8, 8), np.uint8), "uint8"),
    (np.zeros((0, 8, 3), np.uint8), "empty image"),
])
def test_predict_refuses_npy_images_of_wrong_dtype_or_shape(tmp_path, array, needle):
    from minivit.predict import load_image
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(DataError, match=needle):
        load_image(tmp_path / "x.npy", 8)


def test_predict_refuses_object_npy_and_float_tiff(tmp_path):
    from PIL import Image
    from minivit.predict import load_image
    marker = tmp_path / "pwned"
    np.save(tmp_path / "evil.npy", _evil_object_array(marker), allow_pickle=True)
    with pytest.raises(DataError, match="evil.npy"):
        load_image(tmp_path / "evil.npy", 8)
    assert not marker.exists()
    f = Image.fromarray(np.full((8, 8), 0.5, np.float32), mode="F")
    with pytest.raises(DataError, match="floating-point"):
        load_image(_save(f, tmp_path / "f.tiff"), 8)
