"""benchmarks/compare_runs.py: a run's accuracy minus a reference's at the same training
compute, the reference interpolated linearly between its evaluations and never
extrapolated; bad folders are one-line errors."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import compare_runs as C  # noqa: E402
from recipe_curves import read_curve  # noqa: E402


def _run(folder, rows):
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _row(epoch, flops, acc, ema=None):
    return dict(epoch=epoch, train_flops=flops, elapsed_s=60.0 * epoch, test_acc=acc,
                ema_test_acc=ema, train_acc=0.5)


def test_ahead_interpolates_by_flops_and_never_extrapolates(tmp_path, capsys):
    ref = _run(tmp_path / "ref", [_row(1, 1e13, None), _row(2, 2e13, 0.50, 0.40),
                                  _row(4, 4e13, 0.70, 0.80)])
    run = _run(tmp_path / "run", [_row(1, 1.5e13, 0.45), _row(2, 3e13, 0.62, 0.66),
                                  _row(3, 4e13, 0.72, 0.81), _row(4, 5e13, 0.75)])
    r, c = read_curve(run), read_curve(ref)
    d = C.ahead(r, c)
    # 1.5e13 is before the reference's first evaluation; 3e13 is half-way: 60%
    assert d[0] is None and d[3] is None
    assert d[1] == pytest.approx(2.0) and d[2] == pytest.approx(2.0)
    e = C.ahead(r, c, "ema")                    # reference EMA at 3e13: 60%
    assert e[0] is None and e[1] == pytest.approx(6.0) and e[2] == pytest.approx(1.0)
    assert e[3] is None                         # the run has no EMA figure there
    C.main([str(ref), str(run)])
    out = capsys.readouterr().out
    assert "+2.00" in out and "+6.00" in out and "–" in out


def test_missing_folder_is_one_line_error(tmp_path, capsys):
    ref = _run(tmp_path / "ref", [_row(1, 1e13, 0.5)])
    with pytest.raises(SystemExit):
        C.main([str(ref), str(tmp_path / "nowhere")])
    err = capsys.readouterr().err.strip().splitlines()
    assert "nowhere" in err[-1] and "no such file" in err[-1]
