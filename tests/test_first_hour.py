"""Issue 13, "a first hour without surprises": what a new user hit, each through the real
``python -m minivit`` entry point (as tests/test_robustness_cli.py does) or the public
Python API. Every test here failed before the fix it guards.

No test touches the network: a proxy on a closed local port makes any download attempt
fail at once, the way a machine without network does.
"""
import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minivit import ViT, ViTConfig
from minivit.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "cifar-10-binary.tar.gz").exists(),
                                reason=f"CIFAR-10 copy not found at {DATA}")
CIFAR_SHAPED = ViTConfig(image_size=32, patch_size=8, dim=8, depth=1, heads=2, mlp_dim=8,
                         num_classes=10)


def run(*argv, cwd=None, env=None):
    """``python -m minivit ARGV`` in a clean environment: no $MINIVIT_DATA_DIR, an empty
    cache and home under ``cwd``, downloads refused (proxy on a closed port)."""
    cwd = Path(cwd or ROOT)
    e = {k: v for k, v in os.environ.items() if k != "MINIVIT_DATA_DIR"}
    e.update(PYTHONPATH=str(ROOT), HOME=str(cwd / "home"), XDG_CACHE_HOME=str(cwd / "cache"),
             https_proxy="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9",
             HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "minivit", *map(str, argv)], cwd=cwd,
                          env=e, capture_output=True, text=True, timeout=300)


def one_error_line(r, cmd):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and lines[0].startswith(f"minivit {cmd}: error: "), r.stderr
    return lines[0]


# ---------------------------------------------------------------------- 2: install
def test_demo_installs_only_the_runtime(tmp_path):
    """`make demo` must not pull torch or Jupyter: its pip install has no extras."""
    r = subprocess.run(["make", "-n", "-C", str(ROOT), "demo", f"VENV={tmp_path}/v"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    installs = [line for line in r.stdout.splitlines() if "pip install" in line
                and "--upgrade pip" not in line]
    assert installs, r.stdout
    assert all("[" not in line and "torch" not in line for line in installs), installs
    assert any(re.search(r"install (-q )?-e \.$", line.strip()) for line in installs), installs
    # `make test` keeps the oracle and dev extras
    r = subprocess.run(["make", "-n", "-C", str(ROOT), "test", f"VENV={tmp_path}/v"],
                       capture_output=True, text=True, timeout=60)
    extras = re.search(r'-e "\.\[([a-z,]+)\]"', r.stdout)
    assert extras and {"dev", "oracle"} <= set(extras.group(1).split(",")), r.stdout


def test_readme_says_how_to_get_cpu_torch_and_a_plain_install():
    text = (ROOT / "README.md").read_text()
    assert "--index-url https://download.pytorch.org/whl/cpu" in text
    assert "pip install ." in text


def _third_party_imports():
    """Top-level names of the non-stdlib modules imported anywhere in minivit/."""
    names = set()
    for f in (ROOT / "minivit").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "minivit"}


def test_every_runtime_import_is_a_declared_dependency():
    """`pip install .` alone gives a working minivit: everything minivit/ imports (Pillow
    included) is in [project] dependencies, and torch is not imported at all. The one
    exception is an optional extra's package imported only where that feature runs
    (mpi4py: only under an MPI launcher), which says how to install it."""
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=!~ \[]", d)[0].lower() for d in project["dependencies"]}
    optional = {re.split(r"[<>=!~ \[]", d)[0].lower()
                for extra in ("mpi", "cuda") for d in project["optional-dependencies"].get(extra, [])}
    dist_of = {"PIL": "pillow"}
    imported = {dist_of.get(n, n).lower() for n in _third_party_imports()}
    assert "pillow" in imported and "torch" not in imported
    assert imported <= declared | optional, imported - declared - optional
    assert "mpi4py" in optional and "mpi4py" not in declared


# ---------------------------------------------------------------------- 3: data discovery
def test_no_data_anywhere_says_how_to_point_at_it(tmp_path):
    r = run("eval", "--backend", "numpy", cwd=tmp_path)
    line = one_error_line(r, "eval")
    assert "--data-dir" in line and "MINIVIT_DATA_DIR" in line, line
    assert str(tmp_path / "cache" / "minivit") in line      # where it looked


@pytest.mark.parametrize("cmd", [["eval", "--backend", "numpy"],
                                 ["train", "--epochs", "1", "--no-progress"]])
def test_data_dir_that_does_not_exist_is_not_downloaded_into(tmp_path, cmd):
    r = run(*cmd, "--data-dir", tmp_path / "nonexistent", "--out", tmp_path / "o", cwd=tmp_path)
    line = one_error_line(r, cmd[0])
    assert "nonexistent does not exist" in line and "download" not in line, line
    assert not (tmp_path / "nonexistent").exists()


# ---------------------------------------------------------------------- 5: MPP checkpoints
@pytest.fixture(scope="module")
def mpp_run(tmp_path_factory):
    """A real masked-patch-prediction run (one step of minivit.pretrain)."""
    from minivit.pretrain import pretrain
    d = tmp_path_factory.mktemp("mpp")
    imgs = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype(np.uint8)
    pretrain(CIFAR_SHAPED, imgs, epochs=1, batch_size=8, out=d, log=lambda *a: None)
    return d


@pytest.mark.parametrize("cmd", ["eval", "predict"])
def test_mpp_checkpoint_is_refused_naming_what_it_is(mpp_run, tmp_path, cmd):
    from PIL import Image
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "x.png")
    argv = [cmd, mpp_run / "checkpoint.npz"] + ([tmp_path / "x.png"] if cmd == "predict" else
                                                ["--data-dir", DATA, "--backend", "numpy"])
    line = one_error_line(run(*argv, cwd=tmp_path), cmd)
    assert "masked-patch-prediction checkpoint" in line and "minivit finetune" in line, line


# ---------------------------------------------------------------------- 6: default, run folders
def test_default_and_run_folders_are_accepted(tmp_path):
    """`default`, a bundled model's name and a run folder name a checkpoint everywhere
    (the commands share minivit.hub.resolve_checkpoint; `inspect default` runs in the
    item-8 test below, eval/predict of a run folder in tests/test_data_folder.py)."""
    from minivit.hub import resolve_checkpoint
    run_dir = tmp_path / "runs" / "demo"
    save_checkpoint(run_dir / "checkpoint.npz", ViT(CIFAR_SHAPED))
    assert resolve_checkpoint(run_dir) == run_dir / "checkpoint.npz"
    assert resolve_checkpoint("default").name == "cifar10-vit.npz"
    assert resolve_checkpoint("cifar10-vit") == resolve_checkpoint("default")
    r = run("inspect", run_dir, "--out", tmp_path / "j", "--images", "1", cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "j" / "attention_layer1.png").is_file(), r.stderr
    line = one_error_line(run("eval", tmp_path, cwd=tmp_path), "eval")
    assert "is a directory without a checkpoint.npz" in line


@needs_data
def test_eval_default_finds_data_like_make_and_writes_to_a_named_folder(tmp_path):
    """$MINIVIT_DATA_DIR (what `make` points at with --data-dir) is found; the bundled
    model's outputs go to runs/eval-cifar10-vit/, said on stdout, not into the cwd."""
    r = run("eval", "default", "--limit", "20", "--backend", "numpy", cwd=tmp_path,
            env={"MINIVIT_DATA_DIR": str(DATA)})
    assert r.returncode == 0, r.stderr
    out = tmp_path / "runs" / "eval-cifar10-vit"
    assert (out / "eval.json").is_file() and (out / "confusion.png").is_file()
    assert not (tmp_path / "eval.json").exists() and not (tmp_path / "confusion.png").exists()
    assert "runs/eval-cifar10-vit" in r.stdout and "test accuracy" in r.stdout
    assert "evaluating" in r.stderr                      # 13: a progress bar


# ---------------------------------------------------------------------- 8: inspect without data
def test_inspect_without_data_says_synthetic_and_names_the_flag(tmp_path):
    r = run("inspect", "default", "--out", tmp_path / "i", "--images", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "SYNTHETIC" in r.stdout and "--data-dir" in r.stdout and "MINIVIT_DATA_DIR" in r.stdout
    assert "download=True" not in r.stdout + r.stderr
    assert json.loads((tmp_path / "i" / "mean_attention_distance.json").read_text())[
        "source"] == "synthetic"


# ---------------------------------------------------------------------- 9: attention-example
M = {"x": "-1,0;0,2;1,1", "wq1": "1,0;0,1", "wk1": "1,0;0,1", "wv1": "1,0;0,1",
     "wq2": "0,1;1,0", "wk2": "0,-1;1,0", "wv2": "1,1;0,1", "wo": "1,0;0,1;1,0;0,-1"}


def test_attention_example_multi_head_through_flags():
    from minivit import explain
    r = run("attention-example", "--x", M["x"], "--wq", M["wq1"], "--wk", M["wk1"],
            "--wv", M["wv1"], "--wq", M["wq2"], "--wk", M["wk2"], "--wv", M["wv2"],
            "--wo", M["wo"], "--scale", "none")
    assert r.returncode == 0, r.stderr
    p = {k: explain.parse_matrix(v, k) for k, v in M.items()}
    mh = explain.multi_head_steps(p["x"], [(p["wq1"], p["wk1"], p["wv1"]),
                                           (p["wq2"], p["wk2"], p["wv2"])], p["wo"])
    assert explain.format_steps(mh) in r.stdout           # both heads, the same numbers
    assert "Multi-head self-attention: 2 heads" in r.stdout
    # head 2 really is the second triple: its scores differ from head 1's
    assert not np.allclose(mh.heads[0].scores, mh.heads[1].scores)


def test_attention_example_uneven_heads_are_refused():
    line = one_error_line(run("attention-example", "--wq", "1,0;0,1", "--wq", "1,0;0,1",
                              "--wk", "1,0;0,1"), "attention-example")
    assert "once per head" in line and "--wq 2×" in line


def test_attention_example_negative_matrix_without_equals_sign():
    r = run("attention-example", "--x", "-1,0,1,0;0,2,0,2;1,1,1,-1", "--scale", "none")
    assert r.returncode == 0, r.stderr
    assert "x_1 = [-1, 0, 1, 0]" in r.stdout and "x_3 = [1, 1, 1, -1]" in r.stdout


def test_attention_example_help_documents_heads_json():
    r = run("attention-example", "--help")
    assert r.returncode == 0
    assert '"heads": [{"W_Q"' in r.stdout and "once per head" in r.stdout


def test_only_the_lecture_numbers_are_called_the_slides():
    own = run("attention-example", "--x", "1,0,0,0;0,1,0,0;0,0,1,0")
    assert own.returncode == 0 and "slides" not in own.stdout, own.stdout
    lecture = run("attention-example")
    assert "the slides' numbers" in lecture.stdout


# ---------------------------------------------------------------------- 11: predict
def test_predict_keeps_going_past_a_corrupt_file_and_reads_folders(tmp_path):
    from PIL import Image
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.full((40, 30, 3), 200, np.uint8)).save(folder / "a.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "b.jpg")
    (folder / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(60))       # corrupt
    (folder / "notes.txt").write_text("not an image")                      # skipped
    r = run("predict", "default", folder, "--top", "2", cwd=tmp_path)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "c.png: not a readable image" in err[0], r.stderr
    out = r.stdout
    assert f"{folder / 'a.png'}  (30x40)" in out and f"{folder / 'b.jpg'}  (16x16)" in out
    assert out.count("%") == 4 and "notes.txt" not in out
    assert "only the 10 CIFAR-10 classes" in out and "resized to 32x32" in out


# ---------------------------------------------------------------------- 12: plots
def test_one_epoch_curves_have_integer_ticks_and_printed_values():
    from minivit.plots import plot_training_curves
    fig = plot_training_curves([{"epoch": 1, "train_loss": 2.1, "train_acc": 0.21,
                                 "test_loss": 1.9, "test_acc": 0.3, "lr": 5e-4}])
    for ax in fig.axes:
        assert list(ax.get_xticks()) == [1]
    texts = {t.get_text() for t in fig.axes[1].texts}
    assert {"21", "30"} <= texts                           # accuracies, in percent


def test_prediction_grid_shows_the_true_class_of_a_mistake():
    from minivit.plots import plot_predictions
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1]])
    fig = plot_predictions(np.zeros((2, 8, 8, 3), np.uint8), probs, ["cat", "dog", "eel"],
                           labels=[0, 2], cols=2)
    titles = [ax.get_title() for ax in fig.axes[:2]]
    assert titles[0] == "cat 90%" and titles[1] == "dog 70%\ntrue: eel"


def test_heads_and_layers_numbered_from_one_and_image_named():
    from minivit import plots_inspect as pi
    A = np.full((3, 5, 5), 0.2)
    fig = pi.plot_attention_heads(np.zeros((8, 8, 3), np.uint8), A, (2, 2), layer=0,
                                  image_name="CIFAR-10 test image 1 (cat)")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[1:] == ["layer 1, head 1", "layer 1, head 2", "layer 1, head 3"]
    assert fig._suptitle.get_text().startswith("CIFAR-10 test image 1 (cat)")
    fig = pi.plot_mean_distance(np.ones((2, 3)))
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == \
        ["head 1", "head 2", "head 3"]
    assert list(fig.axes[0].get_xticks()) == [1, 2]


# ---------------------------------------------------------------------- 13: Python API
def test_load_in_one_line_and_a_readable_summary(tmp_path):
    import minivit
    m = minivit.load("default")
    assert isinstance(m, ViT) and m.meta["classes"][3] == "cat"
    save_checkpoint(tmp_path / "checkpoint.npz", ViT(CIFAR_SHAPED))
    assert minivit.load(tmp_path).config == CIFAR_SHAPED
    counts = m.parameter_counts()
    c = m.config
    D, M, C, P = c.dim, c.mlp_dim, c.num_classes, c.patch_size
    assert counts["patch embedding (E)"] == P * P * 3 * D + D
    assert counts["position embeddings (E_pos)"] == (c.num_patches + 1) * D
    assert counts["block 1: attention (MSA)"] == 2 * D + 3 * D * D + 3 * D + D * D + D
    assert counts[f"block {c.depth}: MLP"] == 2 * D + D * M + M + M * D + D
    assert counts["head"] == D * C + C
    assert sum(counts.values()) == m.num_params()
    text = m.summary()
    assert f"{m.num_params():,}" in text and "block 4: MLP" in text
    assert f"params={m.num_params():,}" in repr(m)


def test_evaluate_progress_bar(capsys):
    from minivit.evaluate import evaluate
    m = ViT(CIFAR_SHAPED)
    x = np.zeros((6, 32, 32, 3), np.uint8)
    evaluate(m, x, np.zeros(6, np.int64), batch_size=2, progress=True)
    assert "evaluating" in capsys.readouterr().err
    evaluate(m, x, np.zeros(6, np.int64), batch_size=2)
    assert capsys.readouterr().err == ""
