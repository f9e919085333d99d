"""The small CIFAR-10 model shipped inside the package (minivit/weights/cifar10-vit.npz):
it loads, is small, and really classifies CIFAR-10; predict and eval use it by default."""
import json
from pathlib import Path

import numpy as np
import pytest

from minivit.checkpoint import load_model
from minivit.cli import main
from minivit.hub import bundled_checkpoint as default_checkpoint

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "cifar-10-binary.tar.gz").exists(),
                                reason=f"CIFAR-10 copy not found at {DATA}")


def test_bundled_checkpoint_loads_and_is_small():
    path = default_checkpoint()
    assert path.stat().st_size < 5 * 2 ** 20
    model, meta = load_model(path)
    assert model.config.num_classes == 10 and model.config.image_size == 32
    assert meta["classes"][0] == "airplane" and len(meta["classes"]) == 10
    assert meta["test_acc"] > 0.7            # what the training run measured


@needs_data
def test_bundled_model_accuracy_on_cifar10_subset():
    from minivit.data import load_cifar10
    from minivit.evaluate import evaluate
    d = load_cifar10(DATA, limit_train=1, limit_test=1000, expected_counts=None)
    model, meta = load_model(default_checkpoint(), backend="numpy")
    r = evaluate(model, d["x_test"], d["y_test"])
    # the full-test-set figure recorded in the checkpoint, within sampling noise of 1,000 images
    assert r["acc"] > meta["test_acc"] - 0.05
    assert r["confusion"].sum() == 1000


def test_predict_default_on_image_file(tmp_path, capsys):
    from PIL import Image
    img = np.zeros((64, 48, 3), np.uint8)
    img[:, :, 2] = 200                       # any size: resized to 32×32
    Image.fromarray(img).save(tmp_path / "blue.png")
    assert main(["predict", "default", str(tmp_path / "blue.png")]) == 0
    out = capsys.readouterr().out.splitlines()
    # two lines about the model (its classes, the resizing), then the path and its top-5
    assert "CIFAR-10" in out[0] and "resized to 32x32" in out[1]
    assert out[2].endswith("blue.png  (48x64)") and len(out) == 8
    probs = [float(line.split()[-1].rstrip("%")) for line in out[3:]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 100.01


@needs_data
def test_eval_default_writes_confusion(tmp_path, capsys):
    assert main(["eval", "--data-dir", str(DATA), "--limit", "300", "--backend", "numpy",
                 "--out", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "eval.json").read_text())
    assert r["acc"] > 0.6 and (tmp_path / "confusion.png").stat().st_size > 1000
    assert np.array(r["confusion"]).sum() == 300


@pytest.mark.parametrize("name,kind", [("hybrid", "hybrid"), ("resnet", "resnet")])
def test_bundled_conv_models_load_are_small_and_predict(tmp_path, capsys, name, kind):
    """The hybrid ViT and the ResNet of benchmarks/vit_vs_resnet.py ship beside the ViT:
    each under 5 MB, its family and measured accuracy recorded, usable by name."""
    from PIL import Image
    path = default_checkpoint(name)
    assert path.stat().st_size < 5 * 2 ** 20
    model, meta = load_model(path)
    assert meta["model_kind"] == kind and len(meta["classes"]) == 10
    assert 0.5 < meta["test_acc"] < 1.0 and meta["train_command"].startswith("python benchmarks/")
    img = np.zeros((32, 32, 3), np.uint8)
    img[:16] = 220
    Image.fromarray(img).save(tmp_path / "half.png")
    assert main(["predict", name, str(tmp_path / "half.png")]) == 0
    out = capsys.readouterr().out.splitlines()
    probs = [float(line.split()[-1].rstrip("%")) for line in out if line.endswith("%")]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True)
