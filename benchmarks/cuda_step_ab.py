"""Before/after of a change to the CUDA backend: median training-step time of one
checkout's ``minivit`` package, float32, batch 128, on the GPU.

    git archive <old-commit> minivit | tar -x -C /tmp/old     # the "before" package
    for r in 1 2; do for p in cifar10-tiny cifar10-small; do
        python benchmarks/cuda_step_ab.py /tmp/old $p 60      # before
        python benchmarks/cuda_step_ab.py "$PWD" $p 60        # after
    done; done

Each call is a fresh process (its own JIT compilation, not timed): three warm-up steps,
then STEPS steps of forward, loss, backward and AdamW over every parameter, each
followed by a device synchronisation; it prints one line, ``AB <package dir> <preset>
median_ms <ms> img_s <images/s>``. Alternate the two packages over rounds (as above): the
small presets are bound by the host's kernel-launch overhead, which varies between runs.
"""
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np


def main(argv):
    parent, preset, steps = argv[0], argv[1], int(argv[2])
    sys.path.insert(0, parent)                 # the package under test, first on the path
    import minivit                             # bound now: gpu.py's own path entry is later
    from minivit import ViTConfig
    from numba import cuda
    spec = importlib.util.spec_from_file_location(
        "gpu_bench", Path(__file__).resolve().parent / "gpu.py")
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    batch = 128
    step, _, _ = gpu.cuda_training_step(ViTConfig.preset(preset), batch)
    for i in range(3):
        step(i)
    cuda.synchronize()
    ts = []
    for i in range(steps):
        t0 = time.perf_counter()
        step(i + 3)
        cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    med = float(np.median(ts))
    print(f"AB {minivit.__file__.split('/')[-3]} {preset} median_ms {1e3 * med:.2f} "
          f"img_s {batch / med:.0f}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python benchmarks/cuda_step_ab.py PACKAGE_PARENT PRESET STEPS")
    main(sys.argv[1:])
