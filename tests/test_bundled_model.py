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


def test_bundle_script_ships_raw_or_ema_weights(tmp_path):
    """benchmarks/bundle_model.py: the raw weights with the raw test accuracy, or with
    --ema the moving average's weights with the average's accuracy, named in meta.json."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bundle_model
    from minivit import ViTConfig
    from minivit.checkpoint import load_checkpoint
    from minivit.data.synthetic import make_synthetic
    from minivit.train import train
    cfg = ViTConfig(image_size=8, patch_size=4, dim=16, depth=1, heads=2, mlp_dim=32,
                    num_classes=10)
    data = make_synthetic(n_train=64, n_test=32, image_size=8, num_classes=10, seed=0)
    train(cfg, data=data, out_dir=tmp_path / "run", epochs=2, batch_size=16, lr=3e-3,
          ema_decay=0.9, backend="numpy", progress=False, log=lambda *a: None)
    last = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")][-1]
    ck = load_checkpoint(tmp_path / "run" / "checkpoint.npz")
    for ema, key, weights in ((False, "test_acc", ck["params"]),
                              (True, "ema_test_acc", {**ck["params"], **ck["ema"]})):
        out = tmp_path / f"ship_{ema}.npz"
        bundle_model.main([str(tmp_path / "run"), "--command", "c", "--out", str(out)]
                          + ["--ema"] * ema)
        model, meta = load_model(out)
        assert meta["test_acc"] == last[key] and meta["weights"] == ("ema" if ema else "raw")
        for k, v in model.state_dict().items():
            assert np.array_equal(v, weights[k]), k
    assert not all(np.array_equal(ck["params"][k], ck["ema"][k]) for k in ck["ema"])
