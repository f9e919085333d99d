"""minivit.backends.memory: once a CPU backend exists, a step's buffers, freed and
allocated again, are not page-faulted in afresh (Linux/glibc; a no-op elsewhere)."""
import subprocess
import sys

import pytest

from minivit.backends import memory

# A step's pattern in a fresh process: twenty 8 MB buffers (~cifar10-tiny's attention
# matrices) allocated and touched, then all freed together as the step's caches are
# dropped; prints the minor page faults of three such steps after a first one.
STEPS = """
import resource, sys
import numpy as np
if sys.argv[1] == "backend":
    from minivit.backends import get_backend
    get_backend("numba")
def step():
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    bufs = []
    for _ in range(20):
        a = np.empty(8_000_000, dtype=np.uint8)
        a.fill(1)
        bufs.append(a)
    del bufs
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
step()
print(sum(step() for _ in range(3)))
"""


def _faults(mode):
    out = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True,
                         check=True, timeout=120)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_a_cpu_backend_keeps_freed_buffers_in_the_heap():
    if not memory.keep_freed_memory():
        pytest.skip("no glibc mallopt here")
    # glibc's defaults trim the freed heap top and fault ~9,900 pages back in every step
    assert _faults("plain") > 20_000
    # after get_backend("numba") the same steps reuse the pages they already have
    assert _faults("backend") < 300


def test_keep_freed_memory_is_idempotent():
    first = memory.keep_freed_memory()
    assert memory.keep_freed_memory() is first
