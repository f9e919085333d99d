"""Images/s of a full training step and of inference: numpy vs numba vs PyTorch CPU.

A training step is forward + backward + AdamW over every parameter (batch ``--batch``,
float32). The PyTorch model is the same architecture and the same maths (pre-LN blocks,
fused qkv, explicit-softmax attention, GELU tanh, LN eps 1e-6, class token, learned 1-D
position embedding, AdamW), run with ``torch.set_num_threads`` equal to Numba's thread
count. Backends are timed in interleaved rounds after a warm-up; the median is reported,
with achieved GFLOP/s (``ViTConfig.flops_per_image``; training ≈ 3× forward) against
NumPy's float32 matmul measured in the same run at (8320×192)@(192×576). Peak memory is the
peak RSS of a fresh subprocess running two steps of one backend (and its increase over the
same process just before the first step).

    python benchmarks/train_step.py [--repeats 7] [--batch 128]
        [--models cifar10-tiny,cifar10-small] [--backends numpy,numba,torch] [--quick]

Writes benchmarks/results/train_step.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

# Idle OpenBLAS workers sleep after ~16 cycles instead of spinning for ~2^28, so they do
# not steal the cores from the Numba kernels that run between matmuls (must precede the
# NumPy import). Neutral for PyTorch (oneDNN/OpenMP); recorded in the JSON.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
# Three thread pools share the cores in one process (OpenBLAS, Numba's OpenMP, torch's
# OpenMP) and take turns: a pool that busy-waits after its turn steals the next one's
# cores. So every OpenMP runtime here sleeps when idle (torch included: measured on 2
# cores it is as fast or faster with it, as the interleaved rounds no longer fight).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from minivit import ViT, ViTConfig  # noqa: E402

LR, BETAS, EPS, WD = 1e-3, (0.9, 0.999), 1e-8, 0.05


# ---------------------------------------------------------------------- minivit runners
class MinivitRunner:
    """Training step / inference of minivit on one backend; AdamW state per parameter."""

    def __init__(self, cfg, backend, batch, seed=0):
        self.model = ViT(cfg, seed=seed, dtype="float32", backend=backend)
        self.be = self.model.be
        self.state = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in self.model.params.items()}
        self.step_no = 0

    def train_step(self, images, labels):
        m, be = self.model, self.be
        loss, _ = m.loss_and_grads(images, labels)
        self.step_no += 1
        for k, p in m.params.items():
            mo, ve = self.state[k]
            be.adamw_update(p, m.grads[k], mo, ve, LR, BETAS[0], BETAS[1], EPS, WD, self.step_no)
        return loss

    def infer(self, images):
        out = self.model.forward(images)
        self.model.clear_cache()
        return out


# ---------------------------------------------------------------------- torch runner
def make_torch_runner(cfg, batch, threads):
    """The same ViT in PyTorch (identical maths), AdamW; returns a runner object."""
    import torch
    import torch.nn.functional as F

    from torch_peer import build_torch_vit

    torch.set_num_threads(threads)

    class Runner:
        def __init__(self):
            torch.manual_seed(0)
            self.model = build_torch_vit(torch, cfg, attention="explicit")
            self.opt = torch.optim.AdamW(self.model.parameters(), lr=LR, betas=BETAS, eps=EPS,
                                         weight_decay=WD)

        def train_step(self, images, labels):
            x, y = torch.from_numpy(images), torch.from_numpy(labels)
            self.opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.model(x), y)
            loss.backward()
            self.opt.step()
            return loss.item()

        def infer(self, images):
            with torch.no_grad():
                return self.model(torch.from_numpy(images))

    return Runner()


def torch_available():
    try:
        import torch  # noqa: F401
        return True
    except Exception as e:                      # pragma: no cover - depends on the machine
        print(f"[train_step] torch not importable ({e.__class__.__name__}: {e}); "
              f"skipping the PyTorch column")
        return False


def numba_threads():
    # Import the backend before anything starts Numba's thread pool: the module sets
    # OMP_WAIT_POLICY=PASSIVE for that pool (torch, imported earlier, keeps its default).
    import numba
    import minivit.backends.numba_cpu  # noqa: F401
    return numba.get_num_threads()


def make_runner(name, cfg, batch):
    if name == "torch":
        return make_torch_runner(cfg, batch, numba_threads())
    return MinivitRunner(cfg, name, batch)


def make_batch(cfg, batch, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch, cfg.image_size, cfg.image_size, cfg.channels)).astype(np.float32)
    labels = rng.integers(0, cfg.num_classes, size=batch).astype(np.int64)
    return images, labels


# ---------------------------------------------------------------------- measurements
def matmul_peak(repeats=15):
    """Median GFLOP/s of NumPy float32 (8320×192)@(192×576), the qkv shape of cifar10-small."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((8320, 192)).astype(np.float32)
    b = rng.standard_normal((192, 576)).astype(np.float32)
    for _ in range(3):
        a @ b
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t0)
    return 2 * 8320 * 192 * 576 / statistics.median(ts) / 1e9


def _vm_hwm_mib():
    """Peak RSS of this process in MiB: VmHWM from /proc (reset at exec, unlike ru_maxrss,
    which a child inherits from its parent), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(backend, model, batch):
    """Runs in a subprocess: two training steps; prints JSON with peak RSS (MiB)."""
    cfg = ViTConfig.preset(model)
    images, labels = make_batch(cfg, batch)
    r = make_runner(backend, cfg, batch)
    before = _vm_hwm_mib()
    for _ in range(2):
        r.train_step(images, labels)
    peak = _vm_hwm_mib()
    print(json.dumps({"peak_rss_mib": round(peak, 1), "step_increase_mib": round(peak - before, 1)}))


def peak_memory(backend, model, batch):
    cmd = [sys.executable, os.path.abspath(__file__), "--_memory-child", backend, model, str(batch)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    except Exception as e:
        return {"error": f"{e.__class__.__name__}: {e}"}


def bench_model(model, backends, batch, repeats, warmup, steps_per_round, memory):
    cfg = ViTConfig.preset(model)
    images, labels = make_batch(cfg, batch)
    runners = {b: make_runner(b, cfg, batch) for b in backends}
    for r in runners.values():                          # warm-up (and JIT compilation)
        for _ in range(warmup):
            r.train_step(images, labels)
            r.infer(images)
    train_t = {b: [] for b in backends}
    infer_t = {b: [] for b in backends}
    for _ in range(repeats):                            # interleaved rounds
        for b, r in runners.items():
            t0 = time.perf_counter()
            for _ in range(steps_per_round):
                r.train_step(images, labels)
            train_t[b].append((time.perf_counter() - t0) / steps_per_round)
            t0 = time.perf_counter()
            for _ in range(steps_per_round):
                r.infer(images)
            infer_t[b].append((time.perf_counter() - t0) / steps_per_round)
    fwd = cfg.flops_per_image()
    res = {"config": cfg.to_dict(), "flops_per_image_forward": fwd, "backends": {}}
    for b in backends:
        tt, ti = statistics.median(train_t[b]), statistics.median(infer_t[b])
        res["backends"][b] = {
            "train_step_s": tt, "train_img_s": batch / tt,
            "train_gflops": 3 * fwd * batch / tt / 1e9,
            "infer_s": ti, "infer_img_s": batch / ti, "infer_gflops": fwd * batch / ti / 1e9,
            "train_step_s_all": train_t[b], "infer_s_all": infer_t[b],
        }
        if memory:
            res["backends"][b]["memory"] = peak_memory(b, model, batch)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--models", default="cifar10-tiny,cifar10-small")
    ap.add_argument("--backends", default="numpy,numba,torch")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--quick", action="store_true", help="smoke test: batch 16, 2 repeats")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "train_step.json"))
    ap.add_argument("--_memory-child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._memory_child:
        backend, model, batch = a._memory_child
        memory_child(backend, model, int(batch))
        return
    if a.quick:
        a.repeats, a.batch, a.warmup = 2, 16, 1
    backends = [b for b in a.backends.split(",") if b]
    if "torch" in backends and not torch_available():
        backends.remove("torch")
    threads = numba_threads()
    peak = matmul_peak()
    print(f"threads: numba {threads}; NumPy float32 matmul (8320x192)@(192x576): "
          f"{peak:.1f} GFLOP/s")
    results = {"batch": a.batch, "repeats": a.repeats, "numba_threads": threads,
               "numpy_matmul_gflops": peak, "machine": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "models": {},
               "env": {k: os.environ.get(k) for k in ("OPENBLAS_THREAD_TIMEOUT", "OMP_WAIT_POLICY",
                                                       "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}
    for model in [m for m in a.models.split(",") if m]:
        r = bench_model(model, backends, a.batch, a.repeats, a.warmup, 1, not a.no_memory)
        results["models"][model] = r
        print(f"\n{model} (batch {a.batch}, float32, median of {a.repeats})")
        print(f"  {'backend':8s} {'train img/s':>12s} {'GFLOP/s':>8s} {'% peak':>7s} "
              f"{'infer img/s':>12s} {'GFLOP/s':>8s} {'peak RSS MiB':>13s}")
        for b, v in r["backends"].items():
            mem = v.get("memory", {}).get("peak_rss_mib", float("nan"))
            print(f"  {b:8s} {v['train_img_s']:12.1f} {v['train_gflops']:8.1f} "
                  f"{100 * v['train_gflops'] / peak:6.1f}% {v['infer_img_s']:12.1f} "
                  f"{v['infer_gflops']:8.1f} {mem:13.1f}")
        bk = r["backends"]
        ratios = {}
        for other in ("torch", "numpy"):
            if "numba" in bk and other in bk:
                ratios[f"numba/{other}"] = {
                    "train": bk["numba"]["train_img_s"] / bk[other]["train_img_s"],
                    "infer": bk["numba"]["infer_img_s"] / bk[other]["infer_img_s"]}
                print(f"  numba/{other}: train {ratios[f'numba/{other}']['train']:.2f}x, "
                      f"inference {ratios[f'numba/{other}']['infer']:.2f}x")
        r["ratios"] = ratios
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
