"""Images/s of a training step and of inference: minivit (numba) vs PyTorch eager vs
torch.compile, each measured as a user runs it.

A training step is forward + softmax cross-entropy + backward + AdamW over every parameter
(batch ``--batch``, float32); inference is a forward pass without gradients. The PyTorch
model (``torch_peer.py``) is the same architecture with the same maths (pre-LN blocks,
fused qkv, explicit-softmax attention, GELU of the config's form, LN eps, class token,
learned 1-D position embedding) and torch's AdamW; ``torch-compile`` is that model through
``torch.compile`` (inductor, default mode; the optimizer step stays eager).

How it is measured, and why:

* Every measurement runs in a **fresh subprocess started as a user's script**: the child
  is this file, whose first statement is ``import numpy`` (so NumPy's OpenBLAS pool is up
  before minivit or torch is imported), with the thread-pool environment variables
  (``OPENBLAS_*``, ``OMP_*``, ``MKL_*``, ``NUMBA_NUM_THREADS``, …) removed from its
  environment. The thread count is set at run time, as a user would: minivit's
  ``set_threads`` / ``torch.set_num_threads``.
* Frameworks are **alternated over rounds** (the order rotates each round), so a slow
  spell of a shared machine hits all of them; each round a child warms up (JIT
  compilation, ``torch.compile``'s compile) and then times ``--steps`` steps. Reported:
  the median over rounds of each round's median.
* **Peak memory** per framework: the child's peak RSS (``VmHWM``) at the end.
* **NumPy's float32 matmul peak** is measured in the same run (a child per round, same
  thread count): median GFLOP/s of (B·N×192)@(192×576), cifar10-small's qkv product.
  Achieved GFLOP/s = FLOPs per image (``ViTConfig.flops_per_image``; training ≈ 3×) ×
  images/s, and its percentage of that peak.

    python benchmarks/train_step.py [--rounds 5] [--steps 5] [--threads 2] [--batch 128]
        [--models cifar10-tiny,cifar10-small] [--frameworks numba,torch,torch-compile]
        [--quick] [--out FILE]

``--quick`` is a smoke run (batch 8, 1 round, 1 step, 1 warm-up). Writes
benchmarks/results/train_step.json; ``benchmarks/readme_tables.py`` turns it into the
README's table.
"""
import numpy as np  # noqa: I001  (first, as in any user's script: OpenBLAS starts here)

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FRAMEWORKS = ("numba", "torch", "torch-compile", "numpy")
# removed from the children's environment: a user's script runs without them
THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT", "OMP_NUM_THREADS",
              "OMP_WAIT_POLICY", "OMP_PROC_BIND", "GOMP_SPINCOUNT", "KMP_BLOCKTIME",
              "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER",
              "NUMEXPR_NUM_THREADS")
LR, BETAS, EPS, WD = 1e-3, (0.9, 0.999), 1e-8, 0.05


# ====================================================================== child side
def _peak_rss_mib():
    """Peak resident memory of this process (VmHWM), MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _batch(cfg, batch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, cfg.image_size, cfg.image_size, cfg.channels)).astype(np.float32)
    y = rng.integers(0, cfg.num_classes, size=batch).astype(np.int64)
    return x, y


def _minivit_runner(cfg, backend, threads):
    """(train_step, infer) closures for minivit on ``backend``, AdamW as the trainer's."""
    from minivit import ViT
    try:
        from minivit.backends.threads import set_threads
        set_threads(threads)
    except ImportError:                      # an older checkout: Numba's count only
        import numba
        numba.set_num_threads(threads)
    m = ViT(cfg, seed=0, dtype="float32", backend=backend)
    be = m.be
    state = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in m.params.items()}
    step = [0]

    def train(x, y):
        loss, _ = m.loss_and_grads(x, y)
        step[0] += 1
        for k, p in m.params.items():
            be.adamw_update(p, m.grads[k], *state[k], LR, BETAS[0], BETAS[1], EPS, WD, step[0])
        return loss

    def infer(x):
        out = m.forward(x)
        m.clear_cache()
        return out
    return train, infer


def _torch_runner(cfg, threads, compiled):
    """(train_step, infer) closures for the PyTorch peer, eager or torch.compile'd."""
    import torch
    import torch.nn.functional as F
    sys.path.insert(0, HERE)
    from torch_peer import build_torch_vit
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_torch_vit(torch, cfg, attention="explicit")
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    fwd = torch.compile(model) if compiled else model

    def train(x, y):
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(fwd(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    def infer(x):
        with torch.no_grad():
            return fwd(torch.from_numpy(x))
    return train, infer


def child_run(framework, model, batch, threads, steps, warmup):
    """In a fresh process: warm up, time ``steps`` training steps and inference batches."""
    sys.path.insert(0, ROOT)
    from minivit import ViTConfig
    cfg = ViTConfig.preset(model)
    x, y = _batch(cfg, batch)
    t0 = time.perf_counter()
    if framework in ("torch", "torch-compile"):
        train, infer = _torch_runner(cfg, threads, framework == "torch-compile")
    else:
        train, infer = _minivit_runner(cfg, framework, threads)
    for _ in range(warmup):
        train(x, y)
        infer(x)
    warm = time.perf_counter() - t0
    tt, ti = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        train(x, y)
        tt.append(time.perf_counter() - t0)
    for _ in range(steps):
        t0 = time.perf_counter()
        infer(x)
        ti.append(time.perf_counter() - t0)
    return {"train_s": tt, "infer_s": ti, "warmup_s": warm, "peak_rss_mib": _peak_rss_mib()}


def child_matmul(threads, rows, repeats=15):
    """NumPy float32 (rows×192)@(192×576) GFLOP/s (median), BLAS limited to ``threads``."""
    try:
        import threadpoolctl
        threadpoolctl.threadpool_limits(threads, user_api="blas")
    except ImportError:
        pass
    rng = np.random.default_rng(0)
    a = rng.standard_normal((rows, 192)).astype(np.float32)
    b = rng.standard_normal((192, 576)).astype(np.float32)
    for _ in range(3):
        a @ b
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t0)
    return {"gflops": 2 * rows * 192 * 576 / statistics.median(ts) / 1e9}


# ====================================================================== parent side
def _clean_env():
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    return env


def spawn(args, timeout=1800):
    """Run this file as a child with ``args``; return its JSON result (or an error dict)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--_child", json.dumps(args)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_clean_env())
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["exit status %d" % p.returncode])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def torch_available():
    try:
        import importlib.util
        return importlib.util.find_spec("torch") is not None
    except Exception:
        return False


def summarise(model, runs, batch, peak):
    """Per framework: medians over rounds (of per-round medians), img/s, GFLOP/s, RSS."""
    sys.path.insert(0, ROOT)
    from minivit import ViTConfig
    cfg = ViTConfig.preset(model)
    fwd = cfg.flops_per_image()
    out = {"config": cfg.to_dict(), "flops_per_image_forward": fwd, "backends": {}}
    for fw, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            out["backends"][fw] = {"error": rs[-1]["error"] if rs else "not run"}
            continue
        tt = statistics.median(statistics.median(r["train_s"]) for r in ok)
        ti = statistics.median(statistics.median(r["infer_s"]) for r in ok)
        tg, ig = 3 * fwd * batch / tt / 1e9, fwd * batch / ti / 1e9
        out["backends"][fw] = {
            "train_step_s": tt, "train_img_s": batch / tt, "train_gflops": tg,
            "train_pct_of_matmul_peak": 100 * tg / peak if peak else None,
            "infer_s": ti, "infer_img_s": batch / ti, "infer_gflops": ig,
            "infer_pct_of_matmul_peak": 100 * ig / peak if peak else None,
            "peak_rss_mib": max(r["peak_rss_mib"] for r in ok),
            "warmup_s": statistics.median(r["warmup_s"] for r in ok),
            "rounds": [{"train_s": r["train_s"], "infer_s": r["infer_s"]} for r in ok],
            "failed_rounds": len(rs) - len(ok)}
    bk = {k: v for k, v in out["backends"].items() if "error" not in v}
    out["ratios"] = {f"numba/{o}": {"train": bk["numba"]["train_img_s"] / bk[o]["train_img_s"],
                                    "infer": bk["numba"]["infer_img_s"] / bk[o]["infer_img_s"]}
                     for o in ("torch", "torch-compile", "numpy") if "numba" in bk and o in bk}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round and child")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--models", default="cifar10-tiny,cifar10-small")
    ap.add_argument("--frameworks", default="numba,torch,torch-compile")
    ap.add_argument("--quick", action="store_true", help="smoke run: batch 8, 1 round, 1 step")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "train_step.json"))
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._child:
        c = json.loads(a._child)
        if c["kind"] == "matmul":
            r = child_matmul(c["threads"], c["rows"])
        else:
            r = child_run(c["framework"], c["model"], c["batch"], c["threads"], c["steps"],
                          c["warmup"])
        print(json.dumps(r))
        return
    if a.quick:
        a.rounds, a.steps, a.warmup, a.batch = 1, 1, 1, 8
    fws = [f for f in a.frameworks.split(",") if f]
    bad = [f for f in fws if f not in FRAMEWORKS]
    if bad:
        ap.error(f"unknown framework(s) {', '.join(bad)}; choose from {', '.join(FRAMEWORKS)}")
    if not torch_available():
        print("[train_step] torch not installed: PyTorch columns skipped")
        fws = [f for f in fws if not f.startswith("torch")]
    models = [m for m in a.models.split(",") if m]
    runs = {m: {f: [] for f in fws} for m in models}
    peaks = []
    load0 = os.getloadavg() if hasattr(os, "getloadavg") else None
    for rnd in range(a.rounds):
        peaks.append(spawn({"kind": "matmul", "threads": a.threads, "rows": 65 * a.batch}))
        for model in models:
            order = fws[rnd % len(fws):] + fws[:rnd % len(fws)]
            for fw in order:
                r = spawn({"kind": "step", "framework": fw, "model": model, "batch": a.batch,
                           "threads": a.threads, "steps": a.steps, "warmup": a.warmup})
                runs[model][fw].append(r)
                msg = r.get("error") or (f"train {1e3 * statistics.median(r['train_s']):.0f} ms, "
                                         f"infer {1e3 * statistics.median(r['infer_s']):.0f} ms")
                print(f"round {rnd + 1}/{a.rounds} {model:14s} {fw:14s} {msg}", flush=True)
    good = [p["gflops"] for p in peaks if "gflops" in p]
    peak = statistics.median(good) if good else None
    res = {"batch": a.batch, "rounds": a.rounds, "steps": a.steps, "threads": a.threads,
           "numba_threads": a.threads, "numpy_matmul_gflops": peak,
           "numpy_matmul_shape": f"({65 * a.batch}x192)@(192x576) float32",
           "numpy_matmul_gflops_all": good, "cpu_count": os.cpu_count(),
           "machine": platform.processor() or platform.machine(), "python": sys.version.split()[0],
           "how": "fresh subprocess per (round, framework), numpy imported first, thread env "
                  "vars removed; median over rounds of per-round medians",
           "env_removed": list(THREAD_ENV), "quick": a.quick,
           # 1-minute load averages at start and end: a busy machine shows up here
           "load_average": [load0, os.getloadavg() if hasattr(os, "getloadavg") else None],
           "models": {}}
    try:
        import torch
        res["torch_version"] = torch.__version__
    except ImportError:
        pass
    for model in models:
        r = summarise(model, runs[model], a.batch, peak)
        res["models"][model] = r
        print(f"\n{model} (batch {a.batch}, float32, {a.threads} threads, median of {a.rounds} "
              f"rounds; NumPy matmul peak {peak or float('nan'):.1f} GFLOP/s)")
        print(f"  {'framework':14s} {'train img/s':>11s} {'GFLOP/s':>8s} {'% peak':>7s} "
              f"{'infer img/s':>11s} {'GFLOP/s':>8s} {'peak RSS MiB':>12s}")
        for fw, v in r["backends"].items():
            if "error" in v:
                print(f"  {fw:14s} error: {v['error']}")
                continue
            print(f"  {fw:14s} {v['train_img_s']:11.1f} {v['train_gflops']:8.1f} "
                  f"{v['train_pct_of_matmul_peak'] or float('nan'):6.1f}% {v['infer_img_s']:11.1f} "
                  f"{v['infer_gflops']:8.1f} {v['peak_rss_mib']:12.0f}")
        for pair, q in r["ratios"].items():
            print(f"  {pair}: train {q['train']:.2f}x, inference {q['infer']:.2f}x")
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
