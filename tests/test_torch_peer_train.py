"""benchmarks/torch_peer_train.py: the PyTorch peer is trained with minivit's recipe — the
same decayed parameters, the same learning rate at every epoch, the same compute count —
and never overwrites a finished run."""
import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import torch_peer_train as T  # noqa: E402
from torch_peer import build_torch_vit  # noqa: E402

from minivit import ViTConfig  # noqa: E402
from minivit.data.synthetic import make_synthetic  # noqa: E402
from minivit.train import train  # noqa: E402


def test_weight_decay_goes_to_the_dense_kernels_only():
    cfg = ViTConfig.preset("cifar10-tiny")
    model = build_torch_vit(torch, cfg)
    decay, keep = T._param_groups(model)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = sorted(names[id(p)] for p in decay)
    # patch embedding, 4 × (qkv, proj, fc1, fc2), head: 18 matrices, nothing else
    assert len(decayed) == 2 + 4 * cfg.depth
    assert all(n.endswith(".weight") and "norm" not in n for n in decayed)
    assert {"cls", "pos", "norm.weight", "embed.bias"} <= {names[id(p)] for p in keep}


def test_smoke_run_logs_minivits_schedule_and_compute(tmp_path, capsys):
    args = ["--synthetic", "--limit", "64", "--epochs", "2", "--batch-size", "16",
            "--eval-every", "1", "--threads", "1", "--out", str(tmp_path / "peer")]
    assert T.main(args) == 0
    lines = [json.loads(l) for l in (tmp_path / "peer" / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [1, 2]
    per_image = ViTConfig.preset("cifar10-tiny").train_flops_per_image()
    assert [l["train_flops"] for l in lines] == [64 * per_image, 128 * per_image]
    assert all(0.0 <= l["test_acc"] <= 1.0 for l in lines)
    # minivit's own run of the same recipe logs the same learning rate at each epoch
    data = make_synthetic(n_train=64, n_test=32, image_size=32, num_classes=10, seed=0)
    train(ViTConfig.preset("cifar10-tiny"), data=data, out_dir=tmp_path / "mv", progress=False,
          epochs=2, batch_size=16, lr=1e-3, backend="numpy")
    ours = [json.loads(l) for l in (tmp_path / "mv" / "metrics.jsonl").read_text().splitlines()]
    assert [l["lr"] for l in lines] == pytest.approx([l["lr"] for l in ours], rel=1e-12)
    summary = json.loads((tmp_path / "peer" / "summary.json").read_text())
    assert summary["final_test_acc"] == lines[-1]["test_acc"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:                     # a finished run is kept
        T.main(args)
    assert e.value.code == 2
    assert "--overwrite" in capsys.readouterr().err
