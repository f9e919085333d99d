"""Interruptions lose nothing: SIGINT, ``kill -9`` mid-epoch, crashes while writing.

Real subprocesses run the training CLI on a small synthetic set (tests/test_train.py
covers SIGTERM; here SIGINT and SIGKILL). Checkpoint writes are interrupted both
in-process (np.savez raising half-way, a KeyboardInterrupt mid-write) and by killing a
process that writes checkpoints in a loop.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minivit import ViT, ViTConfig
from minivit.checkpoint import (
    atomic_write_npz, load_checkpoint, require_training_state, save_checkpoint,
)
from minivit.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["train", "--synthetic", "--limit-train", "256", "--limit-test", "64",
        "--image-size", "8", "--patch-size", "4", "--dim", "16", "--depth", "1",
        "--heads", "2", "--mlp-dim", "16", "--epochs", "12", "--batch-size", "8",
        "--backend", "numpy", "--no-progress"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "minivit", *args], capture_output=True,
                          text=True, timeout=timeout, env=ENV, cwd=ROOT)


def _start(*args):
    return subprocess.Popen([sys.executable, "-m", "minivit", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)


def _wait_for(path: Path, proc, timeout=60):
    deadline = time.time() + timeout
    while not path.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)


def _temps(d: Path):
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp"))


def _same_params(a: Path, b: Path):
    pa, pb = load_checkpoint(a)["params"], load_checkpoint(b)["params"]
    assert pa.keys() == pb.keys()
    for k in pa:
        assert np.array_equal(pa[k], pb[k]), k


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The uninterrupted run every interrupted one must reproduce bit for bit."""
    out = tmp_path_factory.mktemp("ref")
    r = _cli(*ARGS, "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out / "checkpoint.npz"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_writes_checkpoint_mid_epoch_and_resume_matches(tmp_path, reference_run, signum):
    """Ctrl-C (SIGINT) and SIGTERM: a checkpoint at the batch, exit 128 + signal, and the
    resumed run ends bit-identical to an uninterrupted one."""
    out = tmp_path / "int"
    p = _start(*ARGS, "--out", str(out))
    _wait_for(out / "checkpoint.npz", p)                 # epoch 1 done: we are in epoch 2
    time.sleep(0.01)
    p.send_signal(signum)
    stdout, stderr = p.communicate(timeout=60)
    if p.returncode == 0:
        pytest.skip("run finished before the signal arrived (machine too fast)")
    assert p.returncode == 128 + signum, stderr
    assert f"interrupted by signal {int(signum)}" in stdout + stderr
    assert "Traceback" not in stderr
    meta = load_checkpoint(out / "checkpoint.npz")["meta"]
    assert meta["epoch"] >= 1                          # the finished epochs are kept …
    assert 0 <= meta["batch"] < 32                     # … and the batch it stopped at
    assert _temps(out) == []
    r = _cli(*ARGS, "--out", str(out), "--resume")
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stdout
    _same_params(reference_run, out / "checkpoint.npz")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == list(range(1, 13))


def _inode(path: Path):
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def test_sigkill_mid_epoch_loses_at_most_that_epoch_and_resume_matches(tmp_path,
                                                                       reference_run):
    """Three times: run (or resume), wait for a fresh checkpoint, kill -9 a moment later
    (no handler runs). Each time the checkpoint on disk is complete and holds every
    epoch the run reported finished but the last; the final resume ends bit-identical
    to the uninterrupted run."""
    out = tmp_path / "kill"
    ck_path = out / "checkpoint.npz"
    rng = np.random.default_rng(1)
    kills = 0
    for round_ in range(3):
        before = _inode(ck_path)
        p = _start(*ARGS, "--out", str(out), *(["--resume"] if round_ else []))
        deadline = time.time() + 60
        while _inode(ck_path) == before and p.poll() is None and time.time() < deadline:
            time.sleep(0.005)                          # a new epoch's checkpoint appeared
        time.sleep(float(rng.uniform(0.0, 0.08)))      # somewhere inside the next epoch
        p.kill()
        stdout, _ = p.communicate(timeout=60)
        if p.returncode == 0:
            break                                      # it finished first: fine, compare
        kills += 1
        assert p.returncode == -signal.SIGKILL
        logged = [int(line.split()[1].split("/")[0]) for line in stdout.splitlines()
                  if line.startswith("epoch ")]
        ck = load_checkpoint(ck_path)                  # always a complete, valid file
        require_training_state(ck, ck_path)
        # every epoch reported finished is in the checkpoint, except possibly the one
        # whose checkpoint was being written at the kill: at most one epoch is lost
        assert ck["meta"]["epoch"] >= max(logged) - 1 >= 0, (ck["meta"]["epoch"], logged)
        assert ck["meta"]["batch"] == 0
    if kills == 0:
        pytest.skip("the run always finished before the kill (machine too fast)")
    r = _cli(*ARGS, "--out", str(out), "--resume")
    assert r.returncode == 0, r.stderr
    _same_params(reference_run, ck_path)
    assert _temps(out) == []                           # a killed write's temp is gone
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == list(range(1, 13))


# ---------------------------------------------------------------------- checkpoint writes
CFG = ViTConfig(image_size=8, patch_size=4, dim=8, depth=1, heads=2, mlp_dim=8, num_classes=3)


def test_savez_failing_half_way_keeps_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, ViT(CFG, seed=1), epoch=1)
    before = path.read_bytes()
    real_savez = np.savez

    def half_then_fail(file, **arrays):
        real_savez(file, **dict(list(arrays.items())[:3]))    # some bytes hit the disk
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("minivit.checkpoint.np.savez", half_then_fail)
    with pytest.raises(CheckpointError, match=r"cannot write .*checkpoint\.npz.*No space"):
        save_checkpoint(path, ViT(CFG, seed=2), epoch=2)
    assert path.read_bytes() == before                 # the old file, untouched
    assert load_checkpoint(path)["meta"]["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.npz"]      # no temp left


def test_interrupt_during_write_keeps_old_checkpoint(tmp_path, monkeypatch):
    """A second Ctrl-C raises KeyboardInterrupt wherever the trainer is, even mid-write."""
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, ViT(CFG, seed=1), epoch=1)
    before = path.read_bytes()
    real_savez = np.savez

    def interrupted(file, **arrays):
        real_savez(file, **arrays)
        raise KeyboardInterrupt

    monkeypatch.setattr("minivit.checkpoint.np.savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, ViT(CFG, seed=2), epoch=2)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.npz"]


def test_fresh_write_failing_leaves_nothing(tmp_path, monkeypatch):
    def fail(file, **arrays):
        file.write(b"PK\x03\x04 partial")
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("minivit.checkpoint.np.savez", fail)
    with pytest.raises(CheckpointError, match="Input/output error"):
        atomic_write_npz(tmp_path / "new.npz", {"a": np.zeros(3)})
    assert os.listdir(tmp_path) == []


def test_checkpoint_gets_ordinary_file_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        atomic_write_npz(tmp_path / "a.npz", {"a": np.zeros(2)})
        # mkstemp's private 0o600 is not what a user expects of a results file
        assert (tmp_path / "a.npz").stat().st_mode & 0o777 == 0o644
        os.chmod(tmp_path / "a.npz", 0o640)            # an existing file keeps its mode
        atomic_write_npz(tmp_path / "a.npz", {"a": np.ones(2)})
        assert (tmp_path / "a.npz").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(mask)


def test_stale_temp_of_dead_writer_is_removed_live_one_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)
    stale = tmp_path / f".ck.npz.{dead.pid}.abcd.tmp"
    live = tmp_path / f".ck.npz.{os.getppid()}.efgh.tmp"     # our parent is alive
    other = tmp_path / ".other.npz.1.x.tmp"
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    atomic_write_npz(tmp_path / "ck.npz", {"a": np.zeros(2)})
    assert not stale.exists() and live.exists() and other.exists()


WRITER = """
import sys, numpy as np
from minivit.checkpoint import atomic_write_npz
path = sys.argv[1]
rng = np.random.default_rng(0)
big = rng.standard_normal((1024, 1024)).astype(np.float32)     # 4 MB: writes take a while
i = 0
while True:
    i += 1
    atomic_write_npz(path, {"i": np.array(i), "big": big + i,
                            "first": np.array(float(big[0, 0]) + i),
                            "last": np.array(float(big[-1, -1]) + i)})
    print(i, flush=True)
"""


def test_kill_9_while_writing_checkpoints_in_a_loop(tmp_path):
    """SIGKILL at random moments of a write loop: checkpoint.npz is always a complete,
    consistent file, and temp files of killed writers do not accumulate."""
    path = tmp_path / "checkpoint.npz"
    rng = np.random.default_rng(0)
    last = 0
    for round_ in range(6):
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                             text=True, env=ENV, cwd=ROOT)
        try:
            p.stdout.readline()                        # at least one write completed
            time.sleep(float(rng.uniform(0.0, 0.15)))
        finally:
            p.kill()
            p.communicate(timeout=30)
        with np.load(path, allow_pickle=False) as z:   # complete, and self-consistent
            i = int(z["i"])
            assert float(z["big"][0, 0]) == pytest.approx(float(z["first"]), abs=1e-3)
            assert float(z["big"][-1, -1]) == pytest.approx(float(z["last"]), abs=1e-3)
        assert i >= 1
        last = i
        # at most one stray temp (of the writer just killed): earlier ones were cleaned
        assert len(_temps(tmp_path)) <= 1, _temps(tmp_path)
    assert last >= 1
    atomic_write_npz(path, {"i": np.array(0)})         # the next write cleans up
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.npz"]


# ---------------------------------------------------------------------- resume safety
def test_resume_state_is_checked_before_training(tmp_path):
    """A checkpoint without training state (a pretrain checkpoint, a bare model) cannot
    be resumed: the check names the missing fields."""
    save_checkpoint(tmp_path / "ck.npz", ViT(CFG))
    ck = load_checkpoint(tmp_path / "ck.npz")
    with pytest.raises(CheckpointError, match="not a training checkpoint.*settings"):
        require_training_state(ck, tmp_path / "ck.npz")


def test_train_resume_of_non_training_checkpoint_is_a_clear_error(tmp_path):
    from minivit.data.synthetic import make_synthetic
    from minivit.train import train
    save_checkpoint(tmp_path / "checkpoint.npz", ViT(CFG))
    data = make_synthetic(n_train=16, n_test=8, image_size=8, num_classes=3, seed=0)
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        train(CFG, data=data, out_dir=tmp_path, resume=True, progress=False,
              log=lambda *a: None, backend="numpy", batch_size=8)
