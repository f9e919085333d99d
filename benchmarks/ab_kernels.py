"""A/B timings of the numba backend's kernel choices, old and new alternated in one process.

Each choice is a switch on ``NumbaBackend`` (the old path stays in the code for this, and as
the fallback when NumPy's BLAS is not OpenBLAS). The two (or more) settings are alternated
call by call in the same process, many times, and medians compared — so a slow spell of a
shared machine hits both sides alike; ratios are meaningful even where absolute times are
not. Like a user's script, ``import numpy`` comes first and no environment variable is set.

* ``pool``: a whole training step (forward + backward), big matmuls issued from Numba's
  pool (``blas_in_pool=True``: single-threaded gemm per row block, no second pool) vs
  NumPy's ``@`` on OpenBLAS's own pool between the Numba kernels (``False``, the old path).
* ``attn``: attention forward and backward, per-head products as strided BLAS gemms in
  place (``attn_blas=True``) vs the hand-written 4-row register-blocked loops (``False``).
* ``exp``: the float32 exp polynomial of softmax and GELU (``_exp_row``) with float32
  constants (now) vs bare Python-float constants (before: the polynomial was promoted to
  float64), on (B·N, N) = (8320, 65) rows; also its largest relative error vs float64 exp.
* ``epi``: fc1 (gemm + bias + GELU epilogue) and qkv (gemm + bias) with the rows of each
  gemm call capped at 64 / 256 / 1024 / one block per thread (``epi_rows``).

    python benchmarks/ab_kernels.py [--which pool,attn,exp,epi] [--reps 15] [--threads 2]

Writes benchmarks/results/ab_kernels.json.
"""
import numpy as np  # noqa: I001  (first, as in a user's script)

import argparse
import json
import math
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from minivit import ViT, ViTConfig                        # noqa: E402
from minivit.backends import get_backend                  # noqa: E402
from minivit.backends.threads import set_threads          # noqa: E402


def alternate(setter, options, fn, reps, warm=1):
    """Call fn() under each option in turn (setter(option) first), reps times after warm
    rounds; returns {option: [seconds...]}."""
    times = {o: [] for o in options}
    for i in range((reps + warm) * len(options)):
        o = options[i % len(options)]
        setter(o)
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        if i >= warm * len(options):
            times[o].append(dt)
    return times


def _summary(times, flops=None):
    out = {}
    for o, ts in times.items():
        med = statistics.median(ts)
        out[str(o)] = {"median_ms": 1e3 * med, "min_ms": 1e3 * min(ts),
                       "gflops": flops / med / 1e9 if flops else None}
    return out


def ab_pool(be, reps, batch):
    res = {}
    cls = type(be)
    for model in ("cifar10-tiny", "cifar10-small"):
        cfg = ViTConfig.preset(model)
        m = ViT(cfg, dtype="float32", backend=be)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch, cfg.image_size, cfg.image_size, cfg.channels)).astype(np.float32)
        y = rng.integers(0, cfg.num_classes, batch)
        t = alternate(lambda o: setattr(cls, "blas_in_pool", o), [True, False],
                      lambda: m.loss_and_grads(x, y), reps)
        cls.blas_in_pool = True
        res[model] = _summary(t, 3 * cfg.flops_per_image() * batch)
        res[model]["speedup"] = res[model]["False"]["median_ms"] / res[model]["True"]["median_ms"]
    return res


def ab_attn(be, reps, batch):
    res = {}
    cls = type(be)
    for model in ("cifar10-tiny", "cifar10-small"):
        cfg = ViTConfig.preset(model)
        B, N, D, H = batch, cfg.num_patches + 1, cfg.dim, cfg.heads
        rng = np.random.default_rng(0)
        qkv = rng.standard_normal((B, N, 3 * D)).astype(np.float32)
        dout = rng.standard_normal((B, N, D)).astype(np.float32)
        cache = {}

        def fwd():
            cache["c"] = be.mhsa_core_forward(qkv, H)[1]

        def bwd():
            be.mhsa_core_backward(dout, cache["c"])

        def setter(o):
            cls.attn_blas = o
            fwd()                                  # a cache from the same path
        fl = 4 * B * N * N * D
        tf = alternate(lambda o: setattr(cls, "attn_blas", o), [True, False], fwd, reps)
        tb = alternate(setter, [True, False], bwd, reps)
        cls.attn_blas = True
        r = {"forward": _summary(tf, fl), "backward": _summary(tb, 2 * fl)}
        for k in ("forward", "backward"):
            r[k]["speedup"] = r[k]["False"]["median_ms"] / r[k]["True"]["median_ms"]
        res[model] = r
    return res


def ab_epi(be, reps, batch):
    res = {}
    cls = type(be)
    opts = [64, 256, 1024, 0]
    rng = np.random.default_rng(0)
    old = cls.epi_rows
    for name, (D, M, gelu) in {"fc1 small (192x768)": (192, 768, True),
                               "fc1 tiny (128x256)": (128, 256, True),
                               "qkv small (192x576)": (192, 576, False)}.items():
        R = batch * 65
        x = rng.standard_normal((R, D)).astype(np.float32)
        W = (0.1 * rng.standard_normal((D, M))).astype(np.float32)
        b = rng.standard_normal(M).astype(np.float32)
        fn = (lambda: be.linear_gelu_forward(x, W, b)) if gelu else (lambda: be.linear_forward(x, W, b))
        t = alternate(lambda o: setattr(cls, "epi_rows", o), opts, fn, reps)
        res[name] = _summary(t, 2 * R * D * M)
    cls.epi_rows = old
    return res


def _exp_row_float64_consts(s, n, ibuf):
    # the pre-fix _exp_row fast path: the same polynomial, constants as Python floats
    for j in range(n):
        x = max(s[j], -87.0)
        k = math.floor(x * 1.44269504088896341 + 0.5)
        r = x - k * 0.693359375 + k * 2.12194440e-4
        p = 1.9875691500e-4
        p = p * r + 1.3981999507e-3
        p = p * r + 8.3334519073e-3
        p = p * r + 4.1665795894e-2
        p = p * r + 1.6666665459e-1
        p = p * r + 5.0000001201e-1
        s[j] = p * r * r + r + 1.0
        ibuf[j] = (np.int32(k) + np.int32(127)) << np.int32(23)
    f = ibuf.view(np.float32)
    for j in range(n):
        s[j] *= f[j]


def ab_exp(be, reps, batch):
    from numba import njit
    from minivit.backends.numba_cpu import _FM, _exp_row
    old = njit(fastmath=_FM)(_exp_row_float64_consts)

    @njit
    def rows_new(X, ibuf):
        for i in range(X.shape[0]):
            _exp_row(X[i], X.shape[1], ibuf, True)

    @njit
    def rows_old(X, ibuf):
        for i in range(X.shape[0]):
            old(X[i], X.shape[1], ibuf)

    rng = np.random.default_rng(0)
    X0 = (-5 * np.abs(rng.standard_normal((batch * 65, 65)))).astype(np.float32)
    ibuf = np.empty(65, np.int32)
    ref = np.exp(X0.astype(np.float64))
    res = {}
    for name, fn in (("new", rows_new), ("old", rows_old)):
        X = X0.copy()
        fn(X, ibuf)
        res[f"max_rel_err_{name}"] = float(np.max(np.abs(X - ref) / ref))
    work = {}
    t = alternate(lambda o: work.update(X=X0.copy(), fn=rows_new if o == "new" else rows_old),
                  ["new", "old"], lambda: work["fn"](work["X"], ibuf), reps)
    res.update(_summary(t))
    res["speedup"] = res["old"]["median_ms"] / res["new"]["median_ms"]
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--which", default="pool,attn,exp,epi",
                    help="comparisons to run; others already in --out are kept")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "ab_kernels.json"))
    a = ap.parse_args(argv)
    set_threads(a.threads)
    be = get_backend("numba")
    res = {}
    if os.path.isfile(a.out):                 # keep the comparisons not rerun this time
        with open(a.out) as f:
            res = json.load(f)
    res.update({"reps": a.reps, "batch": a.batch, "threads": a.threads,
                "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None})
    for w in [w for w in a.which.split(",") if w]:
        res[w] = {"pool": ab_pool, "attn": ab_attn, "exp": ab_exp,
                  "epi": ab_epi}[w](be, a.reps, a.batch)
        print(w, json.dumps(res[w], indent=1))
    res["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
