"""Data-parallel scaling over MPI: measured on this machine, and estimated for 8–64 workers.

Measured (training steps of ``--preset`` at global batch ``--batch``, float32, random data):
  * K = 1: one process, one thread (NUMBA/OpenBLAS/OpenMP threads = 1);
  * K = 2: ``mpirun -n 2``, one thread per rank, each rank half of the global batch, the
    gradients averaged with minivit.distributed (buffer-based Allreduce);
  * threads: one process with two threads on the whole batch.
Each reports images/s (global batch / median step time) and, for K = 2, the median time of
the gradient all-reduce; parallel efficiency = images/s ÷ (2 × images/s at K = 1).

Estimated: the bytes each rank all-reduces per step (the parameter count × 4 bytes, float32)
for every preset, and the alpha–beta model of a ring all-reduce,
    t_ar(K) = 2(K−1)·α + 2(K−1)/K · n/β,
for K = 8…64 workers over stated networks. At a fixed global batch B (paper: 4,096), one
worker computes a step in B·c seconds (c: seconds per image), K workers in B·c/K + t_ar(K)
(minivit does not overlap the all-reduce with the backward pass), so the parallel
efficiency is 1 / (1 + K·t_ar(K) / (B·c)). c comes from the training FLOPs per image
(3 × ``ViTConfig.flops_per_image``) at a stated sustained worker speed.

    python benchmarks/mpi_scaling.py [--preset cifar10-tiny] [--batch 64] [--steps 10]
        [--warmup 2] [--backend numba] [--quick]

Writes benchmarks/results/mpi_scaling.json. The measured part needs an idle machine with
at least two cores; on a loaded one the figures are noise (the JSON records the load).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

OUT = os.path.join(ROOT, "benchmarks", "results", "mpi_scaling.json")
THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

# Stated network figures (per-link bandwidth β in bytes/s, per-message latency α in s).
NETWORKS = {
    "25 Gbit/s Ethernet (TCP)": dict(beta=25e9 / 8, alpha=25e-6),
    "100 Gbit/s InfiniBand (EDR)": dict(beta=100e9 / 8, alpha=2e-6),
    # NVLink 3 (A100): 300 GB/s per direction per GPU; only inside one NVLink domain
    # (8 GPUs in an HGX node; more only with an NVLink switch system)
    "NVLink (A100, 300 GB/s)": dict(beta=300e9, alpha=5e-6),
}
# Stated sustained worker speeds (FLOP/s on minivit's float32 training step).
WORKERS = {"CPU node, 1 TFLOP/s": 1e12, "GPU, 20 TFLOP/s": 20e12}
GLOBAL_BATCH = 4096                                 # the paper's pre-training batch (§4.1)
KS = (8, 16, 32, 64)


# ---------------------------------------------------------------------- one measurement
def worker(args):
    """Runs inside each rank (or the single process): timed training steps."""
    import numpy as np

    from minivit import ViT, ViTConfig, distributed
    from minivit.optim import AdamW, clip_grad_norm

    comm = distributed.current()
    cfg = ViTConfig.preset(args.preset)
    rng = np.random.default_rng(0)
    S, C = cfg.image_size, cfg.channels
    images = rng.standard_normal((args.batch, S, S, C)).astype(np.float32)
    labels = rng.integers(0, cfg.num_classes, size=args.batch)
    comm.check_launch(args.batch)
    model = ViT(cfg, seed=0, dtype="float32", backend=args.backend)
    opt = AdamW(model, 1e-3)
    xs, ys = comm.shard(images, labels)
    steps, ars = [], []
    for i in range(args.warmup + args.steps):
        _barrier(comm)
        t0 = time.perf_counter()
        model.loss_and_grads(xs, ys, 0.1)
        t1 = time.perf_counter()
        comm.allreduce_grads(model.be, model.grads)
        t2 = time.perf_counter()
        clip_grad_norm(model.be, model.grads, 1.0)
        opt.step()
        t3 = time.perf_counter()
        if i >= args.warmup:
            steps.append(t3 - t0)
            ars.append(t2 - t1)
    if comm.is_root:
        step = statistics.median(steps)
        print("RESULT " + json.dumps({
            "ranks": comm.size, "step_s": step, "allreduce_s": statistics.median(ars),
            "images_per_s": args.batch / step,
            "gflops_per_s": 3 * cfg.flops_per_image() * args.batch / step / 1e9}))


def _barrier(comm):
    if comm.size > 1:
        comm.comm.Barrier()


def run_one(args, ranks, threads):
    env = dict(os.environ)
    for k in THREAD_VARS:
        env[k] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--preset", args.preset,
           "--batch", str(args.batch), "--steps", str(args.steps), "--warmup",
           str(args.warmup), "--backend", args.backend]
    if ranks > 1:
        mpirun = shutil.which("mpirun", path=os.path.dirname(sys.executable)) or shutil.which("mpirun")
        if not mpirun:
            sys.exit("mpi_scaling: mpirun not found; pip install -e '.[mpi]'")
        cmd = [mpirun, "-n", str(ranks)] + cmd
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode:
        sys.exit(f"mpi_scaling: {' '.join(cmd)} failed: {p.stderr.strip().splitlines()[-1:]}")
    line = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


# ---------------------------------------------------------------------- the estimate
def estimate():
    """Bytes per step for every preset, and the alpha-beta ring all-reduce estimate."""
    from minivit import ViTConfig, distributed
    from minivit.config import PRESETS
    rows = []
    for name in PRESETS:
        cfg = ViTConfig.preset(name)
        nbytes = distributed.allreduce_bytes(cfg.num_params(), "float32")
        train_flops = 3 * cfg.flops_per_image()
        row = {"preset": name, "params": cfg.num_params(), "allreduce_bytes_per_step": nbytes,
               "train_gflops_per_image": train_flops / 1e9, "networks": {}}
        for net, f in NETWORKS.items():
            per_k = {}
            for K in KS:
                t_ar = distributed.ring_allreduce_seconds(nbytes, K, f["beta"], f["alpha"])
                eff = {w: 1.0 / (1.0 + K * t_ar / (GLOBAL_BATCH * train_flops / speed))
                       for w, speed in WORKERS.items()}
                per_k[K] = {"allreduce_s": t_ar, "efficiency": eff}
            row["networks"][net] = per_k
        rows.append(row)
    return rows


def print_estimate(rows):
    print(f"\nring all-reduce estimate, global batch {GLOBAL_BATCH}, float32 gradients")
    print(f"{'preset':14s} {'params':>12s} {'MB/step':>9s}  network                       "
          + "  ".join(f"K={K:<3d} t_ar  eff(CPU/GPU)" for K in KS))
    for r in rows:
        for net, per_k in r["networks"].items():
            cells = []
            for K in KS:
                e = per_k[K]["efficiency"]
                cells.append(f"{1e3 * per_k[K]['allreduce_s']:8.2f}ms {100 * e['CPU node, 1 TFLOP/s']:3.0f}%/"
                             f"{100 * e['GPU, 20 TFLOP/s']:3.0f}%")
            print(f"{r['preset']:14s} {r['params']:12,d} {r['allreduce_bytes_per_step'] / 1e6:9.2f}  "
                  f"{net:29s} " + "  ".join(cells))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cifar10-tiny")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--backend", default="numba")
    ap.add_argument("--quick", action="store_true", help="3 timed steps, 1 warm-up (smoke test)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.steps, args.warmup = 3, 1
    if args.worker:
        return worker(args)

    load = os.getloadavg()
    runs = {"K=1, 1 thread": run_one(args, 1, 1),
            "K=2 ranks, 1 thread each": run_one(args, 2, 1),
            "1 process, 2 threads": run_one(args, 1, 2)}
    base = runs["K=1, 1 thread"]["images_per_s"]
    print(f"{args.preset}, global batch {args.batch}, {args.backend}, {args.steps} timed steps "
          f"(load average before: {load[0]:.2f})")
    for name, r in runs.items():
        r["parallel_efficiency"] = r["images_per_s"] / (base * (1 if name.startswith("K=1") else 2))
        print(f"  {name:26s} {r['images_per_s']:8.1f} img/s  step {1e3 * r['step_s']:8.1f} ms  "
              f"all-reduce {1e3 * r['allreduce_s']:6.2f} ms  efficiency {100 * r['parallel_efficiency']:5.1f}%")
    rows = estimate()
    print_estimate(rows)
    result = {
        "command": "python benchmarks/mpi_scaling.py " + " ".join(sys.argv[1:]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "loadavg_before": load, "loadavg_after": os.getloadavg()},
        "settings": {"preset": args.preset, "batch": args.batch, "steps": args.steps,
                     "warmup": args.warmup, "backend": args.backend, "dtype": "float32"},
        "measured": runs,
        "estimate": {"global_batch": GLOBAL_BATCH, "networks": NETWORKS,
                     "worker_flops_per_s": WORKERS,
                     "model": "t_ar = 2(K-1) alpha + 2(K-1)/K n/beta; efficiency = "
                              "1/(1 + K t_ar/(B c)), c = 3 flops_per_image / worker speed",
                     "presets": rows},
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nwrote {os.path.relpath(OUT, ROOT)}")


if __name__ == "__main__":
    main()
