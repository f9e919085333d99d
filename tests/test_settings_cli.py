"""One source of settings: flags derived from the dataclasses, the same wording in every
subcommand, defaults in every help text; and what a first hour with the CLI needs
(issue 13: resume continues exactly the started run, an existing run is never replaced
silently, headers after resume, labelled synthetic results, --version, Ctrl-C in Python).
CLI cases run through the real entry point (``python -m minivit``)."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minivit import ViTConfig
from minivit.checkpoint import load_checkpoint
from minivit.cli import build_parser, main
from minivit.errors import ConfigError, TrainingInterrupted
from minivit.flags import field_docs
from minivit.settings import DataSettings, MPPSettings, TrainSettings

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
MODEL = ["--image-size", "8", "--patch-size", "4", "--dim", "16", "--depth", "1",
         "--heads", "2", "--mlp-dim", "16"]
RUN = ["--synthetic", "--limit-train", "32", "--limit-test", "16", "--batch-size", "8",
       "--backend", "numpy", "--no-progress"]
BACKEND_ERROR = "unknown backend 'tpu'; choose one of numpy, numba, cuda"


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "minivit", *args], capture_output=True,
                          text=True, timeout=120, env=ENV, cwd=ROOT)


def _flags(parser):
    return {a.dest: a for a in parser._actions if a.option_strings}


# ---------------------------------------------------------------------- derived flags
@pytest.mark.parametrize("cls", [ViTConfig, TrainSettings, DataSettings, MPPSettings])
def test_every_field_is_documented(cls):
    docs = field_docs(cls)
    missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
    assert not missing, f"{cls.__name__}: add 'name: text' lines to the docstring for {missing}"


def test_flags_are_derived_from_every_field():
    cmds = build_parser().commands
    train, pre, ft = (_flags(cmds[c]) for c in ("train", "pretrain", "finetune"))
    for cls in (ViTConfig, TrainSettings, DataSettings):
        assert {f.name for f in dataclasses.fields(cls)} <= set(train), cls
    from minivit.pretrain import NOT_USED
    want = {f.name for f in dataclasses.fields(TrainSettings)} - set(NOT_USED)
    assert want | {f.name for f in dataclasses.fields(MPPSettings)} <= set(pre)
    assert not set(NOT_USED) & set(pre)
    assert {f.name for f in dataclasses.fields(TrainSettings)} <= set(ft)
    # help text comes from the field's doc, with the default shown
    assert train["clip_norm"].help.startswith(field_docs(TrainSettings)["clip_norm"])
    assert "(default: 1.0)" in train["clip_norm"].help
    assert "(default: sgd)" in ft["optimizer"].help and "(default: adamw)" in pre["optimizer"].help


def test_every_flag_shows_its_default():
    """Every flag of every subcommand that has a default shows it in --help; the flags of
    train, pretrain and finetune all say what happens by default (also when unset)."""
    parser = build_parser()
    missing = []
    for name, sub in parser.commands.items():
        fmt = sub._get_formatter()
        for a in sub._actions:
            if not a.option_strings or a.dest == "help":
                continue
            if a.default in (None, False) and name not in ("train", "pretrain", "finetune"):
                continue
            text = fmt._expand_help(a) if a.help else ""
            if "default" not in text:
                missing.append(f"{name} {a.option_strings[0]}")
    assert not missing, missing


@pytest.mark.parametrize("argv", [
    ["train", "--backend", "tpu"], ["pretrain", "--backend", "tpu"],
    ["finetune", "x.npz", "--backend", "tpu"], ["eval", "x.npz", "--backend", "tpu"],
    ["predict", "x.npz", "y.png", "--backend", "tpu"],
    ["inspect", "x.npz", "--out", "o", "--backend", "tpu"]])
def test_backend_error_reads_the_same_everywhere(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"minivit {argv[0]}: error: argument --backend: {BACKEND_ERROR} " \
                  f"(see minivit {argv[0]} --help)", err


def test_python_api_uses_the_same_backend_wording():
    from minivit.backends import get_backend
    for f in (lambda: TrainSettings(backend="tpu").validate(), lambda: get_backend("tpu")):
        with pytest.raises(ConfigError) as e:
            f()
        assert str(e.value) == BACKEND_ERROR


def test_version():
    import minivit
    r = _cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"minivit {minivit.__version__}"


# ---------------------------------------------------------------------- resume (issue 13.1, 13.4)
def test_resume_takes_every_run_setting_from_the_checkpoint(tmp_path):
    """A run started with --synthetic --limit-train 32 and a custom model, resumed with
    nothing but --resume --epochs 2: same data, same model, and the header reports the
    settled model after the resume line."""
    out = str(tmp_path / "run")
    r = _cli("train", *MODEL, *RUN, "--epochs", "1", "--seed", "3", "--out", out)
    assert r.returncode == 0, r.stderr
    r = _cli("train", "--resume", "--epochs", "2", "--no-progress", "--out", out)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any("resumed from" in l and "batch 0/4" in l for l in lines), r.stdout
    header = next(i for i, l in enumerate(lines) if l.startswith("model:"))
    assert header > next(i for i, l in enumerate(lines) if "resumed from" in l)
    n = ViTConfig(image_size=8, patch_size=4, dim=16, depth=1, heads=2, mlp_dim=16).num_params()
    assert f"model: {n:,} parameters" in lines[header]
    assert "32 synthetic training images" in r.stdout
    meta = load_checkpoint(Path(out) / "checkpoint.npz")["meta"]
    assert meta["epoch"] == 2 and meta["settings"]["seed"] == 3
    assert meta["data_settings"] == {"synthetic": True, "limit_train": 32, "limit_test": 16,
                                     "data_folder": None}
    assert "synthetic set" in lines[-1]                   # 13.10: labelled synthetic


@pytest.mark.parametrize("flags,needle", [
    (["--limit-train", "64"], "--limit-train (run: 32, now: 64)"),
    (["--lr", "0.5"], "--lr (run: 0.001, now: 0.5)"),
    (["--dim", "32"], "--dim (run: 16, now: 32)"),
    (["--epochs", "0"], "epochs must be >= 1"),
])
def test_resume_refuses_a_different_run(tmp_path, flags, needle):
    out = str(tmp_path / "run")
    assert _cli("train", *MODEL, *RUN, "--epochs", "2", "--out", out).returncode == 0
    before = (Path(out) / "checkpoint.npz").read_bytes()
    args = ["train", "--resume", "--out", out]
    if "--dim" in flags:
        args += MODEL[:4]                       # the rest of the model as it was
    args += flags
    r = _cli(*args)
    assert r.returncode == 2 and needle in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert (Path(out) / "checkpoint.npz").read_bytes() == before


def test_existing_run_is_not_overwritten_without_being_asked(tmp_path):
    out = str(tmp_path / "run")
    assert _cli("train", *MODEL, *RUN, "--epochs", "1", "--out", out).returncode == 0
    before = (Path(out) / "checkpoint.npz").read_bytes()
    r = _cli("train", *MODEL, *RUN, "--epochs", "1", "--seed", "1", "--out", out)
    assert r.returncode == 2
    assert "already holds a finished 1-epoch run" in r.stderr and "--resume" in r.stderr
    assert (Path(out) / "checkpoint.npz").read_bytes() == before
    r = _cli("train", *MODEL, *RUN, "--epochs", "1", "--seed", "1", "--out", out, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert load_checkpoint(Path(out) / "checkpoint.npz")["meta"]["seed"] == 1


def test_extending_a_finished_run_follows_the_longer_schedule(tmp_path):
    from minivit.data.synthetic import make_synthetic
    from minivit.optim import LRSchedule
    from minivit.train import train
    data = make_synthetic(n_train=32, n_test=8, image_size=8, num_classes=3, seed=0)
    cfg = ViTConfig(image_size=8, patch_size=4, dim=8, depth=1, heads=2, mlp_dim=8, num_classes=3)
    kw = dict(data=data, out_dir=tmp_path, progress=False, log=lambda *a: None,
              backend="numpy", batch_size=8)
    first = train(cfg, epochs=2, **kw)
    assert len(first["history"]) == 2
    logs = []
    r = train(cfg, resume=True, epochs=3, **dict(kw, log=logs.append))
    assert [h["epoch"] for h in r["history"]] == [1, 2, 3]
    assert any("extending the run from 2 to 3 epochs" in l for l in logs)
    s = r["settings"]
    assert s.epochs == 3 and s.warmup_epochs == first["settings"].warmup   # warm-up kept
    sched = LRSchedule(s.lr, 3 * 4, int(round(s.warmup * 4)), s.schedule, s.min_lr)
    assert r["history"][2]["lr"] == pytest.approx(sched(11))
    assert r["history"][1]["lr"] == first["history"][1]["lr"]              # the past kept
    meta = load_checkpoint(tmp_path / "checkpoint.npz")["meta"]
    assert meta["extended_from"] == [2]
    with pytest.raises(ConfigError, match="shorter than the run's 3 epochs"):
        train(cfg, resume=True, epochs=2, **kw)


# ---------------------------------------------------------------------- messages (issue 13.10)
def test_finetune_prints_header_and_output(tmp_path):
    out = tmp_path / "pre"
    assert _cli("train", *MODEL, *RUN, "--epochs", "1", "--out", str(out)).returncode == 0
    r = _cli("finetune", str(out / "checkpoint.npz"), "--image-size", "12", *RUN,
             "--out", str(tmp_path / "ft"))
    assert r.returncode == 0, r.stderr
    assert "model:" in r.stdout and f"output in {tmp_path / 'ft'}/" in r.stdout
    assert "8px → 12px" in r.stdout and f"(outputs in {tmp_path / 'ft'}/)" in r.stdout


def test_pretrain_shows_a_progress_bar(tmp_path):
    r = _cli("pretrain", *MODEL, "--synthetic", "--limit", "16", "--batch-size", "8",
             "--backend", "numpy", "--out", str(tmp_path / "p"))
    assert r.returncode == 0, r.stderr
    assert "epoch 1/1" in r.stderr and "2/2" in r.stderr and "batch" in r.stderr


# ---------------------------------------------------------------------- Ctrl-C in Python (13.13)
def test_train_from_python_raises_keyboard_interrupt_with_the_resume_hint(tmp_path):
    from minivit.data.synthetic import make_synthetic
    from minivit.train import train
    data = make_synthetic(n_train=64, n_test=8, image_size=8, num_classes=3, seed=0)
    cfg = ViTConfig(image_size=8, patch_size=4, dim=8, depth=1, heads=2, mlp_dim=8, num_classes=3)
    kw = dict(data=data, out_dir=tmp_path, progress=False, backend="numpy", batch_size=8,
              epochs=3)

    def ctrl_c_after_first_epoch(line):
        if line.startswith("epoch 1/"):
            os.kill(os.getpid(), signal.SIGINT)       # as a user pressing Ctrl-C

    with pytest.raises(KeyboardInterrupt) as e:
        train(cfg, log=ctrl_c_after_first_epoch, **kw)
    assert isinstance(e.value, TrainingInterrupted) and e.value.signum == signal.SIGINT
    assert "resume=True" in str(e.value) and str(tmp_path) in str(e.value)
    assert len(e.value.result["history"]) == 1
    r = train(cfg, resume=True, log=lambda *a: None, **kw)
    assert [h["epoch"] for h in r["history"]] == [1, 2, 3]
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 3
    assert np.isfinite(r["history"][-1]["test_loss"])
