"""Run by tests/test_mpi.py under ``mpirun -n 2 python tests/mpi_worker.py SCENARIO OUT``.

Scenarios:
  train   train() from Python at K ranks (settings in OUT/settings.json); rank 0 saves the
          final parameters to OUT/params.npz.
  exact   three AdamW steps with the distributed API, float32 and float64; rank 0 then
          replays them in one process, averaging the two half-batch gradients itself as
          (g_0 + g_1) / 2, and on the full batch, and writes the largest differences (and
          the first step's gradient error relative to the largest gradient) to
          OUT/exact.json.
"""
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mpi_common import CFG, DATA  # noqa: E402

from minivit import distributed  # noqa: E402
from minivit.model import ViT  # noqa: E402
from minivit.optim import AdamW, clip_grad_norm  # noqa: E402


def scenario_train(out: Path):
    from minivit.train import train
    kw = json.loads((out / "settings.json").read_text())
    resume = kw.pop("resume", False)
    stop = kw.pop("stop_after_epochs", None)
    cfg = CFG.replace(**kw.pop("config", {}))         # e.g. dropout / drop_path
    r = train(cfg, data=DATA, out_dir=out / "run", progress=False, resume=resume,
              stop_after_epochs=stop, log=lambda *a: None, **({} if resume else kw))
    comm = distributed.current()
    comm.check_in_sync(r["model"].be, r["model"].params, "the end")
    if comm.is_root:
        np.savez(out / "params.npz", **r["model"].state_dict())
        (out / "history.json").write_text(json.dumps(r["history"]))


def _model(dtype):
    """The tiny ViT with every weight perturbed (the official init zeroes the head, which
    would zero every other gradient at the first step)."""
    m = ViT(CFG, seed=3, dtype=dtype)
    rng = np.random.default_rng(4)
    m.load_params({k: v + 0.3 * rng.standard_normal(v.shape) for k, v in m.state_dict().items()})
    return m


def _adamw_steps(model, batches, grads_fn, clip=1.0, lr=1e-2):
    opt = AdamW(model, lr, weight_decay=0.05)
    for xb, yb in batches:
        grads_fn(model, xb, yb)
        clip_grad_norm(model.be, model.grads, clip)
        opt.step()
    return model.state_dict()


def scenario_exact(out: Path):
    comm = distributed.current()
    assert comm.size == 2, comm.size
    rng = np.random.default_rng(1)
    batches = [(rng.normal(size=(8, 8, 8, 3)), rng.integers(0, 4, size=8)) for _ in range(3)]
    result = {}
    for dtype in ("float32", "float64"):
        def distributed_grads(model, xb, yb):
            xs, ys = comm.shard(xb.astype(dtype), yb)
            model.loss_and_grads(xs, ys, 0.1)
            comm.allreduce_grads(model.be, model.grads)

        # the averaged gradient of the first batch, against the one-process full batch
        m = _model(dtype)
        distributed_grads(m, *batches[0])
        g_mpi = {k: np.array(v) for k, v in m.grads.items()}
        got = _adamw_steps(_model(dtype), batches, distributed_grads)
        if not comm.is_root:
            continue
        m.loss_and_grads(batches[0][0].astype(dtype), batches[0][1], 0.1)
        scale = max(float(np.abs(g).max()) for g in m.grads.values())
        grad_rel = max(float(np.abs(g_mpi[k] - m.grads[k]).max()) for k in g_mpi) / scale

        def two_halves(model, xb, yb):
            # what the all-reduce must compute: the two ranks' shard gradients, summed
            # (a + b: one IEEE addition, the same on both ranks and here) and halved
            parts = []
            for r in range(2):
                model.loss_and_grads(xb[4 * r:4 * r + 4].astype(dtype), yb[4 * r:4 * r + 4], 0.1)
                parts.append({k: np.array(v) for k, v in model.grads.items()})
            for k in model.grads:
                model.grads[k] = (parts[0][k] + parts[1][k]) / 2

        def full_batch(model, xb, yb):
            model.loss_and_grads(xb.astype(dtype), yb, 0.1)

        halves = _adamw_steps(_model(dtype), batches, two_halves)
        full = _adamw_steps(_model(dtype), batches, full_batch)
        result[dtype] = {
            "vs_two_halves": max(float(np.abs(got[k] - halves[k]).max()) for k in got),
            "vs_full_batch": max(float(np.abs(got[k] - full[k]).max()) for k in got),
            "grad_rel_vs_full_batch": grad_rel,
            "moved": max(float(np.abs(got[k] - _model(dtype).state_dict()[k]).max())
                         for k in got),
        }
    if comm.is_root:
        (out / "exact.json").write_text(json.dumps(result))


if __name__ == "__main__":
    {"train": scenario_train, "exact": scenario_exact}[sys.argv[1]](Path(sys.argv[2]))
