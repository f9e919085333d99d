"""Where does a training step's time go? Per-op wall time, numpy vs numba backend.

Every backend method the model and the AdamW loop call is wrapped with a timer; after a
warm-up, ``--steps`` training steps (forward + backward + AdamW over all parameters) are
timed and each op's total per step is printed, sorted by the numba time.

    python benchmarks/profile_step.py [--model cifar10-small] [--batch 128] [--steps 3]

Writes benchmarks/results/profile_step.json.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

# Idle OpenBLAS workers sleep after ~16 cycles instead of spinning for ~2^28, so they do
# not steal the cores from the Numba kernels that run between matmuls (must precede the
# NumPy import). Neutral for PyTorch (oneDNN/OpenMP); recorded in the JSON.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from minivit import ViT, ViTConfig                       # noqa: E402
from minivit.backends.numba_cpu import NumbaBackend      # noqa: E402
from minivit.backends.numpy_ops import NumpyBackend      # noqa: E402

OPS = ["patches_forward", "patches_backward", "linear_forward", "linear_backward",
       "layernorm_forward", "layernorm_backward", "linear_gelu_forward",
       "linear_gelu_backward", "mhsa_core_forward", "mhsa_core_backward", "tokens_forward",
       "tokens_backward", "take_cls", "take_cls_backward", "add", "softmax_cross_entropy",
       "adamw_update", "asarray"]


def timed_backend(cls):
    """A fresh instance of ``cls`` whose public ops accumulate wall time per name."""
    be = cls()
    be.times = collections.defaultdict(float)
    be.calls = collections.Counter()
    for name in OPS:
        fn = getattr(be, name)

        def wrap(*a, _fn=fn, _name=name, **k):
            t0 = time.perf_counter()
            out = _fn(*a, **k)
            be.times[_name] += time.perf_counter() - t0
            be.calls[_name] += 1
            return out
        setattr(be, name, wrap)
    return be


def profile(cls, cfg, batch, steps, warmup=2):
    be = timed_backend(cls)
    model = ViT(cfg, dtype="float32", backend=be)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, cfg.image_size, cfg.image_size, cfg.channels)).astype(np.float32)
    labels = rng.integers(0, cfg.num_classes, size=batch)
    state = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in model.params.items()}
    total = 0.0
    for s in range(warmup + steps):
        if s == warmup:
            be.times.clear()
            be.calls.clear()
            t_start = time.perf_counter()
        model.loss_and_grads(images, labels)
        for k, p in model.params.items():
            be.adamw_update(p, model.grads[k], *state[k], 1e-3, 0.9, 0.999, 1e-8, 0.05, s + 1)
    total = (time.perf_counter() - t_start) / steps
    per_op = {k: v / steps for k, v in be.times.items()}
    calls = {k: v // steps for k, v in be.calls.items()}
    return total, per_op, calls


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="cifar10-small")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "profile_step.json"))
    a = ap.parse_args(argv)
    cfg = ViTConfig.preset(a.model)
    res = {}
    for name, cls in (("numpy", NumpyBackend), ("numba", NumbaBackend)):
        total, per_op, calls = profile(cls, cfg, a.batch, a.steps)
        res[name] = {"step_s": total, "ops_s": per_op, "calls": calls,
                     "other_s": total - sum(per_op.values())}
    print(f"{a.model}, batch {a.batch}, float32: ms per training step (calls per step)")
    print(f"  {'op':24s} {'numpy ms':>9s} {'numba ms':>9s} {'speed-up':>9s} {'numba %':>8s}")
    order = sorted(OPS, key=lambda k: -res["numba"]["ops_s"].get(k, 0.0))
    for op in order + ["other_s"]:
        if op == "other_s":
            t1, t2, n = res["numpy"]["other_s"], res["numba"]["other_s"], ""
        else:
            if op not in res["numba"]["ops_s"]:
                continue
            t1, t2 = res["numpy"]["ops_s"][op], res["numba"]["ops_s"][op]
            n = f"({res['numba']['calls'][op]})"
        print(f"  {op + ' ' + n:24s} {1e3 * t1:9.2f} {1e3 * t2:9.2f} {t1 / max(t2, 1e-12):8.2f}x "
              f"{100 * t2 / res['numba']['step_s']:7.1f}%")
    print(f"  {'total step':24s} {1e3 * res['numpy']['step_s']:9.2f} {1e3 * res['numba']['step_s']:9.2f} "
          f"{res['numpy']['step_s'] / res['numba']['step_s']:8.2f}x")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"model": a.model, "batch": a.batch, **res}, f, indent=1)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
