"""How fast are the conv layers? Numba fwd+bwd GFLOP/s on a ResNet's conv shapes, against
the machine's float32 matmul peak measured in the same run, and PyTorch CPU on the same
layers and the same whole net.

For every distinct conv of the preset (stem, each block's conv1/conv2, the 1×1 stride-2
shortcuts) at batch B, float32:
    numba  NumbaConvOps.conv2d_forward + conv2d_backward (blocks of images: im2col fields
           and single-threaded GEMMs issued from Numba's threads; dx as the transposed conv
           for stride 1), the stem without dx (its input is the image)
    torch  F.conv2d forward + autograd backward, NCHW, same threads
FLOPs: 2·B·H_o·W_o·k²·C_in·C_out forward, twice that backward (once for the stem).
The peak is the best GFLOP/s of NumPy float32 ``@`` on large square matrices (the same
OpenBLAS the conv GEMMs call), so "fraction of peak" is against what this machine's BLAS
can do, not a datasheet. Then the whole ResNet training step (forward + backward, loss,
no optimizer) for minivit-numba and for the same net in torch (tests/torch_resnet.py, the
module the parity tests check against minivit).

    python benchmarks/conv_speed.py [--preset resnet-20] [--batch 128] [--repeats 5] [--quick]

Prints a table and writes benchmarks/results/conv_speed.json. --quick (batch 16, 2
repeats, smaller peak matrices) is a smoke run: its numbers are not measurements.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")   # as in train_step.py

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numba  # noqa: E402

from matmul_choice import timeit  # noqa: E402  (median of repeats after a warm-up)

from minivit.backends.conv_ops import get_conv_ops  # noqa: E402
from minivit.resnet import ResNet  # noqa: E402
from minivit.resnet_config import ResNetConfig  # noqa: E402


def matmul_peak(sizes, repeats):
    """Best float32 GFLOP/s of NumPy ``@`` on n × n matrices, n in sizes."""
    rng = np.random.default_rng(0)
    best = {}
    for n in sizes:
        a = rng.standard_normal((n, n)).astype(np.float32)
        b = rng.standard_normal((n, n)).astype(np.float32)
        best[n] = 2 * n ** 3 / timeit(lambda: a @ b, repeats) / 1e9
    return max(best.values()), best


def conv_shapes(cfg):
    """Distinct convs of the net: (H_in, C_in, C_out, k, stride, padding, need_dx) → count."""
    out = {}
    key = (cfg.image_size, cfg.channels, cfg.stem_width, 3, 1, 1, False)
    out[key] = 1
    S = cfg.image_size
    for _, cin, w, stride in cfg.blocks():
        for k in ((S, cin, w, 3, stride, 1, True), (S // stride, w, w, 3, 1, 1, True)):
            out[k] = out.get(k, 0) + 1
        if stride != 1 or cin != w:
            k = (S, cin, w, 1, stride, 0, True)
            out[k] = out.get(k, 0) + 1
        S //= stride
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="resnet-20")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smoke run: batch 16, 2 repeats")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "conv_speed.json"))
    a = ap.parse_args(argv)
    if a.quick:
        a.batch, a.repeats = 16, 2
    cfg = ResNetConfig.preset(a.preset)
    B = a.batch
    threads = numba.get_num_threads()
    try:
        import torch
        torch.set_num_threads(threads)
        F = torch.nn.functional
    except Exception:
        torch = None
        print("[conv_speed] torch not importable; skipping its columns")

    peak, per_n = matmul_peak((512, 1024) if a.quick else (1024, 2048, 3072), a.repeats)
    print(f"NumPy float32 matmul peak: {peak:.1f} GFLOP/s ({threads} threads)")

    nb = get_conv_ops("numba")
    rng = np.random.default_rng(0)
    layers = []
    tot = {"flops": 0.0, "numba_s": 0.0, "torch_s": 0.0}
    print(f"{'conv (H, Cin→Cout, k, s)':30s} {'x':>3s} {'numba GF/s':>11s} {'% peak':>7s} "
          f"{'torch GF/s':>11s}")
    for (H, cin, cout, k, s, p, need_dx), count in conv_shapes(cfg).items():
        x = rng.standard_normal((B, H, H, cin)).astype(np.float32)
        W = (0.1 * rng.standard_normal((k, k, cin, cout))).astype(np.float32)
        Ho = (H + 2 * p - k) // s + 1
        dy = rng.standard_normal((B, Ho, Ho, cout)).astype(np.float32)
        fwd = 2.0 * B * Ho * Ho * k * k * cin * cout
        flops = fwd * (3 if need_dx else 2)

        def step_nb():
            _, c = nb.conv2d_forward(x, W, None, s, p)
            nb.conv2d_backward(dy, c, need_dx)
        t_nb = timeit(step_nb, a.repeats)
        row = dict(H=H, C_in=cin, C_out=cout, k=k, stride=s, padding=p, count=count,
                   need_dx=need_dx, gflop=flops / 1e9, numba_s=t_nb,
                   numba_gflops=flops / t_nb / 1e9, numba_frac_peak=flops / t_nb / 1e9 / peak)
        if torch is not None:
            tx = torch.tensor(x).permute(0, 3, 1, 2).contiguous().requires_grad_(need_dx)
            tW = torch.tensor(W).permute(3, 2, 0, 1).contiguous().requires_grad_(True)
            tdy = torch.tensor(dy).permute(0, 3, 1, 2).contiguous()

            def step_t():
                tW.grad = None
                if need_dx:
                    tx.grad = None
                F.conv2d(tx, tW, None, s, p).backward(tdy)
            t_t = timeit(step_t, a.repeats)
            row.update(torch_s=t_t, torch_gflops=flops / t_t / 1e9)
            tot["torch_s"] += count * t_t
        layers.append(row)
        tot["flops"] += count * flops
        tot["numba_s"] += count * t_nb
        print(f"({H:2d}, {cin:3d}→{cout:3d}, {k}, {s}){'':14s} {count:3d} {row['numba_gflops']:11.1f} "
              f"{100 * row['numba_frac_peak']:6.0f}% "
              f"{row.get('torch_gflops', float('nan')):11.1f}")
    overall = {"numba_gflops": tot["flops"] / tot["numba_s"] / 1e9}
    overall["numba_frac_peak"] = overall["numba_gflops"] / peak
    if torch is not None:
        overall["torch_gflops"] = tot["flops"] / tot["torch_s"] / 1e9
    print(f"all convs of {a.preset}, weighted by count: numba {overall['numba_gflops']:.1f} "
          f"GFLOP/s = {100 * overall['numba_frac_peak']:.0f}% of peak; torch "
          f"{overall.get('torch_gflops', float('nan')):.1f} GFLOP/s")

    # The whole net: one training step's forward + backward (loss included, no update).
    xs = rng.standard_normal((B, cfg.image_size, cfg.image_size, 3)).astype(np.float32)
    ys = np.arange(B) % cfg.num_classes
    m = ResNet(cfg, backend="numba")
    step_flops = 3.0 * cfg.flops_per_image() * B
    t_m = timeit(lambda: m.loss_and_grads(xs, ys), a.repeats)
    net = {"flops_per_image": cfg.flops_per_image(), "numba_step_s": t_m,
           "numba_images_per_s": B / t_m, "numba_gflops": step_flops / t_m / 1e9}
    if torch is not None:
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        from torch_resnet import TorchResNet
        tm = TorchResNet(cfg).train()
        txs, tys = torch.tensor(xs).permute(0, 3, 1, 2).contiguous(), torch.tensor(ys)

        def step_tm():
            tm.zero_grad(set_to_none=True)
            F.cross_entropy(tm(txs), tys).backward()
        t_tm = timeit(step_tm, a.repeats)
        net.update(torch_step_s=t_tm, torch_images_per_s=B / t_tm,
                   torch_gflops=step_flops / t_tm / 1e9)
    print(f"whole {a.preset} train step, batch {B}: numba {net['numba_images_per_s']:.0f} img/s "
          f"({net['numba_gflops']:.1f} GFLOP/s); torch "
          f"{net.get('torch_images_per_s', float('nan')):.0f} img/s "
          f"({net.get('torch_gflops', float('nan')):.1f} GFLOP/s)")

    result = {"preset": a.preset, "batch": B, "repeats": a.repeats, "quick": a.quick,
              "threads": threads, "cpu_count": os.cpu_count(), "machine": platform.machine(),
              "processor": platform.processor(), "numpy": np.__version__,
              "torch": None if torch is None else torch.__version__,
              "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "matmul_peak_gflops": peak, "matmul_gflops_by_n": per_n,
              "layers": layers, "all_convs": overall, "whole_net": net}
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, a.out)
    print(f"wrote {a.out}")
    return result


if __name__ == "__main__":
    main()
