"""Data-parallel training over MPI: each test launches ``mpirun -n 2`` (MPICH from the
``mpi`` extra) on a tiny model; every launch takes a few seconds.

What K = 2 must equal: rank r computes the gradient g_r of the mean loss over its half of
the global batch, and the all-reduce leaves (g_0 + g_1)/2 on both ranks. With two ranks
that sum is one IEEE addition, so replaying the same two half-batch gradients in one
process reproduces it bit for bit, in float32 and float64 alike. A one-process run on the
full batch sums the B per-image terms in another order, so it differs by rounding only:
after 8 training steps float64 parameters (AdamW) agree to 1e-10 (measured 3e-14), float32
ones (SGD) to 1e-6 (measured 7e-8), and a float32 gradient to 1e-5 of the largest one
(measured 6e-7). (Adam divides by √v, which blows float32 rounding in a near-zero
gradient up to a step of order lr, so float32 parameters are compared after SGD, whose
step is linear in the gradient.)
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mpi_common import CFG, DATA, FAST  # noqa: E402

from minivit import distributed  # noqa: E402
from minivit.checkpoint import load_checkpoint  # noqa: E402
from minivit.provenance import code_commit  # noqa: E402
from minivit.train import TrainSettings, train  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKER = HERE / "mpi_worker.py"
# the launcher installed with the mpi extra, beside this Python
MPIRUN = shutil.which("mpirun", path=str(Path(sys.executable).parent)) or shutil.which("mpirun")
# the CLI run of the failure and launch tests: same model and data as mpi_common
CLI = ["-m", "minivit.cli", "train", "--synthetic", "--limit-train", "64", "--limit-test", "24",
       "--image-size", "8", "--patch-size", "4", "--dim", "16", "--depth", "2", "--heads", "2",
       "--mlp-dim", "32", "--num-classes", "4", "--epochs", "2", "--backend", "numpy",
       "--warmup-epochs", "0.5", "--no-progress"]


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    # one BLAS thread per rank: 2 ranks on 2 cores, and a reproducible reduction order
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1", MINIVIT_MPI_TIMEOUT="60")
    # this process is not a rank; keep the launcher's variables from leaking in
    for k in list(env):
        if k.startswith(("PMI_", "OMPI_", "PMIX_")):
            del env[k]
    # harmless for MPICH; lets an Open MPI mpirun run as root in CI containers
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.update(extra)
    return env


def mpirun(args, n=2, timeout=120, **env):
    """Run ``mpirun -n n python ARGS``; returns (returncode, stdout, stderr, seconds)."""
    assert MPIRUN, "mpirun not found: install the mpi extra (pip install -e '.[mpi]')"
    cmd = [MPIRUN, "-n", str(n)] + [sys.executable] + [str(a) for a in args]
    t = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(**env),
                       cwd=ROOT)
    return p.returncode, p.stdout, p.stderr, time.monotonic() - t


def _train_at_k2(tmp, **kw):
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "settings.json").write_text(json.dumps(kw))
    rc, out, err, _ = mpirun([WORKER, "train", tmp])
    assert rc == 0, err
    return dict(np.load(tmp / "params.npz")), json.loads((tmp / "history.json").read_text())


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def test_allreduce_is_the_mean_of_the_shard_gradients(tmp_path):
    rc, out, err, _ = mpirun([WORKER, "exact", tmp_path])
    assert rc == 0, err
    r = json.loads((tmp_path / "exact.json").read_text())
    for dtype in ("float32", "float64"):
        assert r[dtype]["moved"] > 1e-3                 # the three steps did move the weights
        assert r[dtype]["vs_two_halves"] == 0.0         # bit-identical to (g_0 + g_1) / 2
    assert r["float64"]["vs_full_batch"] < 1e-10
    assert r["float64"]["grad_rel_vs_full_batch"] < 1e-13
    assert r["float32"]["grad_rel_vs_full_batch"] < 1e-5


@pytest.mark.parametrize("dtype,optimizer,clip,tol", [("float64", "adamw", 0.5, 1e-10),
                                                       ("float32", "sgd", 0.0, 1e-6)])
def test_k2_matches_k1_after_training(tmp_path, dtype, optimizer, clip, tol):
    """train() from Python at K = 2 (4 steps an epoch, 2 epochs, mixup, label smoothing)
    ends with the parameters and the history of the one-process run: with clipping at
    the global norm (AdamW), and without (SGD, whose step scales with the gradient, so a
    sum left undivided by K would show)."""
    kw = dict(FAST, epochs=2, dtype=dtype, optimizer=optimizer, clip_norm=clip,
              lr=0.05 if optimizer == "sgd" else FAST["lr"])
    p2, h2 = _train_at_k2(tmp_path / "k2", **kw)
    r1 = train(CFG, data=DATA, out_dir=tmp_path / "k1", progress=False, log=lambda *a: None, **kw)
    p1 = r1["model"].state_dict()
    start = r1["model"].__class__(CFG, seed=0).state_dict()
    assert _max_diff(p1, start) > 100 * tol             # training moved the weights
    assert _max_diff(p1, p2) < tol
    for a, b in zip(r1["history"], h2):
        assert a["step"] == b["step"]
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-6
        assert a["train_acc"] == b["train_acc"]
        assert a["test_acc"] == b["test_acc"]
    # rank 0 alone wrote the outputs, and they are complete
    run = tmp_path / "k2" / "run"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    # rank 0, the writer, asked git which code trained the run (the others do not)
    assert [row["commit"] for row in lines] == [code_commit()] * 2
    assert load_checkpoint(run / "checkpoint.npz")["meta"]["epoch"] == 2
    assert (run / "curves.png").stat().st_size > 1000


def test_k2_matches_k1_with_dropout_drop_path_patch_dropout_and_ema(tmp_path):
    """Each rank draws the dropout / stochastic-depth masks and the kept patch tokens of
    its shard only, keyed by (seed, step) and each image's row in the global batch: K = 2
    trains the one-process run (to rounding), and the weight average is updated,
    evaluated and saved as at K = 1."""
    knobs = dict(dropout=0.2, drop_path=0.3, patch_keep=0.5)
    kw = dict(FAST, epochs=2, dtype="float64", ema_decay=0.9)
    p2, h2 = _train_at_k2(tmp_path / "k2", config=knobs, **kw)
    r1 = train(CFG.replace(**knobs), data=DATA, out_dir=tmp_path / "k1", progress=False,
               log=lambda *a: None, **kw)
    assert _max_diff(r1["model"].state_dict(), p2) < 1e-10
    plain = train(CFG, data=DATA, progress=False, log=lambda *a: None, **kw)
    assert _max_diff(plain["model"].state_dict(), p2) > 1e-3    # the masks did act
    for a, b in zip(r1["history"], h2):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-9
        assert a["test_acc"] == b["test_acc"] and a["ema_test_acc"] == b["ema_test_acc"]
        assert a["train_flops"] == b["train_flops"]
    ema2 = load_checkpoint(tmp_path / "k2" / "run" / "checkpoint.npz")["ema"]
    assert _max_diff(r1["ema"].state_dict(), ema2) < 1e-10


def test_resume_across_k(tmp_path):
    """A checkpoint written at K = 2 resumes at K = 1, and one written at K = 1 resumes at
    K = 2 (through the command line): both end where the straight K = 1 run ends."""
    kw = dict(FAST, epochs=2, dtype="float64")
    straight = train(CFG, data=DATA, progress=False, log=lambda *a: None, **kw)["model"].state_dict()

    # K = 2 for epoch 1, then K = 1
    _train_at_k2(tmp_path / "a", **kw, stop_after_epochs=1)
    r = train(CFG, data=DATA, out_dir=tmp_path / "a" / "run", resume=True, progress=False,
              log=lambda *a: None)
    assert r["history"][-1]["epoch"] == 2
    assert _max_diff(r["model"].state_dict(), straight) < 1e-10

    # K = 1 for epoch 1, then K = 2 through `mpirun -n 2 minivit train --resume` (the
    # command line's data settings must be the run's: the synthetic set DATA is)
    train(CFG, synthetic=True, limit_train=64, limit_test=24, out_dir=tmp_path / "b",
          progress=False, log=lambda *a: None, settings=TrainSettings(**kw),
          stop_after_epochs=1)
    rc, out, err, _ = mpirun(CLI + ["--out", tmp_path / "b", "--resume"])
    assert rc == 0, err
    assert out.count("resumed from") == 1                # rank 0 alone prints
    assert out.count("epoch 2/2") == 1
    final = load_checkpoint(tmp_path / "b" / "checkpoint.npz")
    assert final["meta"]["epoch"] == 2
    assert _max_diff(final["params"], straight) < 1e-10


def test_finetune_at_k2_matches_k1(tmp_path):
    """`minivit finetune` runs the same loop through the same command-line layer: at K = 2
    it ends with the parameters of the one-process fine-tuning, and prints once."""
    train(CFG, synthetic=True, limit_train=64, limit_test=24, out_dir=tmp_path / "base",
          progress=False, log=lambda *a: None, **dict(FAST, epochs=1))
    args = ["-m", "minivit.cli", "finetune", tmp_path / "base", "--synthetic",
            "--limit-train", "64", "--limit-test", "24", "--epochs", "1", "--batch-size",
            "16", "--dtype", "float64", "--backend", "numpy", "--no-progress"]
    rc, out, err, _ = mpirun(args + ["--out", tmp_path / "k2"])
    assert rc == 0, err
    assert out.count("fine-tuning ") == 1 and out.count("final test accuracy") == 1, out
    p = subprocess.run([sys.executable] + [str(a) for a in args + ["--out", tmp_path / "k1"]],
                       capture_output=True, text=True, timeout=120, env=_env(), cwd=ROOT)
    assert p.returncode == 0, p.stderr
    k1, k2 = (load_checkpoint(tmp_path / k / "checkpoint.npz") for k in ("k1", "k2"))
    assert _max_diff(k1["params"], load_checkpoint(tmp_path / "base" / "checkpoint.npz")
                     ["params"]) > 1e-6                  # fine-tuning moved the weights
    assert _max_diff(k1["params"], k2["params"]) < 1e-10
    assert k1["meta"]["history"][-1]["test_acc"] == k2["meta"]["history"][-1]["test_acc"]


def _one_error_line(err):
    lines = [l for l in err.splitlines() if "error" in l.lower()]
    assert lines, err
    return lines[0], lines


def test_rank_failure_stops_the_job_with_one_line(tmp_path):
    """An exception on rank 1 in epoch 2 (step 5): every rank stops within seconds, one
    line names rank 1 and the cause, and epoch 1's checkpoint is intact."""
    out = tmp_path / "run"
    rc, _, err, secs = mpirun(CLI + ["--out", out, "--batch-size", "16"],
                              MINIVIT_MPI_FAULT="1:5")
    assert rc == 2, err
    line, lines = _one_error_line(err)
    assert len(err.strip().splitlines()) == 1, err
    assert "rank 1 of 2 failed at epoch 2, batch 2" in line
    assert "RuntimeError: injected failure" in line
    assert secs < 60
    ck = load_checkpoint(out / "checkpoint.npz")
    assert ck["meta"]["epoch"] == 1 and ck["meta"]["step"] == 4
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize("mode", ["hang", "exit"])
def test_dead_or_hung_rank_ends_the_job_in_bounded_time(tmp_path, mode):
    """Rank 1 hangs (then rank 0 gives up after MINIVIT_MPI_TIMEOUT = 3 s, names rank 1
    and aborts) or dies without a word (the launcher ends the job): no hang either way,
    and the last checkpoint is intact."""
    out = tmp_path / "run"
    rc, _, err, secs = mpirun(CLI + ["--out", out, "--batch-size", "16"],
                              MINIVIT_MPI_FAULT=f"1:5:{mode}", MINIVIT_MPI_TIMEOUT="3")
    assert rc != 0
    assert secs < 60
    if mode == "hang":
        line, _ = _one_error_line(err)
        assert "rank 1 did not reach epoch 2, batch 2 within 3 s" in line, err
    assert load_checkpoint(out / "checkpoint.npz")["meta"]["epoch"] == 1


@pytest.mark.parametrize("n,batch,message", [
    (2, 15, "batch size 15 does not split into 2 equal shards"),
    (3, 2, "batch size 2 is smaller than the 3 MPI ranks"),
])
def test_bad_launch_is_one_line(tmp_path, n, batch, message):
    rc, _, err, _ = mpirun(CLI + ["--out", tmp_path, "--batch-size", batch], n=n)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"minivit train: error: {message}"), err
    assert not (tmp_path / "checkpoint.npz").exists()


def test_masked_patch_prediction_is_refused_at_k2(tmp_path):
    """Pre-training's corruption plan copies patches across the whole batch, so it
    cannot be sharded: one line, before anything is written."""
    args = ["pretrain"] + CLI[CLI.index("train") + 1:] + ["--out", tmp_path,
                                                            "--batch-size", "16"]
    rc, _, err, _ = mpirun(CLI[:2] + args)
    assert rc == 2
    assert err.strip().splitlines() == [
        "minivit pretrain: error: masked patch prediction replaces patches by the "
        "embeddings of patches anywhere in the global batch; it cannot train "
        "data-parallel over 2 MPI ranks: run it as one process"], err
    assert not (tmp_path / "checkpoint.npz").exists()


def test_ranks_started_differently_are_refused(tmp_path):
    """MPMD launch where rank 1 gets another seed: refused before the first step."""
    cmd = [MPIRUN, "-n", "1", sys.executable] + CLI + ["--out", tmp_path, "--batch-size", "16"]
    cmd += [":", "-n", "1", sys.executable] + CLI + ["--out", tmp_path, "--batch-size", "16",
                                                     "--seed", "1"]
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120,
                       env=_env(), cwd=ROOT)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "minivit train: error: rank 1 of 2 was started with other settings, data or "
        "checkpoint than rank 0; every rank must run the same command on the same files"]


def test_single_process_communicator_is_the_identity():
    comm = distributed.Communicator()
    x, y = np.zeros((4, 8, 8, 3)), np.arange(4)
    assert comm.shard(x, y)[0] is x and comm.is_root and comm.size == 1
    assert comm.step_totals(1.5, 3, 4, None) == (1.5, 3, 4, None)


def test_ring_allreduce_model():
    # 2(K-1)/K · n/β + 2(K-1)·α: K = 2, 1 GB at 1 GB/s, no latency → 1 s
    assert distributed.ring_allreduce_seconds(1e9, 2, 1e9, 0.0) == pytest.approx(1.0)
    assert distributed.ring_allreduce_seconds(1e9, 1, 1e9, 1.0) == 0.0
    assert distributed.ring_allreduce_seconds(0, 4, 1e9, 1e-5) == pytest.approx(6e-5)
    assert distributed.allreduce_bytes(1000) == 4000


def test_ctrl_c_stops_every_rank_at_the_same_batch(tmp_path):
    """Ctrl-C to mpirun (which forwards SIGINT to the ranks): the ranks agree on the
    signal, stop after the same step, rank 0 writes a checkpoint at that batch, and the
    run resumes at K = 1."""
    import signal

    from minivit.data.synthetic import make_synthetic
    out = tmp_path / "run"
    args = list(CLI)
    args[args.index("--epochs") + 1] = "20"
    args[args.index("--limit-train") + 1] = "4000"           # 250 steps an epoch
    cmd = [MPIRUN, "-n", "2", sys.executable] + args + ["--out", str(out), "--batch-size", "16"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=_env(PYTHONUNBUFFERED="1"), cwd=ROOT)
    assert "model:" in p.stdout.readline()                  # rank 0 is about to train
    time.sleep(3)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, stderr
    assert stdout.count("interrupted by signal 2") == 1, stdout + stderr   # (at|after) epoch
    meta = load_checkpoint(out / "checkpoint.npz")["meta"]
    assert meta["step"] == 250 * meta["epoch"] + meta["batch"] > 0
    # the same synthetic set the command line made; finish the interrupted epoch at K = 1
    data = make_synthetic(n_train=4000, n_test=24, image_size=8, num_classes=4, seed=0)
    r = train(CFG, data=data, out_dir=out, resume=True, progress=False, log=lambda *a: None,
              stop_after_epochs=1)
    assert r["history"][-1]["epoch"] == meta["epoch"] + 1


def test_lone_failure_outside_a_step_names_the_rank(tmp_path):
    """Rank 1 alone fails before training (MPMD launch: only it asks for --resume, and
    there is no checkpoint): after the job-level agreement finds rank 0 still running,
    rank 1 prints one line naming itself and the cause and aborts the job."""
    base = [sys.executable] + CLI + ["--out", tmp_path, "--batch-size", "16"]
    cmd = [MPIRUN, "-n", "1"] + base + [":", "-n", "1"] + base + ["--resume"]
    t = time.monotonic()
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120,
                       env=_env(), cwd=ROOT)
    assert p.returncode != 0
    assert time.monotonic() - t < 60
    ours = [l for l in p.stderr.splitlines() if l.startswith("minivit")]
    assert ours == [f"minivit: error: rank 1 of 2: --resume: no checkpoint at "
                    f"{tmp_path / 'checkpoint.npz'}; aborting the MPI job"], p.stderr


def test_abort_never_returns(monkeypatch, capsys):
    """Should MPI_Abort return, `_abort` must not return into job()'s polling loop (which
    would print the line again): it prints one line and ends the process itself."""
    aborts, exits = [], []

    class ReturningComm:
        def Abort(self, code):
            aborts.append(code)               # returns, as MPI_Abort may

    def fake_exit(code):
        exits.append(code)
        raise SystemExit(code)

    c = object.__new__(distributed.MPICommunicator)
    c.rank, c.size, c.comm = 1, 2, ReturningComm()
    monkeypatch.setattr(distributed, "ABORT_GRACE_S", 0.0)
    monkeypatch.setattr(distributed.os, "_exit", fake_exit)
    with pytest.raises(SystemExit):
        c._abort("boom")
    assert capsys.readouterr().err.splitlines() == [
        "minivit: error: rank 1 of 2: boom; aborting the MPI job"]
    assert aborts == [2] and exits == [2]
