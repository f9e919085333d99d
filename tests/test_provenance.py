"""minivit.provenance: the commit of the running code, with uncommitted changes under
minivit/ flagged, and None (not a guess) outside a git checkout; minivit train writes it on
every line of metrics.jsonl."""
import json
import subprocess

from minivit import ViTConfig
from minivit.data.synthetic import make_synthetic
from minivit.provenance import code_commit
from minivit.train import train


def _git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_commit_dirty_and_unknown(tmp_path):
    repo = tmp_path / "repo"
    (repo / "minivit").mkdir(parents=True)
    (repo / "minivit" / "a.py").write_text("x = 1\n")
    (repo / "notes.txt").write_text("n\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    head = _git(repo, "rev-parse", "--short", "HEAD")
    assert code_commit(repo) == head
    (repo / "notes.txt").write_text("changed\n")       # outside minivit/: still clean
    assert code_commit(repo) == head
    (repo / "minivit" / "a.py").write_text("x = 2\n")
    assert code_commit(repo) == head + "+dirty"
    assert code_commit(tmp_path / "nowhere") is None


def test_train_writes_the_commit_on_every_line(tmp_path):
    cfg = ViTConfig(image_size=8, patch_size=4, dim=16, depth=1, heads=2, mlp_dim=32,
                    num_classes=4)
    data = make_synthetic(n_train=32, n_test=16, image_size=8, num_classes=4, seed=0)
    train(cfg, data=data, out_dir=tmp_path / "r", epochs=2, batch_size=16, backend="numpy",
          progress=False, log=lambda *a: None)
    rows = [json.loads(line) for line in open(tmp_path / "r" / "metrics.jsonl")]
    assert len(rows) == 2 and {r["commit"] for r in rows} == {code_commit()}
    assert code_commit() is not None                    # the tests run from a checkout
