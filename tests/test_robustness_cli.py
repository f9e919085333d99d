"""Every subcommand, every flag out of range: a non-zero exit and one line
``minivit CMD: error: ...`` on stderr — never a traceback, never a usage dump.

Most cases call the dispatcher in-process (``minivit.cli.main``, exactly what
``python -m minivit`` runs) to keep the file fast; a sample runs as real subprocesses.
tests/test_train.py covers six train flags; these are the rest.
"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minivit import ViT, ViTConfig
from minivit.checkpoint import save_checkpoint
from minivit.cli import COMMANDS, build_parser, main
from minivit.data.cifar10 import CLASSES, DIR_NAME, META_FILE, RECORD_BYTES, TEST_FILE, TRAIN_FILES

ROOT = Path(__file__).resolve().parents[1]
CFG = ViTConfig(image_size=8, patch_size=4, dim=8, depth=1, heads=2, mlp_dim=8, num_classes=3)
TINY = ["--synthetic", "--no-progress", "--limit-train", "32", "--limit-test", "8",
        "--image-size", "8", "--patch-size", "4", "--dim", "8", "--depth", "1", "--heads", "2",
        "--mlp-dim", "8", "--batch-size", "8", "--epochs", "1", "--backend", "numpy"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A valid checkpoint, broken variants, images, a small CIFAR-10 directory."""
    d = tmp_path_factory.mktemp("cli")
    save_checkpoint(d / "ck.npz", ViT(CFG, seed=0), classes=["a", "b", "c"])
    good = (d / "ck.npz").read_bytes()
    (d / "truncated.npz").write_bytes(good[: len(good) // 2])
    (d / "notnpz.npz").write_bytes(b"hello, I am not a checkpoint\n")
    obj = np.empty(1, dtype=object)
    obj[0] = {"x": 1}
    np.savez(d / "object.npz", a=obj)
    from PIL import Image
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "ok.png")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    np.save(d / "nan.npy", np.full((8, 8, 3), np.nan, np.float32))
    (d / "a_file").write_text("x")
    (d / "bad.json").write_text("{ not json")
    rng = np.random.default_rng(0)
    cifar = d / "cifar" / DIR_NAME
    cifar.mkdir(parents=True)
    for name in TRAIN_FILES + (TEST_FILE,):
        rec = np.concatenate([rng.integers(0, 10, (10, 1)), rng.integers(0, 256, (10, RECORD_BYTES - 1))],
                             axis=1).astype(np.uint8)
        (cifar / name).write_bytes(rec.tobytes())
    (cifar / META_FILE).write_text("\n".join(CLASSES))
    return d


def test_every_subcommand_is_covered():
    """New subcommands must get cases here (the list below names them all)."""
    listed = {name for name, *_ in COMMANDS}
    built = set(build_parser().commands)
    covered = {argv[0] for argv, _ in CASES}
    assert built <= listed and built <= covered, built - covered


# (argv with {d} for the fixture directory, a substring of the one-line message)
_RAW = [
    # ------------------------------------------------------------------ train
    ["train", *TINY, "--epochs", "0"], "epochs must be >= 1",
    ["train", *TINY, "--epochs", "abc"], "invalid int value: 'abc'",
    ["train", *TINY, "--batch-size", "-5"], "batch size must be >= 1",
    ["train", *TINY, "--batch-size", "64"], "larger than the training set",
    ["train", *TINY, "--rand-augment", "x"], "rand_augment must be N,M",
    ["train", *TINY, "--rand-augment", "1,2,3"], "rand_augment must be N,M",
    ["train", *TINY, "--rand-augment=-1,5"], "rand_augment",
    ["train", *TINY, "--rand-augment", "2,99"], "magnitude",
    ["train", *TINY, "--limit-train", "-3"], "limit_train must be >= 1",
    ["train", *TINY, "--limit-test", "0"], "limit_test must be >= 1",
    ["train", *TINY, "--dtype", "float16"], "dtype must be float32 or float64",
    ["train", *TINY, "--optimizer", "lion"], "optimizer must be adamw or sgd, got 'lion'",
    ["train", *TINY, "--schedule", "step"], "schedule must be cosine, linear or constant",
    ["train", *TINY, "--mixup", "-1"], "mixup and cutmix alphas must be >= 0",
    ["train", *TINY, "--cutmix", "-0.5"], "mixup and cutmix alphas must be >= 0",
    ["train", *TINY, "--mix-prob", "2"], "mix_prob must lie in [0, 1]",
    ["train", *TINY, "--lr", "nan"], "lr must be > 0",
    ["train", *TINY, "--lr", "inf"], "lr must be > 0",
    ["train", *TINY, "--min-lr", "1"], "min_lr must lie in",
    ["train", *TINY, "--weight-decay", "-1"], "weight decay must be >= 0",
    ["train", *TINY, "--momentum", "1"], "momentum must lie in [0, 1)",
    ["train", *TINY, "--warmup-epochs", "99"], "warmup epochs must lie in",
    ["train", *TINY, "--clip-norm", "-1"], "clip norm must be >= 0",
    ["train", *TINY, "--label-smoothing", "1"], "label smoothing must lie in",
    ["train", *TINY, "--crop-padding", "-1"], "crop padding must be >= 0",
    ["train", *TINY, "--crop-mode", "edge"], "crop mode must be zero or reflect, got 'edge'",
    ["train", *TINY, "--crop-padding", "8", "--crop-mode", "reflect"],
    "crop mode reflect needs crop padding < image size 8, got 8",
    ["train", *TINY, "--seed", "-1"], "seed must be an int >= 0",
    ["train", *TINY, "--eval-every", "0"], "eval_every must be an int >= 1",
    ["train", *TINY, "--heads", "3"], "not divisible by heads=3",
    ["train", *TINY, "--stride", "0"], "stride must be a positive integer",
    ["train", *TINY, "--stride", "3"], "not divisible by the stride",
    ["train", *TINY, "--image-size", "0"], "image_size must be a positive integer",
    ["train", *TINY, "--num-classes", "0"], "num_classes must be a positive integer",
    ["train", *TINY, "--head-type", "mlp"], "head_type must be one of",
    ["train", *TINY, "--gelu", "relu"], "gelu must be one of",
    ["train", *TINY, "--pos-embed", "sin"], "pos_embed must be one of",
    ["train", *TINY, "--resume", "--out", "{d}/no-run"], "--resume: no checkpoint",
    ["train", *TINY, "--out", "{d}/a_file"], "a_file",                 # out is a file
    ["train", "--no-progress", "--data-dir", "{d}/a_file", "--epochs", "1"], "truncated or corrupt",
    ["train", "--no-progress", "--data-dir", "{d}/cifar", "--epochs", "1"], "expected 50000",
    ["train", *TINY, "--bogus"], "unrecognized arguments: --bogus",
    # ------------------------------------------------------------------ eval
    ["eval", "{d}/missing.npz"], "checkpoint not found",
    ["eval", "{d}"], "is a directory",
    ["eval", "{d}/notnpz.npz"], "not an .npz file",
    ["eval", "{d}/truncated.npz"], "truncated.npz",
    ["eval", "{d}/object.npz"], "object array",
    ["eval", "{d}/ck.npz", "--batch-size", "0"], "--batch-size must be >= 1",
    ["eval", "{d}/ck.npz", "--limit", "-1"], "--limit must be >= 1",
    ["eval", "{d}/ck.npz", "--backend", "tpu"], "unknown backend 'tpu'",
    ["eval", "{d}/ck.npz", "--backend", "numpy"], "cannot be evaluated on CIFAR-10",
    # ------------------------------------------------------------------ predict
    ["predict", "{d}/missing.npz", "{d}/ok.png"], "checkpoint not found",
    ["predict", "{d}/truncated.npz", "{d}/ok.png"], "truncated.npz",
    ["predict", "{d}/object.npz", "{d}/ok.png"], "object array",
    ["predict", "{d}/ck.npz", "{d}/missing.png"], "image not found",
    ["predict", "{d}/ck.npz", "{d}/corrupt.png"], "corrupt.png: not a readable image",
    ["predict", "{d}/ck.npz", "{d}/nan.npy"], "expected an (H, W, 3) uint8 array",
    ["predict", "{d}/ck.npz", "{d}/ok.png", "--top", "0"], "--top must be >= 1",
    ["predict", "{d}/ck.npz", "{d}/ok.png", "--top", "x"], "invalid int value",
    ["predict", "{d}/ck.npz", "{d}/ok.png", "--backend", "tpu"], "unknown backend 'tpu'",
    ["predict", "{d}/ck.npz"], "the following arguments are required: images",
    # ------------------------------------------------------------------ inspect
    ["inspect", "{d}/missing.npz", "--out", "{d}/i"], "checkpoint not found",
    ["inspect", "{d}/notnpz.npz", "--out", "{d}/i"], "not an .npz file",
    ["inspect", "{d}/ck.npz", "--out", "{d}/i", "--images", "0"], "--images must be >= 1",
    ["inspect", "{d}/ck.npz", "--out", "{d}/i", "--backend", "tpu"], "unknown backend 'tpu'",
    ["inspect", "{d}/ck.npz"], "the following arguments are required: --out",
    # ------------------------------------------------------------------ finetune
    ["finetune", "{d}/missing.npz", "--out", "{d}/f"], "checkpoint not found",
    ["finetune", "{d}/object.npz", "--out", "{d}/f"], "object array",
    ["finetune", "{d}/ck.npz", "--out", "{d}/f", "--limit", "-1"], "limit_train must be",
    ["finetune", "{d}/ck.npz", "--out", "{d}/f", "--image-size", "-8"], "image_size must be",
    ["finetune", "{d}/ck.npz", "--out", "{d}/f", "--num-classes", "-1"], "num_classes must be",
    ["finetune", "{d}/ck.npz", "--out", "{d}/f", "--data-dir", "{d}/cifar", "--limit", "16",
     "--epochs", "0"], "epochs must be >= 1",
    ["finetune", "{d}/ck.npz", "--out", "{d}/f", "--data-dir", "{d}/cifar", "--limit", "16",
     "--batch-size", "0"], "batch size must be >= 1",
    ["finetune", "{d}/ck.npz", "--out", "{d}/f", "--data-dir", "{d}/cifar", "--limit", "16",
     "--lr", "-1"], "lr must be > 0",
    ["finetune", "{d}/ck.npz", "--out", "{d}/f", "--backend", "tpu"], "unknown backend 'tpu'",
    ["finetune", "{d}/ck.npz", "--out", "{d}/f", "--data-dir", "{d}/cifar", "--limit", "16",
     "--batch-size", "8", "--num-classes", "2"], "train labels must lie in [0, 1]",
    # ------------------------------------------------------------------ pretrain
    ["pretrain", "--synthetic", "--out", "{d}/p", "--epochs", "0"], "epochs must be >= 1",
    ["pretrain", "--data-dir", "/nonexistent", "--out", "{d}/p", "--epochs", "0"], "epochs must be >= 1",
    ["pretrain", "--synthetic", "--out", "{d}/p", "--batch-size", "0"], "batch size must be >= 1",
    ["pretrain", "--synthetic", "--out", "{d}/p", "--limit", "-1"], "limit_train must be >= 1",
    ["pretrain", "--synthetic", "--out", "{d}/p", "--limit", "8", "--lr", "-1"], "lr must be > 0",
    ["pretrain", "--synthetic", "--out", "{d}/p", "--limit", "8", "--weight-decay", "-1"], "weight decay must be >= 0",
    ["pretrain", "--synthetic", "--out", "{d}/p", "--limit", "8", "--warmup-epochs", "-1"], "warmup epochs must lie in",
    ["pretrain", "--synthetic", "--out", "{d}/p", "--limit", "8", "--mask-ratio", "0"], "mask_ratio must lie in",
    ["pretrain", "--synthetic", "--out", "{d}/p", "--preset", "nope"], "unknown preset 'nope'",
    ["pretrain", "--synthetic", "--out", "{d}/p", "--backend", "tpu"], "unknown backend 'tpu'",
    ["pretrain", "--synthetic", "--out", "{d}/p", "--rand-augment", "2,9"], "unrecognized arguments: --rand-augment",
    # ------------------------------------------------------------------ attention-example
    ["attention-example", "--decimals", "-1"], "--decimals must be an integer",
    ["attention-example", "--x", "1,2;3"], "ragged rows",
    ["attention-example", "--file", "{d}/missing.json"], "missing.json",
    ["attention-example", "--file", "{d}/bad.json"], "bad.json",
    ["attention-example", "--example", "nope"], "unknown example 'nope'",
    ["attention-example", "--scale", "abc"], "scale",
    ["attention-example", "--rounding", "up"], "invalid choice: 'up'",
    # ------------------------------------------------------------------ dispatcher
    ["nope"], "invalid choice: 'nope'",
]
CASES = list(zip(_RAW[0::2], _RAW[1::2]))


def _fill(argv, d):
    return [a.replace("{d}", str(d)) for a in argv]


def _check(rc, err, argv, needle):
    lines = err.strip().splitlines()
    assert rc != 0, (argv, err)
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    cmd = argv[0] if argv[0] in {c for c, *_ in COMMANDS} else None
    assert lines[0].startswith(f"minivit {cmd}: error: " if cmd else "minivit: error: "), lines[0]
    assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize("argv, needle", [
    pytest.param(argv, needle, id=f"{argv[0]}:{' '.join(a for a in argv[1:] if a not in TINY)}")
    for argv, needle in CASES])
def test_bad_input_exits_nonzero_with_one_line(files, capsys, argv, needle):
    argv = _fill(argv, files)
    rc = main(argv)
    _check(rc, capsys.readouterr().err, argv, needle)


def _run(*argv, **kw):
    return subprocess.run([sys.executable, "-m", "minivit", *argv], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, **kw)


@pytest.mark.parametrize("argv, needle", [
    (["train", "--epochs", "abc"], "invalid int value"),
    (["eval", "{d}/truncated.npz"], "truncated.npz"),
    (["predict", "{d}/ck.npz", "{d}/corrupt.png"], "not a readable image"),
    (["train", *TINY, "--out", "{d}/a_file"], "a_file"),
])
def test_real_subprocess_one_line(files, argv, needle):
    argv = _fill(argv, files)
    r = _run(*argv)
    _check(r.returncode, r.stderr, argv, needle)
    assert r.returncode == 2


def test_predict_works_on_good_input(files, capsys):
    assert main(["predict", str(files / "ck.npz"), str(files / "ok.png"), "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "ok.png" in out and out.count("%") == 2


def test_closed_stdout_pipe_is_not_a_traceback():
    p = subprocess.Popen([sys.executable, "-m", "minivit", "attention-example"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.readline()
    p.stdout.close()                                   # like `| head -1`
    err = p.stderr.read().decode()
    p.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert p.returncode in (0, 141)


def test_help_still_prints_full_usage(capsys):
    assert main(["train", "--help"]) == 0
    assert "--rand-augment" in capsys.readouterr().out


def _limit_memory():                                   # runs in the child before exec
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (3 * 1024 ** 3, 3 * 1024 ** 3))


@pytest.mark.parametrize("flags", [["--depth", "1000000000"], ["--dim", "100000000"]])
def test_absurd_model_sizes_fail_in_one_line(tmp_path, flags):
    """Model sizes far beyond memory end in one line, exit 2, not in a traceback or the
    OOM killer. (The child runs under a 3 GB address-space limit, so that a regression
    cannot take the machine's memory with it.)"""
    r = _run("train", *TINY, *flags, "--out", str(tmp_path / "o"), preexec_fn=_limit_memory)
    _check(r.returncode, r.stderr, ["train"], "")
    assert r.returncode == 2
