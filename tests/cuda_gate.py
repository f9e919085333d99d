"""The CUDA compile gate: every kernel the CUDA backend launches, compiled for real GPUs
without one.

Two phases, two processes (numba picks the simulator or the real CUDA target once, at
import, from ``NUMBA_ENABLE_CUDASIM``):

1. ``record`` (simulator process): the real :class:`CudaBackend` drives forward, backward
   and optimizer steps of several tiny configs (float32 and float64, every head width of
   the presets, B = 1 and more, overlapping patches, both heads, both GELU forms, every
   position embedding, both optimizers, clipping, attention maps). The kernel factories
   are wrapped so that each launch is *recorded* — factory arguments, kernel name, the
   numba type of every argument (``_numba_type_`` of the simulator's device arrays is
   the real target's typing rule) and the grid/block sizes — and not executed: the
   simulator runs every CUDA thread as a Python thread, far too slow for production
   tiles, and the values do not matter here.
2. ``compile`` (real-target process, no GPU needed): each recorded signature is compiled
   with ``numba.cuda.compile_ptx`` for compute capability 8.0 and 9.0 and assembled with
   the ``ptxas -v`` of the ``nvidia-cuda-nvcc-cu12`` wheel, which reports registers,
   shared memory, stack frame and spills per kernel. :func:`check` then applies the
   hardware limits at the recorded launch size.

Run as a script it prints the README's table and writes
``benchmarks/results/cuda_resources.json`` (the test does the same):

    python tests/cuda_gate.py            # both phases
    python tests/cuda_gate.py table      # the README table from the JSON
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "cuda_resources.json"
CCS = ((8, 0), (9, 0))

# Per-SM hardware limits (CUDA C Programming Guide, "Technical Specifications per
# Compute Capability"): registers per SM and per thread, resident blocks/threads per SM,
# shared memory per SM and the most one block may use (statically: 48 KiB on every cc).
LIMITS = {
    (8, 0): dict(regs_sm=65536, regs_thread=255, blocks_sm=32, threads_sm=2048,
                 threads_block=1024, smem_sm=164 * 1024, smem_block_dyn=163 * 1024,
                 smem_block_static=48 * 1024),
    (9, 0): dict(regs_sm=65536, regs_thread=255, blocks_sm=32, threads_sm=2048,
                 threads_block=1024, smem_sm=228 * 1024, smem_block_dyn=227 * 1024,
                 smem_block_static=48 * 1024),
}
SMEM_RESERVED = 1024        # the driver reserves 1 KiB of shared memory per block (cc ≥ 8.0)


# ---------------------------------------------------------------------------- phase 1
def _configs():
    """(name, ViTConfig kwargs, dtype, batch, optimizer) of the driven models: tiny, but
    covering every head width of the presets (D_h = 32, 64, 80) in both dtypes (and
    D_h = 128 in float64) and every code path of the backend."""
    from minivit.config import PRESETS
    head_widths = sorted({p["dim"] // p["heads"] for p in PRESETS.values()})
    base = dict(image_size=8, channels=3, patch_size=4, depth=1, num_classes=10)
    out = []
    i = 0
    for dh in head_widths:
        for dtype in ("float32", "float64"):
            # the options vary independently of the dtype, so each meets both dtypes
            kw = dict(base, dim=dh * (1 + i % 2), heads=1 + i % 2,
                      mlp_dim=2 * dh * (1 + i % 2),
                      pos_embed=("learned-1d", "learned-2d", "none")[i % 3],
                      head_type=("linear", "pre-logits")[(i // 2) % 2],
                      gelu="tanh" if i % 4 in (0, 3) else "erf",
                      stride=None if i % 3 == 0 else 2)            # 2 < P: overlapping
            batch = (1, 2, 3)[i % 3]
            opt = ("adamw", "sgd-nesterov", "sgd-plain", "adamw")[i % 4]
            out.append((f"D_h={dh} {dtype} B={batch}", kw, dtype, batch, opt))
            i += 1
    # beyond the presets: D_h = 128 in float64, the hardest case of the attention tiling
    out.append(("D_h=128 float64 B=2", dict(base, dim=128, heads=1, mlp_dim=64, stride=2),
                "float64", 2, "adamw"))
    return out


def record(path):
    """Phase 1 (needs NUMBA_ENABLE_CUDASIM=1): drive the backend, write the launches."""
    import numba
    if not numba.config.ENABLE_CUDASIM:
        raise SystemExit("record needs NUMBA_ENABLE_CUDASIM=1")
    import numpy as np

    from minivit import ViT, ViTConfig
    from minivit.backends import cuda_backend as cb
    from minivit.backends import cuda_kernels as ck
    from minivit.ops.masked import corruption_plan
    from minivit.optim import SGD, AdamW, clip_grad_norm

    launches = []

    def typ(a):
        t = getattr(a, "_numba_type_", None)
        if t is not None:
            return ["array", str(t.dtype), t.ndim, t.layout]
        return ["scalar", str(numba.typeof(a))]

    class Recorder:
        def __init__(self, factory, fargs, name):
            self.factory, self.fargs, self.name = factory, fargs, name

        def __getitem__(self, cfg):
            grid, block = cfg[0], cfg[1]
            grid = list(grid) if isinstance(grid, tuple) else [grid]
            block = list(block) if isinstance(block, tuple) else [block]

            def launch(*args):
                launches.append(dict(factory=self.factory, fargs=self.fargs,
                                     kernel=self.name, sig=[typ(a) for a in args],
                                     grid=[int(g) for g in grid],
                                     block=[int(b) for b in block]))
            return launch

    def wrap(factory, fn):
        def wrapped(*fargs):
            ns = fn(*fargs)
            enc = [_encode(a) for a in fargs]
            d = {k: (Recorder(factory, enc, k) if hasattr(v, "py_func") or
                     type(v).__name__ == "FakeCUDAKernel" else v)
                 for k, v in vars(ns).items()}
            return type(ns)(**d)
        return wrapped

    # Kernels do not run, so buffers keep their initial contents: zeros rather than
    # np.empty garbage, so that host-side arithmetic on returned scalars (the gradient
    # norm's square root) sees sane numbers.
    cb.cuda.device_array = lambda shape, dtype=np.float64, **kw: cb.cuda.to_device(
        np.zeros(shape, dtype))
    cb.kernels = wrap("kernels", ck.kernels)
    cb.attention_kernels = wrap("attention_kernels", ck.attention_kernels)

    rng = np.random.default_rng(0)
    for name, kw, dtype, B, opt in _configs():
        be = cb.CudaBackend()
        cfg = ViTConfig(**kw)
        model = ViT(cfg, dtype=dtype, backend=be)
        x = rng.standard_normal((B, cfg.image_size, cfg.image_size, cfg.channels))
        model.keep_attention = True
        model.forward(x, keep_attention=True)                   # + attention maps
        labels = rng.integers(0, cfg.num_classes, B)
        model.loss_and_grads(x, labels, smoothing=0.1)
        model.backward(np.ones((B, cfg.num_classes)), need_dimages=True)
        soft = np.full((B, cfg.num_classes), 1.0 / cfg.num_classes)
        be.softmax_cross_entropy(be.asarray(np.zeros((B, cfg.num_classes)), dtype), soft)
        clip_grad_norm(be, model.grads, 1e-30)                 # norms and a rescale
        for g in model.grads.values():
            be.scale_(g, 0.5)
            be.all_finite(g)
        if opt == "adamw":
            AdamW(model, lr=1e-3).step()
        else:
            SGD(model, lr=1e-2, momentum=0.0 if opt == "sgd-plain" else 0.9,
                weight_decay=1e-4, nesterov=opt == "sgd-nesterov").step()
        be.asarray(model.params["head.bias"], "float64" if dtype == "float32" else "float32")
        be.gelu_forward(model.params["head.bias"], cfg.gelu)    # the unfused GELU
        # masked patch prediction's corruption op and its adjoint
        N, D = cfg.num_patches, cfg.dim
        plan = corruption_plan(B, N, rng, mask_ratio=1.0, p_mask=0.5, p_random=0.5)
        ec, cc = be.corruption_forward(be.asarray(np.zeros((B, N, D)), dtype),
                                       model.params["cls_token"].reshape(D), plan)
        be.corruption_backward(ec, cc)
        # ... and the rest of masked patch prediction: the head's token slice, the loss
        t = be.take_patch_tokens(be.asarray(np.zeros((B, N + 1, D)), dtype))
        be.take_patch_tokens_backward(t, (B, N + 1, D))
        mp = be.asarray(np.zeros((B, N, 16)), dtype)
        be.masked_patch_loss(mp, rng.integers(0, 16, (B, N)), plan.corrupted)
    Path(path).write_text(json.dumps(launches))
    return launches


def _encode(a):
    import numpy as np
    if isinstance(a, np.dtype) or isinstance(a, type):
        return ["dtype", np.dtype(a).str]
    if isinstance(a, tuple):                                    # Tiles
        return ["tiles", list(a)]
    return ["value", a]


def _decode(e):
    import numpy as np

    from minivit.backends.cuda_kernels import Tiles
    kind, v = e
    return np.dtype(v) if kind == "dtype" else Tiles(*v) if kind == "tiles" else v


def record_in_subprocess():
    """Phase 1 in a child process with the simulator on; returns the launch list."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "launches.json"
        env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1",
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        r = subprocess.run([sys.executable, __file__, "record", str(out)], env=env,
                           capture_output=True, text=True, timeout=600)
        if r.returncode:
            raise RuntimeError(f"recording the launches failed:\n{r.stdout}\n{r.stderr}")
        return json.loads(out.read_text())


# ---------------------------------------------------------------------------- phase 2
def ptxas_path() -> str:
    """The ptxas of the nvidia-cuda-nvcc-cu12 wheel (the same toolkit as its NVVM,
    which numba-cuda finds by itself through cuda-pathfinder)."""
    try:
        import nvidia.cuda_nvcc as nv
    except ImportError:
        raise RuntimeError("nvidia-cuda-nvcc-cu12 is not installed: pip install -e '.[cuda]'")
    base = Path(nv.__path__[0])
    p = base / "bin" / "ptxas"
    if not p.exists():
        raise RuntimeError(f"no ptxas in {base}")
    return str(p)


def _numba_sig(sig):
    from numba import types
    from numba.core import typing  # noqa: F401  (registers the scalar type names)
    out = []
    for s in sig:
        if s[0] == "array":
            out.append(types.Array(getattr(types, s[1]), s[2], s[3]))
        else:
            out.append(getattr(types, s[1]))
    return tuple(out)


_PTXAS_RE = {
    "regs": re.compile(r"Used (\d+) registers"),
    "smem": re.compile(r"(\d+) bytes smem"),
    "stack": re.compile(r"(\d+) bytes stack frame"),
    "spill_st": re.compile(r"(\d+) bytes spill stores"),
    "spill_ld": re.compile(r"(\d+) bytes spill loads"),
}


def compile_one(job):
    """Compile one (factory, fargs, kernel, sig) for one cc: PTX, then ``ptxas -v``.
    Returns a dict of resources, or ``{"error": ...}``."""
    factory, fargs, kernel, sig, cc = job
    from numba import cuda
    from numba.cuda import dispatcher

    class _Device:                  # no GPU here: the cc being compiled for
        compute_capability = tuple(cc)
    # A kernel calling a @cuda.jit(device=True) function compiles that function on first
    # use for the *current device's* cc, which needs a driver; compile_ptx itself only
    # needs NVVM. Answer with the target cc instead.
    dispatcher.get_current_device = lambda: _Device()

    from minivit.backends import cuda_kernels as ck
    try:
        ns = getattr(ck, factory)(*[_decode(a) for a in fargs])
        disp = getattr(ns, kernel)
        opts = disp.targetoptions
        ptx, _ = cuda.compile_ptx(disp.py_func, _numba_sig(sig), cc=tuple(cc),
                                  fastmath=bool(opts.get("fastmath", False)),
                                  launch_bounds=opts.get("launch_bounds"))
    except Exception as exc:                                    # reported, then fails
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        r = subprocess.run([ptxas_path(), "-v", f"-arch=sm_{cc[0]}{cc[1]}", str(src),
                            "-o", str(Path(tmp) / "k.cubin")], capture_output=True, text=True)
    if r.returncode:
        return {"error": "ptxas: " + " | ".join(r.stderr.strip().splitlines()[:3])[:400]}
    info = r.stderr + r.stdout
    res = {}
    for key, rx in _PTXAS_RE.items():
        vals = [int(v) for v in rx.findall(info)]
        res[key] = max(vals) if vals else 0
    return res


def blocks_per_sm(res, threads, cc):
    """Resident blocks per SM for a launch of ``threads`` threads (occupancy calculator:
    registers are allocated per warp in units of 256, shared memory per block plus the
    1 KiB reserve)."""
    lim = LIMITS[tuple(cc)]
    warps = math.ceil(threads / 32)
    regs_warp = math.ceil(max(res["regs"], 1) * 32 / 256) * 256
    by_regs = lim["regs_sm"] // (regs_warp * warps)
    by_threads = lim["threads_sm"] // (warps * 32)
    by_smem = lim["smem_sm"] // (res["smem"] + SMEM_RESERVED)
    return min(lim["blocks_sm"], by_regs, by_threads, by_smem)


def compile_all(launches, workers=2):
    """Phase 2: compile every distinct signature for every cc. Returns the table rows:
    one per (kernel, factory arguments, signature, cc), with the launch sizes seen."""
    groups = {}
    for ln in launches:
        key = json.dumps([ln["factory"], ln["fargs"], ln["kernel"], ln["sig"]])
        groups.setdefault(key, set()).add(math.prod(ln["block"]))
    jobs = [tuple(json.loads(k)) + (cc,) for k in groups for cc in CCS]
    # spawn, not fork: the caller may be a pytest process with threads (fork would copy
    # their held locks); each worker imports numba-cuda afresh
    with ProcessPoolExecutor(max_workers=workers,
                             mp_context=multiprocessing.get_context("spawn")) as ex:
        results = list(ex.map(compile_one, jobs))
    rows = []
    for job, res in zip(jobs, results):
        factory, fargs, kernel, sig, cc = job
        threads = sorted(groups[json.dumps([factory, fargs, kernel, sig])])
        row = dict(kernel=kernel, factory=factory,
                   dtype=next(a[1] for a in fargs if a[0] == "dtype"),
                   fargs=[a[1] for a in fargs if a[0] == "value"],
                   sig=", ".join(s[1] + (f"[{s[2]}d{s[3]}]" if s[0] == "array" else "")
                                 for s in sig),
                   cc=f"{cc[0]}.{cc[1]}", threads=threads, **res)
        if "error" not in res:
            row["blocks_per_sm"] = min(blocks_per_sm(res, t, cc) for t in threads)
        rows.append(row)
    return rows


def check(rows):
    """The failures of the table: compile errors, spills, local memory (stack), and
    resources past the hardware limits at the recorded launch sizes."""
    bad = []
    for r in rows:
        where = f"{r['kernel']} {r['dtype']} {r['fargs']} cc {r['cc']}"
        if "error" in r:
            bad.append(f"{where}: {r['error']}")
            continue
        lim = LIMITS[tuple(int(v) for v in r["cc"].split("."))]
        if r["spill_st"] or r["spill_ld"]:
            bad.append(f"{where}: spills {r['spill_st']} B stores / {r['spill_ld']} B loads")
        if r["stack"]:
            bad.append(f"{where}: {r['stack']} B stack frame (local-memory arrays)")
        if r["smem"] > lim["smem_block_static"]:
            bad.append(f"{where}: {r['smem']} B static shared memory > 48 KiB")
        for t in r["threads"]:
            if t > lim["threads_block"]:
                bad.append(f"{where}: {t} threads per block > {lim['threads_block']}")
            if r["regs"] * t > lim["regs_sm"] or r["regs"] > lim["regs_thread"]:
                bad.append(f"{where}: {r['regs']} registers × {t} threads > 64K")
            if blocks_per_sm(r, t, tuple(int(v) for v in r["cc"].split("."))) < 1:
                bad.append(f"{where}: a block of {t} threads does not fit an SM")
    return bad


def launched_everything(launches):
    """Kernels of the namespaces that no recorded launch used (must be empty)."""
    import numpy as np

    from minivit.backends import cuda_kernels as ck
    names = set()
    for ns in (ck.kernels(np.dtype("float32")), ck.attention_kernels(np.dtype("float32"), 8)):
        names |= {k for k, v in vars(ns).items() if hasattr(v, "py_func")}
    return sorted(names - {ln["kernel"] for ln in launches})


def write_table(rows, path=RESULTS):
    """Write the per-kernel table (JSON, sorted, stable across runs)."""
    import numba
    import numba_cuda
    keep = ("kernel", "factory", "dtype", "fargs", "cc", "threads", "regs", "smem", "stack",
            "spill_st", "spill_ld", "blocks_per_sm", "error", "sig")
    rows = sorted(({k: r[k] for k in keep if k in r} for r in rows),
                  key=lambda r: (r["kernel"], r["dtype"], str(r["fargs"]), r["cc"], r["sig"]))
    doc = dict(
        what="ptxas -v resources of every CUDA kernel signature the backend launches in "
             "tests/cuda_gate.py's configs (no GPU needed); smem = static shared bytes, "
             "stack = local-memory frame bytes per thread, blocks_per_sm = resident "
             "blocks per multiprocessor at the launch size",
        numba=numba.__version__, numba_cuda=numba_cuda.__version__,
        ptxas=subprocess.run([ptxas_path(), "--version"], capture_output=True,
                             text=True).stdout.strip().splitlines()[-1],
        rows=rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")


def markdown(rows):
    """The README's table: one line per kernel, worst case over its signatures and head
    widths, float32 / float64; registers and shared memory as assembled for sm_90."""
    agg = {}
    for r in rows:
        if "error" in r:
            continue
        k = agg.setdefault(r["kernel"], dict(thr=set(), dh=set(), regs={}, smem={},
                                             stack=0, bps={}))
        dt = "f4" if "f4" in r["dtype"] else "f8"
        k["thr"] |= set(r["threads"])
        if r["kernel"].startswith("attn_"):
            k["dh"].add(r["fargs"][0])
        k["stack"] = max(k["stack"], r["stack"], r["spill_st"])
        if r["cc"] == "9.0":
            k["regs"][dt] = max(k["regs"].get(dt, 0), r["regs"])
            k["smem"][dt] = max(k["smem"].get(dt, 0), r["smem"])
        key = (r["cc"], dt)
        k["bps"][key] = min(k["bps"].get(key, 99), r["blocks_per_sm"])

    def pair(d, a, b):
        return " / ".join(str(d[x]) if x in d else "–" for x in (a, b))

    lines = ["| kernel | threads/block | registers f32 / f64 | static shared B f32 / f64 "
             "| stack + spills B | blocks/SM sm_80 f32 / f64 | blocks/SM sm_90 f32 / f64 |",
             "|---|---|---|---|---|---|---|"]
    for name, k in sorted(agg.items()):
        label = name + (f" (D_h {', '.join(map(str, sorted(k['dh'])))})" if k["dh"] else "")
        lines.append(
            f"| {label} | {', '.join(map(str, sorted(k['thr'])))} | {pair(k['regs'], 'f4', 'f8')} "
            f"| {pair(k['smem'], 'f4', 'f8')} | {k['stack']} "
            f"| {pair(k['bps'], ('8.0', 'f4'), ('8.0', 'f8'))} "
            f"| {pair(k['bps'], ('9.0', 'f4'), ('9.0', 'f8'))} |")
    return "\n".join(lines)


def main():
    launches = record_in_subprocess()
    rows = compile_all(launches)
    write_table(rows)
    print(markdown(rows))
    missing = launched_everything(launches)
    bad = check(rows)
    for b in bad:
        print("FAIL", b)
    if missing:
        print("NEVER LAUNCHED", missing)
    return 1 if bad or missing else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "record":
        record(sys.argv[2])
    elif len(sys.argv) > 1 and sys.argv[1] == "table":
        print(markdown(json.loads(RESULTS.read_text())["rows"]))
    else:
        sys.exit(main())
