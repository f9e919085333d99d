"""benchmarks/recipe_curves.py: reads the evaluated epochs of metrics.jsonl files, draws
both panels, and names the file when one is missing or unusable."""
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import recipe_curves as R  # noqa: E402


def _run(folder, lines):
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
    return folder


def test_only_evaluated_epochs_are_read(tmp_path):
    run = _run(tmp_path / "a", [
        {"epoch": 1, "train_flops": 1e13, "elapsed_s": 60, "test_acc": None},
        {"epoch": 2, "train_flops": 2e13, "elapsed_s": 150, "test_acc": 0.5},
        {"epoch": 3, "train_flops": 3e13, "elapsed_s": 240, "test_acc": 0.625}])
    assert R.read_curve(run) == {"flops": [2e13, 3e13], "minutes": [2.5, 4.0], "acc": [50.0, 62.5],
                                 "epoch": [2, 3], "ema": [None, None], "train_acc": [None, None]}


def test_the_committed_runs_draw(tmp_path, capsys):
    out = tmp_path / "c.png"
    assert R.main(["--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
    # the 60-minute recipe ends at its recorded 77.46%, the sine-cosine variant at 76.72%
    out = capsys.readouterr().out
    assert "60-min recipe (28 ep): 77.46% after 3.26e+14 FLOP" in out
    assert "60-min recipe + sincos2d (28 ep): 76.72% after 3.26e+14 FLOP" in out


@pytest.mark.parametrize("lines, message", [
    (None, "no such file"),
    ([{"epoch": 1, "test_acc": 0.5, "elapsed_s": 3}], "without train_flops"),
    ([{"epoch": 1, "test_acc": None, "train_flops": 1, "elapsed_s": 3}], "no evaluated epoch")])
def test_bad_run_is_one_line_error(tmp_path, capsys, lines, message):
    folder = tmp_path / "r"
    if lines is not None:
        _run(folder, lines)
    with pytest.raises(SystemExit) as e:
        R.main(["--run", f"x={folder}", "--out", str(tmp_path / "o.png")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and str(folder) in err
