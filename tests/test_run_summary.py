"""benchmarks/run_summary.py: a finished run's metrics become committed evidence (its
metrics.jsonl and a summary.json) with the compute counted against the 60-minute recipe,
and an existing summary is never replaced without --overwrite."""
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import run_summary as R  # noqa: E402

from minivit import ViTConfig  # noqa: E402


def _rows():
    f = 1.0e13
    return [dict(epoch=1, train_flops=f, elapsed_s=60.0, images_per_s=400.0, test_acc=None),
            dict(epoch=2, train_flops=2 * f, elapsed_s=130.0, images_per_s=500.0,
                 test_acc=0.5, ema_test_acc=0.45),
            dict(epoch=3, train_flops=3 * f, elapsed_s=200.0, images_per_s=450.0,
                 test_acc=0.6, ema_test_acc=0.62)]


def test_budget_is_28_epochs_of_cifar10_tiny():
    per_image = ViTConfig.preset("cifar10-tiny").train_flops_per_image()
    # 781 steps of 64 (the last partial batch dropped) per epoch, 28 epochs: ≈ 3.26e14
    assert R.recipe_60min_flops() == 28 * 781 * 64 * per_image
    assert 3.2e14 < R.recipe_60min_flops() < 3.3e14


def test_summary_fields(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    out = tmp_path / "results" / "x"
    R.main([str(run), "--command", "minivit train --epochs 3", "--out", str(out)])
    s = json.loads((out / "summary.json").read_text())
    assert (s["final_test_acc"], s["final_ema_test_acc"], s["epochs"]) == (0.6, 0.62, 3)
    assert s["budget_fraction_of_60min_recipe"] == pytest.approx(3e13 / R.recipe_60min_flops())
    assert s["images_per_s_median"] == 450.0 and s["train_plus_eval_s"] == 200.0
    assert s["test_acc_by_epoch"] == {"2": 0.5, "3": 0.6}
    assert s["ema_test_acc_by_epoch"] == {"2": 0.45, "3": 0.62}
    assert s["minutes_by_epoch"] == {"2": 2.2, "3": 3.3}
    assert (out / "metrics.jsonl").read_text() == (run / "metrics.jsonl").read_text()
    # a second call does not replace it
    with pytest.raises(SystemExit):
        R.main([str(run), "--command", "other", "--out", str(out)])
    assert json.loads((out / "summary.json").read_text())["command"] == "minivit train --epochs 3"
    R.main([str(run), "--command", "other", "--out", str(out), "--overwrite"])
    assert json.loads((out / "summary.json").read_text())["command"] == "other"


def test_refuses_a_run_never_evaluated(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps(_rows()[0]) + "\n")
    with pytest.raises(SystemExit):
        R.main([str(run), "--command", "c", "--out", str(tmp_path / "o")])
    assert "never evaluated" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        R.main([str(tmp_path / "nowhere"), "--command", "c", "--out", str(tmp_path / "o")])
    assert "not found" in capsys.readouterr().err


def test_commit_is_the_training_code_not_the_checkout(tmp_path):
    """The commit comes from the run's lines (minivit train writes it); a run resumed on
    other code names both in order; a run from before the field says it does not know and
    records the summarising checkout under another name."""
    rows = [dict(r, commit=c) for r, c in zip(_rows(), ["aaa1111", "aaa1111", "bbb2222"])]
    assert R.summarize(rows, "c", "m", "d")["commit"] == "aaa1111 then bbb2222"
    assert R.summarize(rows[:2], "c", "m", "d")["commit"] == "aaa1111"
    assert "commit_at_summary" not in R.summarize(rows, "c", "m", "d")
    old = R.summarize(_rows(), "c", "m", "d")
    assert old["commit"] is None and old["commit_at_summary"]
