"""Where does a training step's time go? Per-op ms and GFLOP/s, forward and backward.

Every backend method the model and the AdamW loop call is wrapped with a wall-clock timer
(the kernels are synchronous, so a call's wall time is its cost). After a warm-up,
``--steps`` training steps (forward + backward + AdamW over every parameter, batch
``--batch``, float32) are timed; each op's time per step is printed with its share of the
step and, for the matmul ops, its achieved GFLOP/s (2 FLOPs per multiply-add; a linear
layer's backward is dW and dx, twice its forward; attention's forward is q kᵀ and A v,
its backward dv, dA, dq, dk). Linear layers are reported per weight shape (D_in×D_out), so
qkv, proj, fc1, fc2, the patch embedding and the head are separate rows.

"Before and after" are measured in the same process: ``numba-old`` is the numba backend
with ``blas_in_pool`` and ``attn_blas`` off — main's path before issue 14 (NumPy ``@`` on
OpenBLAS's own pool between the Numba kernels, hand-written attention loops; the other
kernels, e.g. the float32 exp, are today's in both) — and its
steps alternate with ``numba``'s, each figure a median over steps, so a shared machine's
load hits both alike. The script runs as a user's script does: ``import numpy`` first, no
environment variables set. It uses only the public backend API, so it can also profile an
older checkout (copy it there, ``--out`` back here).

    python benchmarks/profile_step.py [--models cifar10-tiny,cifar10-small] [--batch 128]
        [--steps 5] [--backends numba] [--threads 2] [--no-old] [--out FILE]

Writes benchmarks/results/profile_step.json (one entry per model and backend).
"""
from __future__ import annotations

import numpy as np  # noqa: I001  (first, as in a user's script: BLAS starts before minivit)

import argparse
import collections
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from minivit import ViT, ViTConfig                       # noqa: E402
from minivit.backends import get_backend                 # noqa: E402

FORWARD = ["patches_forward", "linear_forward", "layernorm_forward", "linear_gelu_forward",
           "mhsa_core_forward", "tokens_forward", "take_cls", "add", "add_layernorm_forward",
           "softmax_cross_entropy"]
BACKWARD = ["patches_backward", "linear_backward", "layernorm_backward",
            "linear_gelu_backward", "mhsa_core_backward", "tokens_backward",
            "take_cls_backward", "add_layernorm_backward"]
OPTIM = ["adamw_update"]


def _fwd_flops(name, args):
    """FLOPs of a forward matmul op from its arguments (None for non-matmul ops), and the
    row label (linear layers are labelled by their weight shape)."""
    if name in ("linear_forward", "linear_gelu_forward"):
        x, W = args[0], args[1]
        return 2 * (x.size // x.shape[-1]) * W.shape[0] * W.shape[1], \
            f"{name}[{W.shape[0]}x{W.shape[1]}]"
    if name == "mhsa_core_forward":
        B, N, D3 = args[0].shape
        return 2 * 2 * B * N * N * (D3 // 3), name
    return None, name


def _device_sync(be):
    """A function that waits for ``be``'s device to finish its queued work (kernel launches
    on the cuda backend return at once), or a no-op on the CPU backends."""
    if getattr(be, "name", None) == "cuda":
        from numba import cuda
        return cuda.synchronize
    return lambda: None


def timed_backend(be):
    """Wrap ``be``'s public ops in place so that each call adds its wall time (and FLOPs)
    to ``be.prof[label]`` = [seconds, calls, flops]. Backward ops find their forward's
    FLOPs through the cache object the forward returned. On the cuda backend each op is
    bracketed by device synchronisations, so its time is its kernels' (a real step
    overlaps launches with kernels, so the ops' sum there is an upper bound)."""
    be.prof = collections.defaultdict(lambda: [0.0, 0, 0])
    sync = _device_sync(be)
    fwd_of_cache = {}
    for name in FORWARD + BACKWARD + OPTIM:
        if not hasattr(be, name):
            continue
        fn = getattr(be, name)

        def wrap(*a, _fn=fn, _name=name, **k):
            sync()
            t0 = time.perf_counter()
            out = _fn(*a, **k)
            sync()
            dt = time.perf_counter() - t0
            if _name in BACKWARD:
                flops, label = fwd_of_cache.pop(id(a[1]), (None, _name))
                if flops is not None:
                    need_dx = k.get("need_dx", a[2] if len(a) > 2 else True)
                    flops = 2 * flops if need_dx or _name == "mhsa_core_backward" else flops
                    label = label.replace("_forward", "_backward")
            else:
                flops, label = _fwd_flops(_name, a)
                if flops is not None and isinstance(out, tuple):
                    fwd_of_cache[id(out[1])] = (flops, label)
            rec = be.prof[label]
            rec[0] += dt
            rec[1] += 1
            rec[2] += flops or 0
            return out
        setattr(be, name, wrap)
    return be


OLD_PATH = {"blas_in_pool": False, "attn_blas": False}   # main's path before issue 14


def _setup(backend, cfg, batch, flags):
    """A model on a fresh timed instance of ``backend`` (attributes ``flags`` set on it),
    a batch, and AdamW state."""
    be = type(get_backend(backend))()
    for k, v in flags.items():
        setattr(be, k, v)
    be = timed_backend(be)
    model = ViT(cfg, dtype="float32", backend=be)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, cfg.image_size, cfg.image_size, cfg.channels)).astype(np.float32)
    labels = rng.integers(0, cfg.num_classes, size=batch)
    state = {k: (be.zeros_like(v), be.zeros_like(v)) for k, v in model.params.items()}
    return be, model, images, labels, state


def profile(variants, cfg, batch, steps, warmup=2):
    """Per-op ms, calls and GFLOP/s per training step of ``cfg``, for each variant
    ``name -> (backend, flags)``; the variants' steps alternate (one step each in turn),
    and every figure is a median over the steps, so load changes hit all variants alike."""
    setups = {n: _setup(b, cfg, batch, f) for n, (b, f) in variants.items()}
    per_step = {n: [] for n in variants}
    for s in range(warmup + steps):
        for n, (be, model, images, labels, state) in setups.items():
            be.prof.clear()
            t0 = time.perf_counter()
            model.loss_and_grads(images, labels)
            for k, p in model.params.items():
                be.adamw_update(p, model.grads[k], *state[k], 1e-3, 0.9, 0.999, 1e-8, 0.05, s + 1)
            _device_sync(be)()
            dt = time.perf_counter() - t0
            if s >= warmup:
                per_step[n].append((dt, {k: tuple(v) for k, v in be.prof.items()}))
    out = {}
    for n, recs in per_step.items():
        ops = {}
        for label in recs[0][1]:
            ts = [r[1][label][0] for r in recs]
            t = float(np.median(ts))
            n_calls, fl = recs[0][1][label][1], recs[0][1][label][2]
            ops[label] = {"ms": 1e3 * t, "calls": n_calls,
                          "gflops": (fl / t / 1e9) if fl else None,
                          "phase": "optimizer" if label in OPTIM else
                                   "backward" if ("backward" in label) else "forward"}
        steps_s = [r[0] for r in recs]
        step = float(np.median(steps_s))
        glue = float(np.median([r[0] - sum(v[0] for v in r[1].values()) for r in recs]))
        out[n] = {"step_ms": 1e3 * step, "step_ms_all": [1e3 * t for t in steps_s],
                  "other_ms": 1e3 * glue,
                  "flags": variants[n][1], "ops": ops}
    return out


def _has_old_path():
    be = get_backend("numba")
    return all(hasattr(be, k) for k in OLD_PATH)


def print_table(model, backend, r):
    print(f"\n{model} / {backend}: ms per training step (median step {r['step_ms']:.1f} ms)")
    print(f"  {'op':40s} {'phase':9s} {'calls':>5s} {'ms':>8s} {'%':>6s} {'GFLOP/s':>8s}")
    for label, o in sorted(r["ops"].items(), key=lambda kv: -kv[1]["ms"]):
        gf = f"{o['gflops']:8.1f}" if o["gflops"] else f"{'':8s}"
        print(f"  {label:40s} {o['phase']:9s} {o['calls']:5d} {o['ms']:8.2f} "
              f"{100 * o['ms'] / r['step_ms']:5.1f}% {gf}")
    print(f"  {'(python glue, not in an op)':40s} {'':9s} {'':5s} {r['other_ms']:8.2f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="cifar10-tiny,cifar10-small")
    ap.add_argument("--backends", default="numba")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2,
                    help="threads for Numba and BLAS (minivit.set_threads when available)")
    ap.add_argument("--no-old", action="store_true",
                    help="numba only, without the old path (numba-old) alternated with it")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "profile_step.json"))
    a = ap.parse_args(argv)
    try:
        from minivit.backends.threads import set_threads
        set_threads(a.threads)
    except ImportError:                          # an older checkout: Numba only
        import numba
        numba.set_num_threads(a.threads)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                                capture_output=True).stdout.strip() or None
    except OSError:
        commit = None
    res = {"commit": commit, "batch": a.batch, "steps": a.steps,
           "threads": a.threads, "models": {},
           "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
    for model in [m for m in a.models.split(",") if m]:
        cfg = ViTConfig.preset(model)
        variants = {b: (b, {}) for b in a.backends.split(",") if b}
        if "numba" in variants and not a.no_old and _has_old_path():
            variants["numba-old"] = ("numba", OLD_PATH)
        res["models"][model] = profile(variants, cfg, a.batch, a.steps)
        for name, r in res["models"][model].items():
            print_table(model, name, r)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
