"""Issue 13 item 14: training on your own images — a folder per class (torchvision's
ImageFolder / Keras' image_dataset_from_directory layout), resized to the model's size,
class names kept in the checkpoint, with the same train, eval and predict commands."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minivit.data import load_dataset, load_image_folder, scan_image_folder
from minivit.data.folder import held_out_split, load_folder_dataset
from minivit.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
COLOURS = {"blue": (30, 40, 220), "green": (30, 200, 40), "red": (220, 30, 30)}


def make_folder(root, n=6, seed=0):
    """root/<colour>/<i>.png|jpg: n noisy images per class, sizes from 12 to 40 px."""
    rng = np.random.default_rng(seed)
    for name, c in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            h, w = (int(v) for v in rng.integers(12, 41, 2))
            a = np.clip(np.array(c) + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(root / name / (f"{i}.png" if i % 2 else f"{i}.jpg"))
    return root


def test_scan_sorts_classes_and_skips_other_files(tmp_path):
    root = make_folder(tmp_path / "photos", n=3)
    (root / "red" / "notes.txt").write_text("x")
    (root / "red" / ".hidden.png").write_bytes(b"x")
    (root / "readme.md").write_text("top-level files are not classes")
    paths, labels, classes = scan_image_folder(root)
    assert classes == ("blue", "green", "red")
    assert len(paths) == 9 and labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    assert all(p.parent.name == classes[y] for p, y in zip(paths, labels))


def test_load_image_folder_resizes_and_keeps_colours(tmp_path):
    x, y, classes = load_image_folder(make_folder(tmp_path / "p", n=2), 16)
    assert x.shape == (6, 16, 16, 3) and x.dtype == np.uint8 and y.dtype == np.int64
    for k, name in enumerate(classes):      # each class's dominant channel survives resizing
        mean = x[y == k].reshape(-1, 3).mean(axis=0)
        assert np.argmax(mean) == np.argmax(COLOURS[name])


def test_held_out_split_is_stratified_and_deterministic():
    y = np.repeat([0, 1, 2], [10, 5, 2])
    tr, te = held_out_split(y, 0.2, seed=3)
    assert np.bincount(y[te]).tolist() == [2, 1, 1]            # round(0.2 n), at least 1
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(len(y)))
    tr2, te2 = held_out_split(y, 0.2, seed=3)
    assert np.array_equal(te, te2)
    assert not np.array_equal(te, held_out_split(y, 0.2, seed=4)[1])


def test_explicit_train_test_folders(tmp_path):
    make_folder(tmp_path / "d" / "train", n=4)
    make_folder(tmp_path / "d" / "test", n=2, seed=1)
    d = load_folder_dataset(tmp_path / "d", 8)
    assert len(d["y_train"]) == 12 and len(d["y_test"]) == 6
    assert d["classes"] == ("blue", "green", "red") and d["source"]["split"] == "folders"
    (tmp_path / "d" / "test" / "red").rename(tmp_path / "d" / "test" / "pink")
    with pytest.raises(DataError, match="both need the same class folders"):
        load_folder_dataset(tmp_path / "d", 8)


def test_limits_and_the_dispatcher(tmp_path):
    root = make_folder(tmp_path / "p", n=10)
    d = load_dataset(str(root), 8, limit_train=5, limit_test=3)
    assert d["x_train"].shape == (5, 8, 8, 3) and len(d["y_test"]) == 3
    full = load_dataset(root, 8)
    assert len(full["y_train"]) == 24 and len(full["y_test"]) == 6     # 2 of 10 per class
    # the checkpoint's record of the data finds the same held-out images
    again = load_dataset(full["source"], 8)
    assert np.array_equal(np.sort(again["x_test"].reshape(6, -1), axis=0),
                          np.sort(full["x_test"].reshape(6, -1), axis=0))
    assert load_dataset("synthetic", 8, limit_train=16, num_classes=3)["x_train"].shape == \
        (16, 8, 8, 3)
    with pytest.raises(DataError, match="not cifar10, synthetic, or an existing folder"):
        load_dataset(str(tmp_path / "nope"), 8)


@pytest.mark.parametrize("case, match", [
    ("missing", "does not exist"),
    ("no-classes", "no class sub-folders"),
    ("one-class", "at least two"),
    ("empty-class", "holds no images"),
    ("corrupt", "not a readable image"),
])
def test_bad_folders_are_named(tmp_path, case, match):
    root = tmp_path / "p"
    if case != "missing":
        root.mkdir()
    if case == "one-class":
        make_folder(tmp_path / "src", n=1)
        (tmp_path / "src" / "red").rename(root / "red")
    if case in ("empty-class", "corrupt"):
        make_folder(root, n=2)
    if case == "empty-class":
        (root / "violet").mkdir()
    if case == "corrupt":
        (root / "red" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    with pytest.raises(DataError, match=match):
        load_image_folder(root, 8)


def _run(*argv, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "minivit", *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_train_eval_predict_on_your_own_images(tmp_path):
    """The whole story through the real entry point: train --data-folder, then eval and
    predict of the run folder, which know the folder's classes and its held-out split."""
    root = make_folder(tmp_path / "photos", n=10)
    run_dir = tmp_path / "runs" / "colours"
    r = _run("train", "--data-folder", root, "--image-size", "16", "--patch-size", "4",
             "--dim", "16", "--depth", "1", "--heads", "2", "--mlp-dim", "32",
             "--batch-size", "8", "--epochs", "4", "--lr", "3e-3", "--backend", "numpy",
             "--no-progress", "--out", run_dir, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    from minivit.checkpoint import load_checkpoint
    meta = load_checkpoint(run_dir / "checkpoint.npz")["meta"]
    assert meta["classes"] == ["blue", "green", "red"]
    assert meta["config"]["num_classes"] == 3
    assert meta["data_source"]["folder"] == str(root.resolve())

    r = _run("eval", run_dir, "--backend", "numpy", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ev = json.loads((run_dir / "eval.json").read_text())
    assert np.array(ev["confusion"]).sum() == 6                   # 2 held out per class
    assert set(ev["per_class_acc"]) == {"blue", "green", "red"}
    assert ev["acc"] > 0.5                                         # colours are easy
    last = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    assert ev["acc"] == pytest.approx(last["test_acc"])           # the same held-out images

    r = _run("predict", run_dir, root / "red" / "1.png", "--top", "3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "3 classes (blue, green, red)" in r.stdout and "resized to 16x16" in r.stdout
    assert "CIFAR-10" not in r.stdout
    top3 = [ln.split()[0] for ln in r.stdout.splitlines()[3:6]]   # after 2 notes + path
    assert sorted(top3) == ["blue", "green", "red"]


def test_data_folder_with_wrong_num_classes_is_refused(tmp_path):
    root = make_folder(tmp_path / "photos", n=2)
    r = _run("train", "--data-folder", root, "--num-classes", "5", "--epochs", "1",
             "--out", tmp_path / "o", cwd=tmp_path)
    assert r.returncode == 2 and "--num-classes 5, but" in r.stderr and "3 class folders" in r.stderr
