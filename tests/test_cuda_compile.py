"""The CUDA compile gate (see tests/cuda_gate.py): every kernel signature the CUDA backend
launches compiles for sm_80 and sm_90 with the real numba-cuda compiler, assembles with
``ptxas`` without spills or local memory, and fits the hardware at its launch size.
No GPU needed; the `cuda` extra (numba-cuda + nvidia-cuda-nvcc-cu12) is.

It runs in the main (CPU) pytest process on purpose: it needs the *real* CUDA target
(NUMBA_ENABLE_CUDASIM unset), and records the launches in a simulator subprocess of its
own. Writes benchmarks/results/cuda_resources.json (the resource table of the README).
"""
import json

import pytest

import cuda_gate


@pytest.fixture(scope="module")
def gate():
    try:
        import numba_cuda  # noqa: F401
        cuda_gate.ptxas_path()
    except (ImportError, RuntimeError) as exc:
        pytest.fail(f"the CUDA compile gate needs the cuda extra (pip install -e '.[cuda]'): "
                    f"{exc}")
    launches = cuda_gate.record_in_subprocess()
    rows = cuda_gate.compile_all(launches)
    cuda_gate.write_table(rows)
    return launches, rows


def test_every_kernel_is_launched(gate):
    launches, _ = gate
    assert cuda_gate.launched_everything(launches) == []
    # the drive covers what the issue asks: both dtypes, every preset head width
    dts = {a[1] for ln in launches for a in ln["fargs"] if a[0] == "dtype"}
    assert dts == {"<f4", "<f8"}
    widths = {ln["fargs"][1][1] for ln in launches if ln["factory"] == "attention_kernels"}
    assert widths >= {32, 64, 80}                 # D_h of every preset


def test_every_signature_compiles_within_hardware_limits(gate):
    _, rows = gate
    assert {r["cc"] for r in rows} == {"8.0", "9.0"}
    assert cuda_gate.check(rows) == []


def test_kernels_a_gpu_engineer_signs_off(gate):
    _, rows = gate
    for r in rows:
        if r["kernel"] == "matmul":               # two 256-thread blocks per SM
            assert r["threads"] == [256] and r["blocks_per_sm"] >= 2, r
        if r["kernel"].startswith("attn_"):       # registers and shared memory only
            assert r["stack"] == 0 and r["spill_st"] == 0, r


def test_check_catches_violations():
    """The gate's own limits bite: a spill, a stack frame, too much shared memory, too
    many registers for the block, a compile error."""
    ok = dict(kernel="k", dtype="<f4", fargs=[], cc="9.0", threads=[256], regs=64,
              smem=1024, stack=0, spill_st=0, spill_ld=0)
    assert cuda_gate.check([ok]) == []
    for bad in (dict(spill_st=8), dict(stack=16), dict(smem=49 * 1024), dict(regs=300),
                dict(threads=[1024], regs=128), dict(threads=[2048])):
        assert cuda_gate.check([dict(ok, **bad)]), bad
    assert cuda_gate.check([dict(ok, error="TypingError: no")])
    assert cuda_gate.blocks_per_sm(dict(ok, regs=128), 256, (9, 0)) == 2
    assert cuda_gate.blocks_per_sm(dict(ok, regs=129), 256, (9, 0)) == 1


def test_table_written(gate):
    doc = json.loads(cuda_gate.RESULTS.read_text())
    assert len(doc["rows"]) == len(gate[1]) and doc["numba_cuda"]
