"""benchmarks/knob_ablation.py: a smoke search writes its table; a finished run joins it
with --import-run (settings read from its checkpoint, compute checked against the budget);
--add keeps the rows of the variants not given."""
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import knob_ablation as K  # noqa: E402


def _common(tmp_path, budget="1"):
    return ["--synthetic", "--limit", "32", "--budget-epochs", budget, "--batch-size", "16",
            "--backend", "numpy", "--tag", "t", "--out", str(tmp_path),
            "--runs", str(tmp_path / "runs")]


def test_search_import_and_add(tmp_path, capsys):
    path = tmp_path / "knob_ablation_t.json"
    assert K.main(_common(tmp_path) + ["--variant", "a", "--variant", "ls0:label_smoothing=0"]) == 0
    first = json.loads(path.read_text())
    assert [r["name"] for r in first["runs"]] == ["a", "ls0"]
    a, ls0 = first["runs"]
    assert a["settings"] == {} and ls0["settings"] == {"label_smoothing": 0}
    assert a["epochs"] == 1 and a["train_flops"] == first["budget_flops"]   # 2 steps × 16
    assert "| ls0 | label_smoothing=0 | 1 |" in capsys.readouterr().out

    # run "a" again as an imported finished run: same numbers, nothing trained, ls0 kept
    run_a = tmp_path / "runs" / "knob_ablation_t" / "a"
    assert K.main(_common(tmp_path) + ["--import-run", f"base={run_a}", "--add"]) == 0
    rows = {r["name"]: r for r in json.loads(path.read_text())["runs"]}
    assert set(rows) == {"a", "ls0", "base"}
    base = rows["base"]
    assert base["model"] == {} and base["settings"] == {}
    assert (base["test_acc"], base["train_flops"], base["epochs"]) == \
        (a["test_acc"], a["train_flops"], a["epochs"])
    assert base["tta_flip_acc"] == pytest.approx(a["tta_flip_acc"])
    assert base["imported_from"] == str(run_a)

    # a run of another budget, a missing folder, another search: one-line refusals
    for argv, words in ((_common(tmp_path, "2") + ["--import-run", f"b={run_a}"], "budget"),
                        (_common(tmp_path) + ["--import-run", f"b={tmp_path / 'nope'}"], "nope"),
                        (_common(tmp_path, "2") + ["--variant", "a", "--add"], "--add")):
        with pytest.raises(SystemExit) as e:
            K.main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert words in err
    assert {r["name"] for r in json.loads(path.read_text())["runs"]} == {"a", "ls0", "base"}

    # --rescore: a row written before flip-shift TTA existed gets it from its checkpoint
    d = json.loads(path.read_text())
    shift_a = d["runs"][0]["tta_flip_shift_acc"]
    assert 0 <= shift_a <= 1 and "tta_flip_shift_acc" in d["runs"][1]
    del d["runs"][0]["tta_flip_shift_acc"]
    path.write_text(json.dumps(d))
    assert K.main(_common(tmp_path) + ["--variant", "ls0:label_smoothing=0", "--add",
                                       "--rescore"]) == 0
    rows = {r["name"]: r for r in json.loads(path.read_text())["runs"]}
    assert rows["a"]["tta_flip_shift_acc"] == pytest.approx(shift_a)


def test_hybrid_search_within_a_flop_budget(tmp_path, capsys):
    """--preset hybrid-tiny: trunk fields (widths written 32/64/128) are model fields, the
    budget is FLOP (--budget-flops), an imported run must spend at most it (and 80% of it
    at least), and a run of another family is refused."""
    from minivit.models import config_from_preset, epoch_flops
    small = dict(stem_width=8, widths=(8, 16, 32), depth=1, dim=32, heads=2, mlp_dim=64,
                 trunk="pool")
    per_epoch = epoch_flops(config_from_preset("hybrid-tiny", **small), 32, 16)
    common = ["--synthetic", "--limit", "32", "--batch-size", "16", "--backend", "numpy",
              "--preset", "hybrid-tiny", "--tag", "h", "--out", str(tmp_path),
              "--runs", str(tmp_path / "runs")]
    # no epochs= given: the most whole epochs within 2.5 epochs' FLOP, 2 (closest would be 3)
    spec = ("s:stem_width=8,widths=8/16/32,depth=1,dim=32,heads=2,mlp_dim=64,trunk=pool,"
            "lr=2e-3,ema_decay=0.5")
    assert K.main(common + ["--budget-flops", str(2.5 * per_epoch), "--variant", spec]) == 0
    path = tmp_path / "knob_ablation_h.json"
    (row,) = json.loads(path.read_text())["runs"]
    assert row["model"] == dict(small, widths=[8, 16, 32])
    assert row["settings"] == {"lr": 2e-3, "ema_decay": 0.5} and row["epochs"] == 2
    assert row["train_flops"] == 2 * per_epoch
    assert "| s | stem_width=8, widths=8/16/32" in capsys.readouterr().out   # the README's table

    run = tmp_path / "runs" / "knob_ablation_h" / "s"
    assert K.main(common + ["--budget-flops", str(2.5 * per_epoch), "--import-run",
                            f"again={run}", "--add"]) == 0
    again = {r["name"]: r for r in json.loads(path.read_text())["runs"]}["again"]
    assert again["model"] == row["model"] and again["test_acc"] == row["test_acc"]
    # a run of another seed than the search's says so in its change column
    other = [a if a != "h" else "h1" for a in common]
    assert K.main(other + ["--budget-flops", str(2.5 * per_epoch), "--seed", "1",
                           "--import-run", f"seed0={run}"]) == 0
    (seed0,) = json.loads((tmp_path / "knob_ablation_h1.json").read_text())["runs"]
    assert seed0["settings"] == {"lr": 2e-3, "ema_decay": 0.5, "seed": 0}
    assert again["settings"] == row["settings"]                   # same seed: not shown

    # the trainer's EMA figure is the average's own: the checkpoint's ema/ weights
    # evaluated from the file agree (the swap reaches the hybrid's encoder)
    assert row["ema_test_acc"] is not None and again["ema_test_acc"] == row["ema_test_acc"]

    # re-importing a run takes its EMA figure from the checkpoint, not from the table or
    # its metrics.jsonl (how hybrid rows logged before the EMA fix were corrected)
    d = json.loads(path.read_text())
    d["runs"][0]["ema_test_acc"] = 0.0
    path.write_text(json.dumps(d))
    assert K.main(common + ["--budget-flops", str(2.5 * per_epoch), "--import-run",
                            f"s={run}", "--add"]) == 0
    fixed = {r["name"]: r for r in json.loads(path.read_text())["runs"]}["s"]
    assert fixed["ema_test_acc"] == row["ema_test_acc"]

    vit_run = tmp_path / "runs" / "knob_ablation_t" / "a"
    assert K.main(_common(tmp_path) + ["--variant", "a"]) == 0
    for budget, imp, words in ((1.9 * per_epoch, run, "budget"),     # spent more than it
                               (3 * per_epoch, run, "budget"),       # under 80% of it
                               (2 * per_epoch, vit_run, "not a hybrid run")):
        with pytest.raises(SystemExit) as e:
            K.main(common + ["--budget-flops", str(budget), "--import-run", f"b={imp}"])
        assert e.value.code == 2
        assert words in capsys.readouterr().err.strip().splitlines()[-1]
    for argv, words in ((["--variant", "x:patch_size=2"], "HybridConfig"),   # a ViT field
                        (["--variant", "x:widths=8/16"], "widths"),        # 2 widths, 3 depths
                        (["--budget-flops", "0"], "--budget-flops must be positive")):
        with pytest.raises(SystemExit):
            K.main(common + argv)
        assert words in capsys.readouterr().err.strip().splitlines()[-1]


def test_interrupted_row_says_how_to_finish_it(tmp_path, capsys, monkeypatch):
    """SIGINT in a row: exit 128 + signum with the resume and import commands, no
    traceback, and the table keeps only the rows that finished."""
    from minivit.errors import TrainingInterrupted

    def stopped(*args, out_dir, **kw):
        raise TrainingInterrupted("interrupted by signal 2 at epoch 1", signum=2,
                                  checkpoint=str(out_dir / "checkpoint.npz"))

    monkeypatch.setattr(K, "train", stopped)
    assert K.main(_common(tmp_path) + ["--variant", "x:label_smoothing=0"]) == 130
    out = capsys.readouterr().out.strip().splitlines()[-1]
    run = tmp_path / "runs" / "knob_ablation_t" / "x"
    assert f"--out {run} --resume" in out and f"--import-run x={run}" in out
    path = tmp_path / "knob_ablation_t.json"
    assert not path.exists() or json.loads(path.read_text())["runs"] == []
