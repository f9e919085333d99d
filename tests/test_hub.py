"""minivit.hub: what a user types (default, a bundled name, a run folder, a path) → the
checkpoint file; what a checkpoint is (classifier or masked-patch prediction); its class
names; minivit.load."""
import numpy as np
import pytest

import minivit
from minivit import ViT, ViTConfig
from minivit.checkpoint import save_checkpoint
from minivit.errors import CheckpointError
from minivit.hub import (MPP, bundled_checkpoint, bundled_models, checkpoint_kind,
                         class_names, is_bundled, require_classifier, resolve_checkpoint)

CFG = ViTConfig(image_size=8, patch_size=4, dim=8, depth=1, heads=2, mlp_dim=8, num_classes=3)


def test_bundled_names():
    assert "cifar10-vit" in bundled_models()
    p = bundled_checkpoint("default")
    assert p.name == "cifar10-vit.npz" and p.is_file() and is_bundled(p)
    assert resolve_checkpoint(None) == p == resolve_checkpoint("default")
    with pytest.raises(CheckpointError, match=r"no bundled model 'imagenet'.*default, cifar10-vit"):
        bundled_checkpoint("imagenet")


def test_paths_and_run_folders(tmp_path, monkeypatch):
    ck = save_checkpoint(tmp_path / "run" / "checkpoint.npz", ViT(CFG))
    assert resolve_checkpoint(tmp_path / "run") == ck
    assert resolve_checkpoint(str(ck)) == ck and not is_bundled(ck)
    with pytest.raises(CheckpointError, match="is a directory without a checkpoint.npz"):
        resolve_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match=r"checkpoint not found: .*nope.npz \(give"):
        resolve_checkpoint(tmp_path / "nope.npz")
    # a local file or folder named like a bundled model wins over the bundled one
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cifar10-vit").mkdir()
    save_checkpoint(tmp_path / "cifar10-vit" / "checkpoint.npz", ViT(CFG))
    assert resolve_checkpoint("cifar10-vit").parent.name == "cifar10-vit"
    assert not is_bundled(resolve_checkpoint("cifar10-vit"))


def test_kind_and_refusal():
    assert checkpoint_kind({}) == "classifier"
    assert checkpoint_kind({"pretrain": MPP}) == MPP
    assert checkpoint_kind({"objective": MPP}) == MPP
    require_classifier({"classes": ["a"]}, "x.npz")
    with pytest.raises(CheckpointError, match=r"x.npz is a masked-patch-prediction checkpoint"):
        require_classifier({"pretrain": MPP}, "x.npz")


def test_class_names():
    assert class_names({}, 10, "p")[0] == "airplane"
    assert class_names({}, 3, "p") == ["class0", "class1", "class2"]
    assert class_names({"classes": ["a", "b", "c"]}, 3, "p") == ["a", "b", "c"]
    for bad in (["a", "b"], "abc", ["a", "b", 3]):
        with pytest.raises(CheckpointError, match="must list 3 class names"):
            class_names({"classes": bad}, 3, "p")


def test_load_keeps_meta_and_path(tmp_path):
    m0 = ViT(CFG, seed=4)
    ck = save_checkpoint(tmp_path / "checkpoint.npz", m0, classes=["x", "y", "z"])
    m = minivit.load(tmp_path, dtype="float64")
    assert m.checkpoint == ck and m.meta["classes"] == ["x", "y", "z"] and m.dtype == np.float64
    for k, v in m0.state_dict().items():
        np.testing.assert_array_equal(m.state_dict()[k], v.astype(np.float64))
