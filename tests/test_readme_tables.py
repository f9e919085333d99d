"""The README's performance tables are generated from benchmarks/results/*.json by
benchmarks/readme_tables.py: this fails when someone edits them by hand or reruns a
benchmark without regenerating them (fix: ``python benchmarks/readme_tables.py``)."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _module():
    spec = importlib.util.spec_from_file_location(
        "readme_tables", os.path.join(ROOT, "benchmarks", "readme_tables.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_performance_tables_match_the_json(capsys):
    assert _module().main(["--check"]) == 0, capsys.readouterr().out


def test_ratios_are_rendered_from_the_numbers(tmp_path):
    """A synthetic train_step.json renders its own figures (ratios, % of peak, memory)."""
    mod = _module()
    v = lambda img, rss: {"train_img_s": img, "train_gflops": img / 10, "infer_img_s": 3 * img,  # noqa: E731
                          "infer_gflops": 3 * img / 10, "train_pct_of_matmul_peak": img / 20,
                          "infer_pct_of_matmul_peak": 3 * img / 20, "peak_rss_mib": rss}
    ts = {"batch": 128, "threads": 2, "cpu_count": 2, "rounds": 5, "steps": 5,
          "numpy_matmul_gflops": 200.0, "load_average": [[0.5, 0, 0], [0.7, 0, 0]],
          "models": {"cifar10-tiny": {"config": {"dim": 128, "depth": 4, "heads": 4, "mlp_dim": 256},
                                      "backends": {"numba": v(600, 400), "torch": v(500, 700)},
                                      "ratios": {"numba/torch": {"train": 1.2, "infer": 1.2}}}}}
    md = mod.train_table(ts)
    assert "| 600 | 60 (30%) | 1800 | 180 (90%) | 400 MiB |" in md
    assert "torch: train 1.20×, inference 1.20×" in md
    assert "200 GFLOP/s" in md and "load average 0.5 → 0.7" in md


def test_search_tables_render_every_run_and_the_budgets_not_run():
    mod = _module()
    ab = {"preset": "cifar10-tiny", "budget_flops": 3.5e13, "base_settings": {"batch_size": 64},
          "args": {"budget_epochs": 3, "seed": 0, "batch_size": 64, "backend": "numba"},
          "runs": [{"name": "gap", "model": {"classifier": "gap"}, "settings": {"ema_decay": 0.999},
                    "epochs": 3, "train_flops": 3.4e13, "test_acc": 0.5012,
                    "ema_test_acc": 0.4987, "tta_flip_acc": 0.5123, "wall_s": 600.0}]}
    assert "| gap | classifier=gap | 3 | 3.4e+13 | 50.12% | 49.87% | 51.23% | – | 10.0 |" in \
        mod.ablation_table(ab)
    ab["runs"][0]["tta_flip_shift_acc"] = 0.5208          # a row with flip-shift TTA
    assert "| 51.23% | 52.08% | 10.0 |" in mod.ablation_table(ab)
    vr = {"date": "2026-11-30", "recipe": {"lr": 0.001}, "models": ["cifar10-tiny", "resnet-20"],
          "budgets": [0.5e14, 1e14],
          "runs": [{"model": "resnet-20", "budget": 0.5e14, "test_acc": 0.7, "epochs": 4,
                    "wall_s": 1200.0}]}
    md = mod.vit_resnet_table(vr)
    assert "| 5e+13 | not run yet | 70.00% (4 ep, 20 min) |" in md
    assert "| 1e+14 | not run yet | not run yet |" in md
