"""The training loop: exact resume, non-finite loss, schedule, CLI flag errors (signals:
tests/test_robustness_interrupt.py)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from minivit import ViTConfig
from minivit.checkpoint import load_checkpoint
from minivit.data.synthetic import make_synthetic
from minivit.errors import TrainingError
from minivit.optim import LRSchedule, decays
from minivit.train import TrainSettings, train

CFG = ViTConfig(image_size=8, patch_size=4, dim=16, depth=2, heads=2, mlp_dim=32, num_classes=4)
DATA = make_synthetic(n_train=96, n_test=32, image_size=8, num_classes=4, seed=0)
FAST = dict(batch_size=16, warmup_epochs=0.5, backend="numpy", lr=2e-3, crop_padding=1,
            rand_augment=(1, 5), mixup=0.2)


def _params(model):
    return model.state_dict()


def test_resume_is_bit_identical(tmp_path):
    straight = train(CFG, data=DATA, out_dir=tmp_path / "a", epochs=2, progress=False,
                     log=lambda *a: None, **FAST)
    # the same 2-epoch schedule, stopped after epoch 1 (as a crash would), then resumed
    s = TrainSettings(epochs=2, **FAST)
    first = train(CFG, data=DATA, out_dir=tmp_path / "b", settings=s, progress=False,
                  log=lambda *a: None, stop_after_epochs=1)
    assert len(first["history"]) == 1
    resumed = train(CFG, data=DATA, out_dir=tmp_path / "b", resume=True, progress=False,
                    log=lambda *a: None)
    pa, pb = _params(straight["model"]), _params(resumed["model"])
    for k in pa:
        assert np.array_equal(pa[k], pb[k]), k
    ha = [json.loads(l) for l in open(tmp_path / "a" / "metrics.jsonl")]
    hb = [json.loads(l) for l in open(tmp_path / "b" / "metrics.jsonl")]
    assert [h["test_acc"] for h in ha] == [h["test_acc"] for h in hb]
    assert (tmp_path / "a" / "curves.png").stat().st_size > 1000


def test_nonfinite_loss_stops_and_keeps_checkpoint(tmp_path):
    out = tmp_path / "run"
    train(CFG, data=DATA, out_dir=out, epochs=1, progress=False, log=lambda *a: None, **FAST)
    before = (out / "checkpoint.npz").read_bytes()
    with pytest.raises(TrainingError, match="loss became"):
        train(CFG, data=DATA, out_dir=out, epochs=2, progress=False, log=lambda *a: None,
              overwrite=True,
              **{**FAST, "lr": 1e30, "clip_norm": 0.0, "warmup_epochs": 0})
    # the diverging run started fresh in the same directory and died in its first
    # epoch: the checkpoint on disk is still the last good one, and valid
    assert (out / "checkpoint.npz").read_bytes() == before
    load_checkpoint(out / "checkpoint.npz")


def test_schedule_and_decay_rules():
    s = LRSchedule(1.0, total_steps=100, warmup_steps=10, decay="cosine", min_lr=0.0)
    assert s(0) == pytest.approx(0.1) and s(9) == pytest.approx(1.0)
    assert s(55) == pytest.approx(0.5, abs=0.02) and s(100) == pytest.approx(0.0, abs=1e-12)
    lin = LRSchedule(1.0, 100, 0, "linear")
    assert lin(50) == pytest.approx(0.5)
    assert decays("blocks.0.attn.qkv.weight") and decays("head.weight")
    for n in ("blocks.0.norm1.weight", "norm.weight", "pos_embed", "cls_token", "head.bias"):
        assert not decays(n)


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "minivit", *args], capture_output=True,
                          text=True, timeout=120, **kw)


@pytest.mark.parametrize("flags,needle", [
    (["--epochs", "-1"], "epochs must be >= 1"),
    (["--batch-size", "0"], "batch size must be >= 1"),
    (["--patch-size", "64"], "larger than the image"),
    (["--backend", "tpu"], "unknown backend 'tpu'"),
    (["--lr", "-3"], "lr must be > 0"),
    (["--preset", "nope"], "unknown preset 'nope'"),
])
def test_cli_bad_flags_one_line(flags, needle):
    r = _cli("train", "--synthetic", "--no-progress", "--out", "/nonexistent/never", *flags)
    assert r.returncode == 2
    assert needle in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
