"""benchmarks/gpu.py off a GPU: it says why and writes nothing; its pieces that need no GPU
(the atomic JSON write, the test-suite timeout, the epoch without data) behave."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _gpu():
    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "benchmarks" / "gpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_without_a_gpu_it_says_why_and_writes_nothing(tmp_path, capsys):
    gpu = _gpu()
    out = tmp_path / "gpu.json"
    assert gpu.main(["--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert said.startswith("benchmarks/gpu.py: no GPU benchmark run — ") and "CUDA" in said
    assert not out.exists()


def test_results_are_written_atomically(tmp_path):
    gpu = _gpu()
    out = tmp_path / "sub" / "gpu.json"
    gpu._write_json({"matmul": [1, 2]}, out)
    gpu._write_json({"matmul": [1, 2], "epoch": {"wall_s": 3.5}}, out)
    assert json.loads(out.read_text()) == {"matmul": [1, 2], "epoch": {"wall_s": 3.5}}
    assert [p.name for p in out.parent.iterdir()] == ["gpu.json"]      # no temporary left


def test_a_test_suite_over_its_time_is_stopped_and_reported(capsys):
    row = _gpu().run_cuda_tests(timeout_s=0.5)
    assert row["returncode"] is None and row["summary"] == "timed out after 0.5 s"
    assert row["seconds"] < 30 and "output_tail" in row
    assert "CUDA tests on the GPU: timed out after 0.5 s" in capsys.readouterr().out


def test_epoch_without_cifar10_is_skipped_by_name(tmp_path):
    r = _gpu().time_epoch(tmp_path, 128, timeout_s=5)
    assert r == {"skipped": f"no CIFAR-10 in {tmp_path}"}


def test_versions_names_the_packages_the_numbers_depend_on():
    v = _gpu()._versions()
    assert v["numpy"] == __import__("numpy").__version__
    assert set(v) >= {"numba", "numba-cuda", "numpy", "torch"}
