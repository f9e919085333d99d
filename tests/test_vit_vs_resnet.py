"""benchmarks/vit_vs_resnet.py: each model's epochs match its compute budget, and a smoke
run writes the JSON, every run's metrics.jsonl and the figure."""
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import vit_vs_resnet as V  # noqa: E402
from minivit.models import config_from_preset, epoch_flops, epochs_for_budget  # noqa: E402


@pytest.mark.parametrize("name", ["cifar10-tiny", "hybrid-tiny", "resnet-20"])
def test_epochs_for_budget_is_the_closest_whole_number(name):
    config = config_from_preset(name)
    per_epoch = epoch_flops(config, 50000, 64)
    assert per_epoch == 781 * 64 * config.train_flops_per_image()     # full batches only
    for budget in (0.5e14, 1e14, 1.6e14):
        e = epochs_for_budget(budget, config, 50000, 64)
        assert abs(e * per_epoch - budget) <= 0.5 * per_epoch
    assert epochs_for_budget(1.0, config, 50000, 64) == 1          # never zero epochs
    assert epochs_for_budget(2.6 * per_epoch, config, 50000, 64) == 3      # closest
    assert epochs_for_budget(2.6 * per_epoch, config, 50000, 64, within=True) == 2
    assert epochs_for_budget(3 * per_epoch, config, 50000, 64, within=True) == 3   # exactly fits


def test_label_names_budgets_in_units_of_1e14():
    assert [V.label(b) for b in (0.5e14, 1e14, 1.6e14)] == ["0.5e14", "1e14", "1.6e14"]


def test_smoke_run_writes_json_metrics_and_figure(tmp_path, capsys):
    rc = V.main(["--synthetic", "--limit", "32", "--budgets", "4e9,1e10", "--batch-size", "16",
                 "--backend", "numpy", "--tag", "t", "--out", str(tmp_path), "--runs", str(tmp_path / "runs")])
    assert rc == 0
    assert (tmp_path / "runs" / "vit_vs_resnet_t" / V.label(1e10) / "resnet-20" / "checkpoint.npz").exists()
    result = json.loads((tmp_path / "vit_vs_resnet_t.json").read_text())
    assert result["models"] == ["cifar10-tiny", "hybrid-tiny", "resnet-20"]
    assert result["budgets"] == [4e9, 1e10]
    assert len(result["runs"]) == 6
    for r in result["runs"]:
        metrics = tmp_path / r["metrics"] / "metrics.jsonl"
        lines = [json.loads(l) for l in metrics.read_text().splitlines()]
        assert len(lines) == r["epochs"]
        assert lines[-1]["train_flops"] == r["train_flops"]
        assert r["train_flops"] == r["epochs"] * 32 * r["train_flops_per_image"]
        assert 0.0 <= r["test_acc"] <= 1.0
    assert (tmp_path / "vit_vs_resnet_t.png").stat().st_size > 10_000
    assert "| 4e+09 |" in capsys.readouterr().out

    # --add: a later budget joins the JSON; the earlier runs stay as they were
    common = ["--synthetic", "--limit", "32", "--backend", "numpy", "--tag", "t",
              "--out", str(tmp_path), "--runs", str(tmp_path / "runs")]
    assert V.main(common + ["--budgets", "2e10", "--models", "resnet-20", "--batch-size", "16",
                            "--add"]) == 0
    added = json.loads((tmp_path / "vit_vs_resnet_t.json").read_text())
    assert added["budgets"] == [4e9, 1e10, 2e10]
    assert added["models"] == result["models"]
    assert [r for r in added["runs"] if r["budget"] < 2e10] == \
        [dict(r, date=result["date"]) if "date" not in r else r for r in result["runs"]]
    assert [(r["model"], r["budget"]) for r in added["runs"][6:]] == [("resnet-20", 2e10)]
    assert "not run yet" in capsys.readouterr().out        # the other two at 2e10
    with pytest.raises(SystemExit) as e:              # another recipe: refused, JSON kept
        V.main(common + ["--budgets", "2e10", "--batch-size", "8", "--add"])
    assert e.value.code == 2 and "--add" in capsys.readouterr().err
    assert json.loads((tmp_path / "vit_vs_resnet_t.json").read_text()) == added


def test_bad_budget_is_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        V.main(["--synthetic", "--budgets", "lots", "--out", str(tmp_path)])
    assert e.value.code == 2
    assert "--budgets" in capsys.readouterr().err
