"""The course notebooks: their source and their committed outputs agree, the outputs are
current, and every notebook runs top to bottom from a clean kernel in fast mode.

Each notebook is a pair: ``notebooks/NN_name.py`` (Jupytext percent format, the source)
and ``NN_name.ipynb`` (the same cells with the outputs of a normal run), written by
``notebooks/execute.py``. The tests check that

* every pair is in sync (Jupytext's own comparison of the code and markdown cells) and
  declares the pairing;
* the committed outputs come from one complete normal-mode run of that source, quote no
  "?" placeholder, cite no file missing from the repository (nor call a present one
  missing), quote no hand-typed run time, and print the committed results' own figures
  (the bundled model's run, the train-step benchmark);
* every notebook runs (nbclient, ``MINIVIT_FAST=1``: tiny data, few steps; working
  directory ``notebooks/``) without a failing cell or a printed "MISMATCH". The kernel
  must be this interpreter's (jupyter_client substitutes ``sys.executable`` for the
  kernelspec's ``python``), so the notebooks test the checkout's own environment.
"""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
jupytext = pytest.importorskip("jupytext")
pytest.importorskip("ipykernel")
from jupytext.compare import NotebookDifference, compare_notebooks  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NB_DIR = REPO / "notebooks"
SOURCES = sorted(NB_DIR.glob("[0-9][0-9]_*.py"))
NOTEBOOKS = sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT = 300                  # seconds per cell; the whole fast run takes ~1–2 min


def _load(name, file):
    """A module of notebooks/ (not a package) by its file name."""
    spec = importlib.util.spec_from_file_location(name, NB_DIR / file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(nb, monkeypatch):
    monkeypatch.setenv("MINIVIT_FAST", "1")
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(NB_DIR)}})
    client.execute()
    return nb


def _output_text(cell):
    """All text one cell printed or returned."""
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            out.append(o.get("text", ""))
        elif "data" in o and "text/plain" in o["data"]:
            out.append(o["data"]["text/plain"])
    return "\n".join(out)


def _text(nb):
    """All text the notebook printed or returned."""
    return "\n".join(_output_text(c) for c in nb.cells)


def _committed(name_prefix):
    path, = [p for p in NOTEBOOKS if p.name.startswith(name_prefix)]
    return nbformat.read(path, as_version=4)


def test_there_are_eight_notebook_pairs():
    assert [p.name[:2] for p in SOURCES] == ["01", "02", "03", "04", "05", "06", "07", "08"]
    assert [p.stem for p in NOTEBOOKS] == [p.stem for p in SOURCES], (
        "every notebooks/NN_name.py needs its executed NN_name.ipynb and vice versa: "
        "run  python notebooks/execute.py")
    assert not (NB_DIR / "build_notebooks.py").exists()


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_pair_is_in_sync(source):
    text_nb = jupytext.read(source)
    ipynb = jupytext.read(source.with_suffix(".ipynb"))
    for nb, what in ((text_nb, source.name), (ipynb, source.with_suffix(".ipynb").name)):
        assert nb.metadata.get("jupytext", {}).get("formats") == "ipynb,py:percent", (
            f"{what} does not declare the Jupytext pairing formats: ipynb,py:percent")
    try:        # cell types and sources (and the notebook metadata Jupytext keeps in both)
        compare_notebooks(text_nb, ipynb, fmt="py:percent")
    except NotebookDifference as e:
        pytest.fail(f"{source.name} and its .ipynb differ (edit the .py, then run  python "
                    f"notebooks/execute.py {source.name[:2]}):\n{e}")


def test_the_comparison_sees_an_edited_cell():
    source = SOURCES[0]
    ipynb = jupytext.read(source.with_suffix(".ipynb"))
    edited = jupytext.read(source)
    edited.cells[-1].source += "\n# an edit"
    with pytest.raises(NotebookDifference):
        compare_notebooks(edited, ipynb, fmt="py:percent")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_outputs_are_one_complete_normal_run(path):
    nb = nbformat.read(path, as_version=4)
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), (
        f"{path.name}: code cells not all executed in order by one kernel (execution counts "
        f"{counts}): re-run it with  python notebooks/execute.py {path.name[:2]}")
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: a committed cell output is an error"
    text = _text(nb)
    assert "normal mode" in text and "FAST mode" not in text, (
        f"{path.name}: the committed outputs must come from a normal (not fast) run")
    assert "MISMATCH" not in text


# A "?" standing alone in an output is a value the notebook could not find; in the code,
# a '?' default of dict.get is how such a placeholder gets printed.
PLACEHOLDER_OUT = re.compile(r"(?:^|[\s(=:,])\?(?=$|[\s),.;:%])", re.M)
PLACEHOLDER_CODE = re.compile(r"""\.get\([^()\n]*,\s*['"]\?['"]\s*\)""")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_no_placeholders(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not PLACEHOLDER_CODE.search(cell.source), (
                f"{path.name}: a '?' placeholder default in\n{cell.source}")
            match = PLACEHOLDER_OUT.search(_output_text(cell))
            assert not match, f"{path.name}: a '?' placeholder in the output of\n{cell.source}"


def test_placeholder_patterns_catch_the_old_output():
    assert PLACEHOLDER_OUT.search("bundled model: 28 epochs, batch ?, lr ?, label smoothing ?")
    assert PLACEHOLDER_CODE.search("f\"batch {st.get('batch_size', '?')}\"")
    assert not PLACEHOLDER_OUT.search("what does it attend to? (layer 0)")


# Repository files named in prose or output: a path with a folder, or a bare file name.
FILE_REF = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w-]+\.(?:md|py|json|jsonl|npz|png|ipynb|toml))\b")
# An output that reports a file absent: "PATH not found", "PATH does not exist", "PATH is
# missing", or "No <thing> (PATH)" in the same clause.
ABSENT_AFTER = re.compile(r"\)?\s*(?:not found|does not exist|is missing)\b", re.I)
ABSENT_BEFORE = re.compile(r"\bno\b[^.:;\n]*$", re.I)


def _repo_files():
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return set(out.stdout.split())


def _exists(ref, files, names):
    if "/" not in ref:                              # a bare name: anywhere in the repository
        return ref in names
    ref = ref.removeprefix("./")
    return ref in files or f"notebooks/{ref}" in files or any(
        f.startswith(ref.rstrip("/") + "/") for f in files)


def _file_claims(nb):
    """(file reference, the line it is on, whether the line says it is absent), from the
    markdown cells and the outputs; run folders (runs/, ignored by git) excluded."""
    for cell in nb.cells:
        text = cell.source if cell.cell_type == "markdown" else _output_text(cell)
        for line in text.splitlines():
            for m in FILE_REF.finditer(line):
                ref = m.group(1)
                absent = cell.cell_type == "code" and bool(
                    ABSENT_AFTER.match(line, m.end()) or ABSENT_BEFORE.search(line[:m.start()]))
                if not ref.startswith("runs/"):
                    yield ref, line, absent


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_files_named_are_there_and_files_called_missing_are_not(path):
    files = _repo_files()
    names = {f.rsplit("/", 1)[-1] for f in files}
    for ref, line, says_absent in _file_claims(nbformat.read(path, as_version=4)):
        if says_absent:
            assert not _exists(ref, files, names), (
                f"{path.name}: the committed output says {ref} is missing, but it is in the "
                f"repository (stale output: re-run the notebook):\n  {line}")
        else:
            assert _exists(ref, files, names), (
                f"{path.name}: names {ref}, which is not in the repository:\n  {line}")


def test_file_claims_catch_the_old_statements():
    old = nbformat.v4.new_notebook()
    old.cells = [nbformat.v4.new_markdown_cell("the recipe that matters (REFERENCE.md §3)"),
                 nbformat.v4.new_code_cell("")]
    old.cells[1].outputs = [nbformat.v4.new_output(
        "stream", text="No bundled checkpoint (minivit/weights/cifar10-vit.npz) in this checkout.\n")]
    old.cells[1].outputs.append(nbformat.v4.new_output(
        "stream", text="benchmarks/results/gpu.json not found: run  python benchmarks/gpu.py\n"))
    claims = list(_file_claims(old))
    assert [(r, a) for r, _, a in claims] == [("REFERENCE.md", False),
                                              ("minivit/weights/cifar10-vit.npz", True),
                                              ("benchmarks/results/gpu.json", True),
                                              ("benchmarks/gpu.py", False)]
    files = _repo_files()
    names = {f.rsplit("/", 1)[-1] for f in files}
    assert not _exists("REFERENCE.md", files, names)
    assert _exists("minivit/weights/cifar10-vit.npz", files, names)


# A duration typed into the prose ("~1.5 h", "54 min") goes stale when the code or the
# machine changes: the notebooks print the measured ones. Tables of published results
# (rows starting with "|") quote other people's figures and are exempt.
DURATION = re.compile(r"(?<![\w/.])\d+(?:\.\d+)?(?:\s(?:h|min)|\s?(?:hours?|minutes))\b"
                      r"|hour and a half", re.I)


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_prose_types_no_run_time(source):
    nb = jupytext.read(source)
    for cell in nb.cells:
        lines = cell.source.splitlines()
        if cell.cell_type == "code":                # its comments
            lines = [ln.split("#", 1)[1] for ln in lines if "#" in ln]
        for line in lines:
            if not line.lstrip().startswith("|"):
                assert not DURATION.search(line), (
                    f"{source.name} types a run time; print the measured one instead:\n  {line}")
    assert DURATION.search("about an hour and a half") and DURATION.search("~1.5 h on 2 cores")
    assert DURATION.search("54 min") and not DURATION.search("(f(x + h) − f(x − h)) / 2h")


def test_notebook_05_quotes_the_bundled_model_and_its_committed_results():
    from minivit.checkpoint import load_model
    from minivit.predict import default_checkpoint
    from minivit.train import TrainSettings
    # the run folder the notebooks read
    run = _load("nb_common", "_common.py").BUNDLED_RUN
    assert run.parent.is_relative_to(REPO / "benchmarks" / "results")
    summary = json.loads((run / "summary.json").read_text())
    model, meta = load_model(default_checkpoint())
    # the shipped model is the committed run
    assert meta["train_command"] == summary["command"]
    # the figure of the weights it ships: the final ones, or their moving average
    acc = summary["final_ema_test_acc" if meta.get("weights") == "ema" else "final_test_acc"]
    assert meta["test_acc"] == acc and meta["epoch"] == summary["epochs"]
    text = _text(_committed("05"))
    assert meta["train_command"] in text
    c = model.config                        # the notebook trains the shipped architecture
    assert f"{c.num_params():,} parameters: {c.depth} blocks of {c.heads} heads, D = {c.dim}" in text
    flags = dict(re.findall(r"--([\w-]+) (\S+)", summary["command"]))
    smoothing = float(flags.get("label-smoothing", TrainSettings().label_smoothing))
    assert f"{flags['epochs']} epochs, batch {flags['batch-size']}," in text
    assert f"lr {float(flags['lr']):g}," in text and f"label smoothing {smoothing:g}," in text
    assert f"{100 * acc:.2f}% test accuracy" in text and f" after {summary['epochs']} epochs" in text
    assert f"in {summary['train_plus_eval_s'] / 60:.1f} min" in text
    # evaluated afresh on the full test set, the bundled model scores what its run recorded
    assert re.search(rf"bundled model \(cifar10-vit.npz, .*\): {100 * meta['test_acc']:.2f}% on "
                     r"the same 10000 test images", text), text[-2000:]


def test_notebook_07_prints_the_committed_benchmark():
    bench = json.loads((REPO / "benchmarks/results/train_step.json").read_text())
    lines = _text(_committed("07")).splitlines()
    for model_name, m in bench["models"].items():
        for backend, r in m["backends"].items():
            want = [model_name, backend, f"{r['train_img_s']:.0f}", f"{r['infer_img_s']:.0f}"]
            assert any(line.split()[:4] == want for line in lines if line.strip()), (
                f"07_kernels.ipynb does not show train_step.json's {model_name}/{backend} row "
                f"{want}: re-run the notebook")


def test_kernel_is_this_interpreter(monkeypatch):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import sys, os\nprint(sys.prefix)\nprint(os.getcwd())")]
    text = _text(_run(nb, monkeypatch)).split("\n")
    assert Path(text[0]).resolve() == Path(sys.prefix).resolve(), (
        f"the notebook kernel runs in {text[0]}, not in this environment ({sys.prefix})")
    assert Path(text[1]).resolve() == NB_DIR


@pytest.mark.slow
@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_runs(source, monkeypatch):
    nb = _load("nb_execute", "execute.py").read_source(source)      # the source, as execute.py runs it
    text = _text(_run(nb, monkeypatch))             # raises CellExecutionError if a cell fails
    assert "FAST mode" in text
    assert "MISMATCH" not in text, f"{source.name} printed a failed check:\n{text[-3000:]}"
