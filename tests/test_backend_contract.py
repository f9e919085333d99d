"""The backend contract (minivit.backends.protocol.Backend) is complete and every backend
implements it; nothing outside a model reaches into its private state; the import graph
has no cycles."""
import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

from minivit.backends.numpy_ops import NumpyBackend
from minivit.backends.protocol import Backend, contract_methods

ROOT = Path(__file__).resolve().parents[1]


def _params(cls, name):
    return list(inspect.signature(getattr(cls, name)).parameters)


def _check(cls, names):
    missing = [n for n in names if not callable(getattr(cls, n, None))]
    assert not missing, f"{cls.__name__} lacks {missing}"
    for n in names:
        want = _params(Backend, n)
        got = _params(cls, n)
        if isinstance(inspect.getattr_static(cls, n), staticmethod):
            got = ["self"] + got                     # the reference binds module functions
        assert got == want, (cls.__name__, n, got, want)


def test_protocol_lists_every_public_method_of_the_reference():
    """The NumPy reference defines the real interface: it has no public method that the
    Protocol does not write down (a new op must be added to the contract)."""
    public = {n for n, _ in inspect.getmembers(NumpyBackend, callable) if not n.startswith("_")}
    assert public == set(contract_methods()), public ^ set(contract_methods())
    for n in contract_methods():
        doc = inspect.getdoc(getattr(Backend, n)) or ""
        assert doc, f"Backend.{n} has no docstring"


def test_numpy_backend_implements_the_contract():
    _check(NumpyBackend, contract_methods())
    assert isinstance(NumpyBackend(), Backend)


def test_numba_backend_implements_the_contract():
    pytest.importorskip("numba")
    from minivit.backends.numba_cpu import NumbaBackend
    _check(NumbaBackend, contract_methods())


def _cuda_class():
    pytest.importorskip("numba")
    try:
        from minivit.backends.cuda_backend import CudaBackend
    except ImportError as e:                 # numba without its cuda module: not this test's
        pytest.skip(f"numba.cuda not importable: {e}")
    return CudaBackend                       # introspected only: no GPU needed


def test_cuda_backend_implements_the_contract_by_introspection():
    """Every op, the masked-patch-prediction ones included (checked without a GPU)."""
    _check(_cuda_class(), contract_methods())


def test_patch_token_ops_match_slicing(rng):
    be = NumpyBackend()
    z = rng.standard_normal((2, 5, 3))
    np.testing.assert_array_equal(be.take_patch_tokens(z), z[:, 1:])
    dz = be.take_patch_tokens_backward(z[:, 1:], z.shape)
    assert (dz[:, 0] == 0).all() and np.array_equal(dz[:, 1:], z[:, 1:])


def _sources():
    for p in sorted((ROOT / "minivit").rglob("*.py")):
        yield p, p.read_text()


def test_nothing_outside_a_model_touches_its_cache():
    """Caches are opaque: code outside minivit/model.py never reads or resets a model's
    ``_cache`` (it calls ``clear_cache()``)."""
    offenders = []
    for p, text in list(_sources()) + [(p, p.read_text()) for p in (ROOT / "benchmarks").glob("*.py")]:
        if p.name == "model.py":
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Attribute) and node.attr == "_cache" and not (
                    isinstance(node.value, ast.Name) and node.value.id == "self"):
                offenders.append(f"{p.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders


def test_import_graph_has_no_cycles():
    """Modules import downwards only (config/ops/backends → model → … → cli)."""
    mods = {}
    for p, _ in _sources():
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    graph = {m: set() for m in mods}
    for m, p in mods.items():
        pkg = m.split(".") if p.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(ast.parse(p.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom):
                base = pkg[:len(pkg) - node.level + 1] if node.level else []
                t = ".".join(base + (node.module.split(".") if node.module else []))
                targets = [f"{t}.{a.name}" if f"{t}.{a.name}" in mods else t for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            graph[m].update(t for t in targets if t in mods and t != m
                            and not m.startswith(t + "."))     # a package's own re-exports
    state = {}

    def visit(m, path):
        state[m] = "open"
        for t in sorted(graph[m]):
            if state.get(t) == "open":
                pytest.fail("import cycle: " + " -> ".join(path[path.index(t):] + [t]))
            if t not in state:
                visit(t, path + [t])
        state[m] = "done"

    for m in sorted(mods):
        if m not in state:
            visit(m, [m])
