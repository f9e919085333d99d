"""GPU benchmarks of the CUDA backend against cuBLAS / PyTorch, float32, TF32 off.
The one script a session with a GPU runs (issue 11):

    python benchmarks/gpu.py [--quick] [--data-dir ../shared/data] [--out benchmarks/results/gpu.json]

0. tests: the CUDA test suite on the real GPU (tests/cuda, simulator off).
1. matmul: GFLOP/s of the tiled kernel (cuda_kernels.matmul) vs cuBLAS SGEMM (through
   CuPy or PyTorch, whichever imports) at the layer shapes of cifar10-tiny (batch 128)
   and ViT-B/16 (batch 64), and for square M = N = K in 1024 … 8192. Aim: ≥ 50%.
2. attention: fused forward + backward (flash-style kernels) vs torch SDPA, float32,
   on ViT-shaped problems.
3. training: images/s of a full AdamW step (forward, loss, backward, update) for the
   CIFAR presets, minivit on the cuda backend vs the same model in PyTorch CUDA eager
   (fp32, TF32 off). Aim: ≥ 0.5×.
4. epoch: wall time of one CIFAR-10 epoch of cifar10-tiny through the CLI
   (``minivit train --backend cuda``; includes the kernels' JIT compilation, reported
   separately as the first epoch's overhead is not split out). Aim: < 30 s.

Results are printed and written as JSON. Without a GPU (or under the simulator) it prints
why and exits with status 0, writing nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def gpu_or_reason():
    """None when a real CUDA GPU is usable, else a sentence saying why not."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return "NUMBA_ENABLE_CUDASIM=1: the simulator runs kernels in Python threads; timings would be meaningless"
    try:
        from numba import cuda
    except Exception as exc:                                   # pragma: no cover
        return f"numba.cuda does not import ({exc})"
    try:
        if not cuda.is_available():
            return "no CUDA GPU found (numba.cuda.is_available() is False)"
    except Exception as exc:
        return f"CUDA driver problem: {exc}"
    return None


def _torch():
    try:
        import torch
        if torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            return torch
    except Exception:
        pass
    return None


def _cupy():
    try:
        import cupy
        cupy.cuda.runtime.getDeviceCount()
        return cupy
    except Exception:
        return None


def time_numba(fn, reps, warmup=2):
    """Median seconds of fn() on the device, timed with CUDA events."""
    from numba import cuda
    for _ in range(warmup):
        fn()
    cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = cuda.event(), cuda.event()
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) / 1e3)          # ms → s
    return max(float(np.median(ts)), 1e-9)


def time_torch(torch, fn, reps, warmup=2):
    """Median seconds of fn() with torch CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) / 1e3)
    return max(float(np.median(ts)), 1e-9)


# ---------------------------------------------------------------------- 1. matmul
# (name, M, K, N) of the linear layers: tokens × in → out, M = batch · (N + 1)
LAYER_SHAPES = [
    ("tiny qkv", 128 * 65, 128, 384), ("tiny proj", 128 * 65, 128, 128),
    ("tiny fc1", 128 * 65, 128, 256), ("tiny fc2", 128 * 65, 256, 128),
    ("b16 qkv", 64 * 197, 768, 2304), ("b16 fc1", 64 * 197, 768, 3072),
    ("b16 fc2", 64 * 197, 3072, 768),
]


def bench_matmul(be, shapes, reps):
    """shapes: (name, M, K, N) — C (M, N) = A (M, K) · B (K, N)."""
    torch, cupy = _torch(), _cupy()
    rows = []
    for name, m, k, n in shapes:
        rng = np.random.default_rng(0)
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        da, db, dc = be.asarray(a), be.asarray(b), be.zeros((m, n), np.float32)
        flops = 2.0 * m * k * n
        t = time_numba(lambda: be._matmul(da, db, dc), reps)
        row = {"shape": name, "M": m, "K": k, "N": n, "minivit_gflops": flops / t / 1e9,
               "minivit_s": t}
        if m * k <= 2048 * 2048:                        # spot-check correctness
            ref = a[:64].astype(np.float64) @ b.astype(np.float64)
            err = np.abs(be.to_host(dc)[:64] - ref).max() / np.abs(ref).max()
            row["max_rel_err_first_rows"] = float(err)
        if cupy is not None:
            ca, cb = cupy.asarray(a), cupy.asarray(b)
            ev = cupy.cuda.Event

            def run():
                ca @ cb
            run()
            cupy.cuda.Device().synchronize()
            ts = []
            for _ in range(reps):
                s, e = ev(), ev()
                s.record()
                run()
                e.record()
                e.synchronize()
                ts.append(cupy.cuda.get_elapsed_time(s, e) / 1e3)
            row["cublas_via"] = "cupy"
            row["cublas_gflops"] = flops / float(np.median(ts)) / 1e9
        elif torch is not None:
            ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
            tt = time_torch(torch, lambda: ta @ tb, reps)
            row["cublas_via"] = "torch"
            row["cublas_gflops"] = flops / tt / 1e9
        if "cublas_gflops" in row:
            row["fraction_of_cublas"] = row["minivit_gflops"] / row["cublas_gflops"]
        print(f"matmul {name:10s} {m}x{k}x{n}: minivit {row['minivit_gflops']:9.1f} GFLOP/s"
              + (f"   cuBLAS ({row['cublas_via']}) {row['cublas_gflops']:9.1f} GFLOP/s"
                 f"   ratio {row['fraction_of_cublas']:.2f}" if "cublas_gflops" in row else ""))
        rows.append(row)
        del da, db, dc
    return rows


# ---------------------------------------------------------------------- 2. attention
def bench_attention(be, cases, reps):
    torch = _torch()
    rows = []
    for B, N, H, Dh in cases:
        D = H * Dh
        rng = np.random.default_rng(0)
        qkv = rng.standard_normal((B, N, 3 * D), dtype=np.float32)
        dout = rng.standard_normal((B, N, D), dtype=np.float32)
        dq, dd = be.asarray(qkv), be.asarray(dout)

        def fwd_bwd():
            _, c = be.mhsa_core_forward(dq, H)
            be.mhsa_core_backward(dd, c)
        t = time_numba(fwd_bwd, reps)
        # FLOPs of the reference algorithm: fwd 2 matmuls, bwd 4 (recomputation not counted)
        flops = 6 * 2.0 * B * H * N * N * Dh
        row = {"B": B, "N": N, "H": H, "Dh": Dh, "minivit_s": t,
               "minivit_gflops": flops / t / 1e9}
        if torch is not None:
            import torch.nn.functional as Fnn
            x = torch.from_numpy(qkv).cuda().view(B, N, 3, H, Dh).permute(2, 0, 3, 1, 4)
            q, k, v = (x[i].contiguous().requires_grad_(True) for i in range(3))
            g = torch.from_numpy(dout).cuda().view(B, N, H, Dh).transpose(1, 2).contiguous()

            def t_fwd_bwd():
                o = Fnn.scaled_dot_product_attention(q, k, v)
                o.backward(g)
            tt = time_torch(torch, t_fwd_bwd, reps)
            row.update(torch_sdpa_s=tt, torch_sdpa_gflops=flops / tt / 1e9,
                       speed_vs_torch=tt / t)
        print(f"attention B={B} N={N} H={H} Dh={Dh}: minivit {t * 1e3:8.3f} ms"
              + (f"   torch SDPA {row['torch_sdpa_s'] * 1e3:8.3f} ms" if torch else ""))
        rows.append(row)
    return rows


# ---------------------------------------------------------------------- 3. training
def torch_vit(torch, cfg):
    """The same ViT in PyTorch (benchmarks/torch_peer.py), with SDPA attention."""
    from torch_peer import build_torch_vit
    return build_torch_vit(torch, cfg, attention="sdpa")


def cuda_training_step(cfg, batch, backend="cuda"):
    """A fresh float32 ViT of ``cfg`` on ``backend`` (the cuda backend, or an instance of
    it), a random batch x: (batch, H, W, C), y: (batch,), and ``step(i)``: forward, loss,
    backward and AdamW over every parameter (step number i + 1); returns ``(step, x, y)``."""
    from minivit import ViT
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, cfg.image_size, cfg.image_size, cfg.channels),
                            dtype=np.float32)
    y = rng.integers(0, cfg.num_classes, size=batch)
    model = ViT(cfg, dtype="float32", backend=backend)
    be = model.be
    state = {k: (be.zeros_like(p), be.zeros_like(p)) for k, p in model.params.items()}

    def step(i):
        logits = model.forward(x)
        loss, dl = be.softmax_cross_entropy(logits, y)
        model.backward(dl)
        for k, p in model.params.items():
            be.adamw_update(p, model.grads[k], *state[k], 1e-3, 0.9, 0.999, 1e-8, 0.05, i + 1)
        return loss
    return step, x, y


def bench_training(presets, batch, steps):
    from minivit import ViTConfig
    torch = _torch()
    rows = []
    for name in presets:
        cfg = ViTConfig.preset(name)
        step, x, y = cuda_training_step(cfg, batch)

        from numba import cuda
        for i in range(3):
            step(i)
        cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(steps):
            step(i + 3)                  # returns the loss: a sync point every step
        cuda.synchronize()
        ips = batch * steps / (time.perf_counter() - t0)
        row = {"preset": name, "batch": batch, "minivit_images_per_s": ips}
        if torch is not None:
            tm = torch_vit(torch, cfg).cuda()
            opt = torch.optim.AdamW(tm.parameters(), lr=1e-3, weight_decay=0.05)
            tx, ty = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()

            def tstep():
                opt.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(tm(tx), ty)
                loss.backward()
                opt.step()
                return loss.item()       # the same per-step sync as minivit
            for _ in range(3):
                tstep()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(steps):
                tstep()
            torch.cuda.synchronize()
            row["torch_eager_images_per_s"] = batch * steps / (time.perf_counter() - t0)
            row["ratio_vs_torch"] = ips / row["torch_eager_images_per_s"]
        print(f"train {name:14s} B={batch}: minivit {ips:9.0f} img/s"
              + (f"   torch eager {row['torch_eager_images_per_s']:9.0f} img/s" if torch else ""))
        rows.append(row)
    return rows


# ---------------------------------------------------------------------- 0. tests
def run_cuda_tests(timeout_s):
    """The CUDA test suite on the real GPU (the simulator off): pass/fail counts, and the
    output's tail where anything failed or the run outlasted `timeout_s`."""
    import subprocess
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider",
           "--durations=5", str(ROOT / "tests" / "cuda")]
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT,
                           timeout=timeout_s)
        rc, text = r.returncode, r.stdout + r.stderr
    except subprocess.TimeoutExpired as exc:
        rc = None
        text = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) \
            else (exc.stdout or "")
    lines = text.strip().splitlines()
    last = lines[-1] if lines and rc is not None else f"timed out after {timeout_s} s"
    print(f"CUDA tests on the GPU: {last}")
    row = {"returncode": rc, "summary": last, "seconds": time.perf_counter() - t0}
    if rc != 0:
        row["output_tail"] = lines[-80:]
    return row


# ---------------------------------------------------------------------- 4. one epoch
def time_epoch(data_dir, batch, timeout_s):
    """Wall time of one cifar10-tiny epoch through the CLI on the cuda backend."""
    import subprocess
    import tempfile
    if not (Path(data_dir) / "cifar-10-binary.tar.gz").exists() and \
            not any(Path(data_dir).glob("cifar-10-batches-bin*")):
        print(f"epoch: no CIFAR-10 in {data_dir}; skipped")
        return {"skipped": f"no CIFAR-10 in {data_dir}"}
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        try:
            r = subprocess.run([sys.executable, "-m", "minivit.cli", "train", "--preset",
                                "cifar10-tiny", "--epochs", "1", "--batch-size", str(batch),
                                "--backend", "cuda", "--data-dir", str(data_dir), "--out",
                                str(Path(out) / "run"), "--no-progress"], env=env,
                               capture_output=True, text=True, cwd=ROOT, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            print(f"epoch cifar10-tiny B={batch} on cuda: over {timeout_s} s; stopped")
            return {"preset": "cifar10-tiny", "batch": batch, "timed_out_s": timeout_s}
        wall = time.perf_counter() - t0
    tail = r.stdout.strip().splitlines()[-8:] + r.stderr.strip().splitlines()[-8:]
    print(f"epoch cifar10-tiny B={batch} on cuda: {wall:.1f} s (rc {r.returncode})")
    return {"preset": "cifar10-tiny", "batch": batch, "wall_s": wall,
            "returncode": r.returncode, "log_tail": tail}


def _versions():
    """Versions of the packages the numbers depend on (None where one does not import)."""
    from importlib import metadata
    got = {}
    for name in ("numba", "numba-cuda", "llvmlite", "numpy", "cuda-bindings", "torch",
                 "cupy-cuda13x", "cupy-cuda12x"):
        try:
            got[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            got[name] = None
    return got


def _write_json(out, path):
    """Write `out` to `path` atomically (a temporary file, then a rename)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=2))
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer repetitions")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu.json"))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--skip-tests", action="store_true", help="no CUDA test suite run")
    ap.add_argument("--tests-timeout", type=float, default=1800,
                    help="seconds the CUDA test suite may take")
    ap.add_argument("--epoch-timeout", type=float, default=900,
                    help="seconds the one-epoch CLI run may take")
    args = ap.parse_args(argv)

    reason = gpu_or_reason()
    if reason:
        print(f"benchmarks/gpu.py: no GPU benchmark run — {reason}.")
        return 0

    from numba import cuda
    from minivit.backends import get_backend
    be = get_backend("cuda")
    dev = cuda.get_current_device()
    square = [1024, 2048] if args.quick else [1024, 2048, 4096, 8192]
    shapes = LAYER_SHAPES + [(f"square {n}", n, n, n) for n in square]
    reps = 3 if args.quick else 10
    cases = [(128, 65, 4, 32), (32, 197, 12, 64)]
    out = {
        "device": dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name),
        "compute_capability": list(dev.compute_capability),
        "python": platform.python_version(),
        "versions": _versions(),
        "tf32": False,
        "dtype": "float32",
        "tiles": be.tiles._asdict(),
    }
    # Written after every section, so a run cut short (a lease ending, a hang killed by
    # a timeout) still leaves what it measured.
    sections = [
        ("tests", lambda: None if args.skip_tests else run_cuda_tests(args.tests_timeout)),
        ("matmul", lambda: bench_matmul(be, shapes, reps)),
        ("attention", lambda: bench_attention(be, cases, reps)),
        ("training", lambda: bench_training(["cifar10-tiny", "cifar10-small"], args.batch,
                                            5 if args.quick else 20)),
        ("epoch", lambda: time_epoch(args.data_dir, args.batch, args.epoch_timeout)),
    ]
    for name, run in sections:
        out[name] = run()
        _write_json(out, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
