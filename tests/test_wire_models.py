"""Issue 16: the ResNet and the hybrid ViT in the one training loop — `minivit train
--preset resnet-8 | hybrid-tiny` trains, checkpoints (BN running statistics included) and
resumes bit-identically; `minivit eval RUN` / `minivit predict RUN IMG` build the right
model from the checkpoint; what a conv model cannot do is refused in one line.

Tiny and fast: 64 synthetic images, one epoch, the real ``python -m minivit`` entry point.
"""
import dataclasses
import json
import re

import numpy as np
import pytest
from PIL import Image

from minivit.checkpoint import load_checkpoint
from minivit.data.synthetic import make_synthetic
from minivit.errors import ConfigError
from minivit.hub import load
from minivit.hybrid import HybridViT
from minivit.models import config_from_dict, state_shapes
from minivit.resnet import ResNet
from minivit.resnet_config import HybridConfig, ResNetConfig
from minivit.train import TrainSettings, train
from test_first_hour import one_error_line, run   # python -m minivit, downloads refused

TINY = ["--synthetic", "--limit-train", "64", "--limit-test", "32", "--batch-size", "16",
        "--epochs", "1", "--backend", "numpy", "--no-progress"]


@pytest.mark.parametrize("preset,kind,cls,trunk", [
    ("resnet-8", "resnet", ResNet, "16/32/64, 3 residual blocks"),
    ("hybrid-tiny", "hybrid", HybridViT, "16/32/64, 3 residual blocks"),
    ("hybrid-pool", "hybrid", HybridViT, "48/96/192, 6 convs, 3 max-pools")])
def test_cli_trains_a_conv_preset_and_predict_loads_it(tmp_path, preset, kind, cls, trunk):
    out = tmp_path / "run"
    r = run("train", "--preset", preset, *TINY, "--out", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"({kind}: conv trunk widths {trunk}" in r.stdout, r.stdout
    assert "final test accuracy on the synthetic set" in r.stdout
    ck = load_checkpoint(out / "checkpoint.npz")
    assert ck["meta"]["model_kind"] == kind and ck["meta"]["epoch"] == 1
    assert type(ck["config"]).__name__ == cls.config_class.__name__
    # every parameter and BN running statistic is saved; training moved the statistics
    assert set(ck["params"]) == set(state_shapes(ck["config"]))
    assert np.abs(ck["params"]["stem.norm.running_mean"]).max() > 0
    history = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert len(history) == 1 and np.isfinite(history[0]["train_loss"])
    assert history[0]["train_flops"] == 4 * 16 * 3 * ck["config"].flops_per_image()

    model = load(out, backend="numpy")           # the hub builds the saved family
    assert type(model) is cls
    for k, v in model.state_dict().items():
        assert np.array_equal(v, ck["params"][k]), k

    img = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "img.png")
    r = run("predict", out, tmp_path / "img.png", "--backend", "numpy", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = re.findall(r"^  (class\d)\s+([\d.]+)%$", r.stdout, re.M)
    assert len(rows) == 5, r.stdout
    # the CLI's top class and probability are the Python model's (inference-mode BN)
    from minivit.data.augment import normalize
    p = model.predict_proba(normalize(img[None]))[0]
    assert rows[0][0] == f"class{int(np.argmax(p))}"
    assert abs(float(rows[0][1]) - 100 * p.max()) < 0.006


def test_cli_eval_of_a_resnet_run_on_an_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for name, colour in {"blue": (0, 0, 200), "red": (200, 0, 0)}.items():
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i in range(10):
            a = np.clip(np.array(colour) + rng.normal(0, 20, (20, 24, 3)), 0, 255)
            Image.fromarray(a.astype(np.uint8)).save(tmp_path / "photos" / name / f"{i}.png")
    out = tmp_path / "run"
    r = run("train", "--preset", "resnet-8", "--data-folder", tmp_path / "photos",
            "--batch-size", "8", "--epochs", "1", "--backend", "numpy", "--no-progress",
            "--out", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert load_checkpoint(out / "checkpoint.npz")["config"].num_classes == 2
    r = run("eval", out, "--backend", "numpy", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ev = json.loads((out / "eval.json").read_text())
    confusion = np.array(ev["confusion"])
    assert confusion.shape == (2, 2) and confusion.sum() >= 2
    assert ev["acc"] == pytest.approx(np.trace(confusion) / confusion.sum())


def test_conv_models_refuse_cuda_and_vit_only_flags_in_one_line(tmp_path):
    line = one_error_line(run("train", "--preset", "resnet-8", *TINY, "--backend", "cuda",
                              "--out", tmp_path / "a", cwd=tmp_path), "train")
    assert "convolutional models run on the numpy or numba backend, not 'cuda'" in line
    line = one_error_line(run("train", "--preset", "hybrid-tiny", "--patch-size", "8", *TINY,
                              "--out", tmp_path / "b", cwd=tmp_path), "train")
    assert "--patch-size only applies to a ViT" in line
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_model_flags_the_family_has_apply(tmp_path):
    r = run("train", "--preset", "resnet-8", "--num-classes", "4", *TINY, "--out",
            tmp_path / "r", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ck = load_checkpoint(tmp_path / "r" / "checkpoint.npz")
    assert ck["config"] == ResNetConfig.preset("resnet-8", num_classes=4)
    assert ck["params"]["head.bias"].shape == (4,)
    # The hybrid takes the encoder's classifier (Appendix D.3): GAP drops the class token.
    r = run("train", "--preset", "hybrid-tiny", "--classifier", "gap", *TINY, "--out",
            tmp_path / "h", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "GAP head" in r.stdout
    ck = load_checkpoint(tmp_path / "h" / "checkpoint.npz")
    assert ck["config"] == HybridConfig.preset("hybrid-tiny", classifier="gap")
    assert "cls_token" not in ck["params"] and ck["params"]["pos_embed"].shape == (1, 64, 128)


RESNET = ResNetConfig(image_size=8, stem_width=4, widths=(4, 8), depths=(1, 1), num_classes=3)
HYBRID = HybridConfig(image_size=8, stem_width=4, widths=(4, 8), depths=(1, 1), dim=8, depth=1,
                      heads=2, mlp_dim=16, num_classes=3)
DATA = make_synthetic(n_train=48, n_test=16, image_size=8, num_classes=3, seed=0)
FAST = dict(batch_size=16, warmup_epochs=0.5, backend="numpy", lr=3e-3, crop_padding=1,
            mixup=0.2)
QUIET = dict(progress=False, log=lambda *a: None)


@pytest.mark.parametrize("config", [RESNET, HYBRID], ids=["resnet", "hybrid"])
def test_resume_is_bit_identical(tmp_path, config):
    """Stopped after epoch 1 of 2 and resumed = trained straight through: parameters, BN
    running statistics and the test accuracies."""
    straight = train(config, data=DATA, out_dir=tmp_path / "a", epochs=2, **QUIET, **FAST)
    first = train(config, data=DATA, out_dir=tmp_path / "b",
                  settings=TrainSettings(epochs=2, **FAST), stop_after_epochs=1, **QUIET)
    assert len(first["history"]) == 1
    resumed = train(None, data=DATA, out_dir=tmp_path / "b", resume=True, **QUIET)
    assert type(resumed["model"]) is type(straight["model"])
    pa, pb = straight["model"].state_dict(), resumed["model"].state_dict()
    assert set(pa) == set(state_shapes(config))
    for k in pa:
        assert np.array_equal(pa[k], pb[k]), k
    assert [h["test_acc"] for h in straight["history"]] == \
        [h["test_acc"] for h in resumed["history"]]


def test_resume_refuses_another_family(tmp_path):
    train(RESNET, data=DATA, out_dir=tmp_path / "r", settings=TrainSettings(epochs=2, **FAST),
          stop_after_epochs=1, **QUIET)
    with pytest.raises(ConfigError, match="trains a resnet model, not a hybrid"):
        train(HYBRID, data=DATA, out_dir=tmp_path / "r", resume=True, **QUIET)
    line = one_error_line(run("train", "--resume", "--patch-size", "2", "--out", tmp_path / "r",
                              cwd=tmp_path), "train")
    assert "trains a resnet model: --patch-size only applies to a ViT" in line


@pytest.mark.parametrize("config,kind", [(RESNET, "resnet"), (HYBRID, "hybrid")],
                         ids=["resnet", "hybrid"])
def test_vit_only_commands_refuse_a_conv_checkpoint_in_one_line(tmp_path, config, kind):
    train(config, data=DATA, out_dir=tmp_path / "r", epochs=1, **QUIET, **FAST)
    refused = [("finetune", ["--synthetic", "--out", tmp_path / "ft"])]
    if kind == "resnet":                         # no attention; the hybrid's is inspected
        refused.append(("inspect", ["--out", tmp_path / "in"]))
    for cmd, extra in refused:
        line = one_error_line(run(cmd, tmp_path / "r", *extra, cwd=tmp_path), cmd)
        assert f"holds a {kind} model; minivit {cmd} works on ViT checkpoints only" in line
    assert not (tmp_path / "ft").exists()
    if kind == "resnet":
        assert not (tmp_path / "in").exists()


@pytest.mark.parametrize("classifier", ["token", "gap"])
def test_inspect_reads_the_hybrid_encoders_attention(tmp_path, classifier):
    """minivit inspect on a hybrid: attention per layer over the trunk's 8×8 feature-map
    cells, rollout, distances in input pixels (a cell is 4 px at 32 px / 8), no filters.
    With the GAP head (no class token) the rollout map is the mean of the rollout's rows."""
    cfg = dataclasses.replace(HYBRID, classifier=classifier)
    train(cfg, data=DATA, out_dir=tmp_path / "r", epochs=1, **QUIET, **FAST)
    p = run("inspect", tmp_path / "r", "--out", tmp_path / "in", "--images", "2", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    info = json.loads((tmp_path / "in" / "mean_attention_distance.json").read_text())
    cfg = config_from_dict(info["config"], "hybrid")
    dist = np.array(info["mean_attention_distance"])
    assert dist.shape == (cfg.depth, cfg.heads)
    # 8×8 cells 4 px apart: every distance lies between 0 and the grid's diagonal
    assert np.all(dist > 0) and np.all(dist < 4 * 7 * np.sqrt(2))
    names = sorted(f.name for f in (tmp_path / "in").iterdir())
    assert [f"attention_layer{i + 1}.png" for i in range(cfg.depth)] == \
        [n for n in names if n.startswith("attention_layer")]
    assert "rollout.png" in names and "embedding_filters.png" not in names


@pytest.mark.parametrize("preset,kind", [("resnet-8", "resnet"), ("hybrid-tiny", "hybrid")])
def test_pretrain_refuses_a_conv_preset_by_name(tmp_path, preset, kind):
    line = one_error_line(run("pretrain", "--preset", preset, "--synthetic", "--out",
                              tmp_path / "p", cwd=tmp_path), "pretrain")
    assert (f"masked patch prediction pre-trains a plain ViT; {kind} models have no image "
            f"patches to mask") in line
    assert not (tmp_path / "p").exists()
