"""Which matmul for the linear layers? Evidence for the numba backend's choice.

At every linear-layer shape of cifar10-tiny / cifar10-small (batch 128, float32) this
times: NumPy ``@`` on the (B·N, D_in) 2-D view (one OpenBLAS sgemm — what the numba
backend uses), NumPy ``@`` on the 3-D (B, N, D_in) array (what the reference op does:
one small gemm per image), a Numba ``prange`` loop over row blocks using the backend's
register-blocked ``_gemm`` micro-kernel (no BLAS), and ``torch.matmul`` when importable.
Forward x·W, and the backward dW = xᵀ·dy and dx = dy·Wᵀ.

    python benchmarks/matmul_choice.py [--repeats 7] [--batch 128]

Prints GFLOP/s and writes benchmarks/results/matmul_choice.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")   # as in train_step.py

import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from minivit import ViTConfig                         # noqa: E402
from minivit.backends.numba_cpu import _gemm          # noqa: E402


@njit(parallel=True, cache=True)
def numba_matmul(x, W, out):
    # x: (R, K) @ W: (K, M) → out, rows in blocks of 64 per prange task (BLAS-free).
    R = x.shape[0]
    nb = (R + 63) // 64
    for t in prange(nb):
        s, e = t * 64, min(R, t * 64 + 64)
        _gemm(np.ascontiguousarray(x[s:e]), W, out[s:e])


def timeit(f, repeats):
    f()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "matmul_choice.json"))
    a = ap.parse_args(argv)
    try:
        import torch
    except Exception:
        torch = None
        print("[matmul_choice] torch not importable; skipping its column")
    rng = np.random.default_rng(0)
    shapes = {}
    for preset in ("cifar10-tiny", "cifar10-small"):
        c = ViTConfig.preset(preset)
        N1 = c.num_patches + 1
        for name, (k, m) in {"qkv": (c.dim, 3 * c.dim), "proj": (c.dim, c.dim),
                             "fc1": (c.dim, c.mlp_dim), "fc2": (c.mlp_dim, c.dim)}.items():
            shapes[f"{preset}/{name}"] = (a.batch, N1, k, m)
    results = {}
    print(f"{'layer':22s} {'(rows x K x M)':>20s} " + " ".join(
        f"{n:>11s}" for n in ("np2d fwd", "np3d fwd", "numba fwd", "torch fwd",
                              "np dW", "torch dW", "np dx", "torch dx")) + "   (GFLOP/s)")
    for key, (B, N, K, M) in shapes.items():
        R = B * N
        x3 = rng.standard_normal((B, N, K)).astype(np.float32)
        x = x3.reshape(R, K)
        W = rng.standard_normal((K, M)).astype(np.float32)
        dy = rng.standard_normal((R, M)).astype(np.float32)
        out = np.empty((R, M), np.float32)
        fl = 2.0 * R * K * M / 1e9
        r = {"np2d_fwd": fl / timeit(lambda: x @ W, a.repeats),
             "np3d_fwd": fl / timeit(lambda: x3 @ W, a.repeats),
             "numba_fwd": fl / timeit(lambda: numba_matmul(x, W, out), a.repeats),
             "np_dW": fl / timeit(lambda: x.T @ dy, a.repeats),
             "np_dx": fl / timeit(lambda: dy @ W.T, a.repeats)}
        if torch is not None:
            tx, tW, tdy = torch.from_numpy(x), torch.from_numpy(W), torch.from_numpy(dy)
            r["torch_fwd"] = fl / timeit(lambda: tx @ tW, a.repeats)
            r["torch_dW"] = fl / timeit(lambda: tx.T @ tdy, a.repeats)
            r["torch_dx"] = fl / timeit(lambda: tdy @ tW.T, a.repeats)
        results[key] = {"rows": R, "K": K, "M": M, "gflops": r}
        cols = ("np2d_fwd", "np3d_fwd", "numba_fwd", "torch_fwd", "np_dW", "torch_dW",
                "np_dx", "torch_dx")
        print(f"{key:22s} {f'{R}x{K}x{M}':>20s} " + " ".join(
            f"{r.get(k, float('nan')):11.1f}" for k in cols))
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"batch": a.batch, "repeats": a.repeats, "shapes": results}, f, indent=1)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
