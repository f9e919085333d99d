"""The lecture's worked self-attention example (REFERENCE.md §1), number by number, and the
``minivit attention-example`` command."""
import json
import math
import os

import numpy as np
import pytest

from minivit import attention_steps, explain
from minivit.cli import main
from minivit.errors import ConfigError

# REFERENCE.md §1, every number, token by token.
KEYS = [[0, 1, 1], [4, 4, 0], [2, 3, 1]]
QUERIES = [[1, 0, 2], [2, 2, 2], [2, 1, 3]]
VALUES = [[1, 2, 3], [2, 8, 0], [2, 6, 3]]
SCORES = [[2, 4, 4], [4, 16, 12], [4, 12, 10]]
SOFTMAX = [[0.063379, 0.468311, 0.468311],
           [6.0337e-06, 0.982008, 0.017986],
           [2.9539e-04, 0.880537, 0.119168]]
SOFTMAX_ROUNDED = [[0.0, 0.5, 0.5], [0.0, 1.0, 0.0], [0.0, 0.9, 0.1]]
OUTPUTS = [[1.936621, 6.683105, 1.595068],
           [1.999994, 7.963992, 0.053976],
           [1.999705, 7.759892, 0.358389]]
OUTPUTS_ROUNDED = [[2.0, 7.0, 1.5], [2.0, 8.0, 0.0], [2.0, 7.8, 0.3]]
WEIGHTED_TOKEN1 = [[0, 0, 0], [1, 4, 0], [1, 3, 1.5]]
SCALED_SOFTMAX_1 = [0.136126, 0.431937, 0.431937]
SCALED_OUTPUT_1 = [1.863874, 6.319371, 1.704189]

ATOL = 5e-7          # "to 6 decimals"


def close6(actual, expected):
    np.testing.assert_allclose(np.asarray(actual, dtype=float), np.asarray(expected, dtype=float),
                               rtol=0, atol=ATOL)


def softmax_rows(S):
    """Independent oracle: a plain softmax over each row."""
    e = np.exp(S - S.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture
def lec():
    return explain.lecture_example()


@pytest.fixture
def steps(lec):
    return explain.self_attention_steps(lec["x"], lec["W_Q"], lec["W_K"], lec["W_V"])


# ------------------------------------------------------------------ the worked example

def test_lecture_example_inputs(lec):
    assert set(lec) == {"x", "W_Q", "W_K", "W_V"}
    assert lec["x"].shape == (3, 4) and lec["x"].dtype == np.float64
    for k in ("W_Q", "W_K", "W_V"):
        assert lec[k].shape == (4, 3) and lec[k].dtype == np.float64
    close6(lec["x"], [[1, 0, 1, 0], [0, 2, 0, 2], [1, 1, 1, 1]])
    close6(lec["W_K"], [[0, 0, 1], [1, 1, 0], [0, 1, 0], [1, 1, 0]])


def test_packaged_json_equals_lecture_example(lec):
    ex = explain.load_example_file(explain.example_path("lecture_example"))
    assert set(ex) == {"x", "W_Q", "W_K", "W_V"}
    for k in ex:
        np.testing.assert_array_equal(ex[k], lec[k])


def test_keys_queries_values(steps):
    close6(steps.keys, KEYS)
    close6(steps.queries, QUERIES)
    close6(steps.values, VALUES)


def test_scores_unscaled(steps):
    close6(steps.scores, SCORES)
    assert steps.scale == 1.0 and not steps.scaled
    close6(steps.scaled_scores, SCORES)


def test_softmax_exact_and_rounded(steps):
    close6(steps.softmax, SOFTMAX)
    # the two tiny weights, to their 5 significant digits
    assert steps.softmax[1, 0] == pytest.approx(6.0337e-06, rel=1e-4)
    assert steps.softmax[2, 0] == pytest.approx(2.9539e-04, rel=1e-4)
    close6(steps.softmax.sum(axis=1), [1, 1, 1])
    close6(steps.softmax_rounded, SOFTMAX_ROUNDED)


def test_outputs_exact_and_from_rounded_weights(steps):
    close6(steps.outputs, OUTPUTS)
    close6(steps.outputs_rounded, OUTPUTS_ROUNDED)


def test_weighted_values(steps):
    assert steps.weighted_values.shape == (3, 3, 3)
    close6(steps.weighted_values_rounded[0], WEIGHTED_TOKEN1)
    # summing the weighted values over j gives the outputs, exact and slides alike
    close6(steps.weighted_values.sum(axis=1), OUTPUTS)
    close6(steps.weighted_values_rounded.sum(axis=1), OUTPUTS_ROUNDED)
    w = softmax_rows(np.array(SCORES, float))[0, 1]
    close6(steps.weighted_values[0, 1], w * np.array(VALUES[1]))


def test_scaled_variant(lec):
    st = explain.self_attention_steps(lec["x"], lec["W_Q"], lec["W_K"], lec["W_V"], scale=True)
    assert st.scale == pytest.approx(1 / math.sqrt(3))
    close6(st.scores, SCORES)                        # scores are kept before scaling
    close6(st.softmax[0], SCALED_SOFTMAX_1)
    close6(st.outputs[0], SCALED_OUTPUT_1)
    # the other tokens against an independent formula
    S = np.array(SCORES, float) / math.sqrt(3)
    A = softmax_rows(S)
    close6(st.scaled_scores, S)
    close6(st.softmax, A)
    close6(st.outputs, A @ np.array(VALUES, float))
    # an explicit number does the same
    st2 = explain.self_attention_steps(lec["x"], lec["W_Q"], lec["W_K"], lec["W_V"],
                                       scale=1 / math.sqrt(3))
    close6(st2.outputs, st.outputs)


def test_rounding_modes_and_decimals(lec):
    A = np.array(SOFTMAX)
    # plain rounding would give 0.1 for 0.063379 and a row summing to 1.1
    close6(explain.round_weights(A, 1, "nearest")[0], [0.1, 0.5, 0.5])
    close6(explain.round_weights(A, 1), SOFTMAX_ROUNDED)
    r2 = explain.round_weights(A, 2)
    close6(r2, [[0.06, 0.47, 0.47], [0.0, 0.98, 0.02], [0.0, 0.88, 0.12]])
    close6(r2.sum(axis=1), [1, 1, 1])
    st = explain.self_attention_steps(lec["x"], lec["W_Q"], lec["W_K"], lec["W_V"],
                                      round_decimals=2)
    close6(st.softmax_rounded, r2)
    with pytest.raises(ConfigError, match="rounding"):
        explain.round_weights(A, 1, "up")


def test_calls_the_library_attention(monkeypatch, lec):
    """explain must use ops.attention.attention_forward, not its own attention."""
    calls = []
    real = attention_steps.attention_forward

    def spy(q, k, v, scale=None):
        calls.append(scale)
        return real(q, k, v, scale=scale)
    monkeypatch.setattr(attention_steps, "attention_forward", spy)
    explain.self_attention_steps(lec["x"], lec["W_Q"], lec["W_K"], lec["W_V"], scale=True)
    assert len(calls) == 1


# ------------------------------------------------------------------ shape validation

def test_shape_mismatch_names_the_shapes(lec):
    W_K = np.zeros((5, 3))
    with pytest.raises(ConfigError) as e:
        explain.self_attention_steps(lec["x"], lec["W_Q"], W_K, lec["W_V"])
    msg = str(e.value)
    assert msg == "x is (3, 4) but W_K is (5, 3): x's width 4 must equal W_K's rows 5"
    with pytest.raises(ConfigError, match=r"W_Q is \(4, 3\) but W_K is \(4, 2\)"):
        explain.self_attention_steps(lec["x"], lec["W_Q"], np.zeros((4, 2)), lec["W_V"])
    with pytest.raises(ConfigError, match="2-D"):
        explain.self_attention_steps(lec["x"][0], lec["W_Q"], lec["W_K"], lec["W_V"])
    with pytest.raises(ConfigError, match="non-finite"):
        bad = lec["x"].copy()
        bad[0, 0] = np.nan
        explain.self_attention_steps(bad, lec["W_Q"], lec["W_K"], lec["W_V"])
    with pytest.raises(ConfigError, match="scale"):
        explain.self_attention_steps(lec["x"], lec["W_Q"], lec["W_K"], lec["W_V"], scale="x")
    # ConfigError is a ValueError
    assert issubclass(ConfigError, ValueError)


def test_different_value_width(lec):
    W_V = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], float)
    st = explain.self_attention_steps(lec["x"], lec["W_Q"], lec["W_K"], W_V)
    assert st.outputs.shape == (3, 2) and st.weighted_values.shape == (3, 3, 2)
    A = softmax_rows(np.array(SCORES, float))
    close6(st.outputs, A @ (lec["x"] @ W_V))


# ------------------------------------------------------------------ multi-head

def _two_heads():
    with open(explain.example_path("two_heads")) as f:
        data = json.load(f)
    x = np.array(data["x"], float)
    heads = [tuple(np.array(h[k], float) for k in ("W_Q", "W_K", "W_V")) for h in data["heads"]]
    return x, heads, np.array(data["W_O"], float)


def _mha_oracle(x, heads, W_O, s):
    outs = []
    for W_Q, W_K, W_V in heads:
        q, k, v = x @ W_Q, x @ W_K, x @ W_V
        outs.append(softmax_rows(s(q.shape[1]) * (q @ k.T)) @ v)
    concat = np.concatenate(outs, axis=1)
    return concat, concat @ W_O


@pytest.mark.parametrize("scale", [None, True])
def test_multi_head(scale):
    x, heads, W_O = _two_heads()
    mh = explain.multi_head_steps(x, heads, W_O, scale=scale)
    s = (lambda d: 1.0) if scale is None else (lambda d: 1 / math.sqrt(d))
    concat, out = _mha_oracle(x, heads, W_O, s)
    assert len(mh.heads) == 2 and mh.concat.shape == (3, 4) and mh.output.shape == (3, 4)
    close6(mh.concat, concat)
    close6(mh.output, out)
    text = explain.format_steps(mh)
    assert "Head 2 of 2" in text and "concat @ W_O" in text


def test_multi_head_one_head_equals_single(lec):
    trip = (lec["W_Q"], lec["W_K"], lec["W_V"])
    mh = explain.multi_head_steps(lec["x"], [trip], np.eye(3))
    close6(mh.output, OUTPUTS)
    mh = explain.multi_head_steps(lec["x"], [dict(zip(("W_Q", "W_K", "W_V"), trip))], None)
    close6(mh.output, OUTPUTS)


def test_multi_head_validation():
    x, heads, W_O = _two_heads()
    with pytest.raises(ConfigError, match=r"concatenated heads are \(3, 4\).*W_O is \(3, 4\)"):
        explain.multi_head_steps(x, heads, W_O[:3])
    bad = list(heads)
    bad[1] = (heads[1][0], np.zeros((5, 2)), heads[1][2])
    with pytest.raises(ConfigError, match=r"x is \(3, 4\) but head 2 W_K is \(5, 2\)"):
        explain.multi_head_steps(x, bad, W_O)
    with pytest.raises(ConfigError, match="non-empty"):
        explain.multi_head_steps(x, [], W_O)


# ------------------------------------------------------------------ printing

def test_format_steps_order_and_numbers(steps):
    text = explain.format_steps(steps)
    order = ["Inputs", "Keys", "Queries", "Values", "Scores", "exact",
             "rounded to 1 decimal", "Weighted values", "Outputs  z_i", "rounded weights (the"]
    pos = [text.index(w) for w in order]
    assert pos == sorted(pos)
    for s in ("token 1: k_1 = [0, 1, 1]", "token 2: q_2 = [2, 2, 2]", "[4, 16, 12]",
              "[0.063379, 0.468311, 0.468311]", "[6.0337e-06, 0.982008, 0.017986]",
              "[0.0, 0.5, 0.5]", "0.5·[2, 8, 0] = [1, 4, 0]", "0.5·[2, 6, 3] = [1, 3, 1.5]",
              "[1.936621, 6.683105, 1.595068]", "z_3 = [2, 7.8, 0.3]", "q_1·k_2 = 4"):
        assert s in text, s
    assert "[1.94, 6.68, 1.6]" in explain.format_steps(steps, decimals=2)


# ------------------------------------------------------------------ files

def _write(tmp_path, obj, name="ex.json"):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(p)


@pytest.mark.parametrize("content, match", [
    ("{not json", "malformed JSON at line 1"),
    ("[1, 2]", "top level"),
    ({"x": [[1, 2]], "W_Q": [[1]], "W_K": [[1]]}, "missing key 'W_V'"),
    ({"W_Q": [[1]], "W_K": [[1]], "W_V": [[1]]}, "missing key 'x'"),
    ({"x": [[1, 2], [3]], "W_Q": [[1]], "W_K": [[1]], "W_V": [[1]]}, "x: row 2 has 1 entries"),
    ({"x": [[1, "a"]], "W_Q": [[1]], "W_K": [[1]], "W_V": [[1]]}, "x: row 1, entry 2 is not"),
    ({"x": [[1, True]], "W_Q": [[1]], "W_K": [[1]], "W_V": [[1]]}, "not a number"),
    ({"x": [1, 2], "W_Q": [[1]], "W_K": [[1]], "W_V": [[1]]}, "x: row 1 must be a list"),
    ({"x": [[1]], "Wq": [[1]], "W_K": [[1]], "W_V": [[1]]}, "unknown key 'Wq'"),
    ({"x": [[1]], "heads": [{"W_Q": [[1]], "W_K": [[1]]}]}, r"heads\[0\] is missing key 'W_V'"),
    ({"x": [[1]], "heads": []}, "non-empty"),
    ('{"x": [[NaN]], "W_Q": [[1]], "W_K": [[1]], "W_V": [[1]]}', "NaN is not allowed"),
])
def test_load_example_file_errors(tmp_path, content, match):
    with pytest.raises(ConfigError, match=match):
        explain.load_example_file(_write(tmp_path, content))


def test_load_example_file_npz(tmp_path, lec):
    p = tmp_path / "ex.npz"
    np.savez(p, **lec)
    ex = explain.load_example_file(str(p))
    for k in lec:
        np.testing.assert_array_equal(ex[k], lec[k])
    x, heads, W_O = _two_heads()
    p2 = tmp_path / "mh.npz"
    np.savez(p2, x=x, W_O=W_O, **{f"heads/{h}/{k}": W for h, t in enumerate(heads)
                                  for k, W in zip(("W_Q", "W_K", "W_V"), t)})
    ex = explain.load_example_file(str(p2))
    assert len(ex["heads"]) == 2
    np.testing.assert_array_equal(ex["heads"][1]["W_V"], heads[1][2])
    p3 = tmp_path / "obj.npz"
    np.savez(p3, x=np.array([[1, 2]], dtype=object), W_Q=lec["W_Q"])
    with pytest.raises(ConfigError):
        explain.load_example_file(str(p3))
    p4 = tmp_path / "broken.npz"
    p4.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ConfigError, match="unreadable"):
        explain.load_example_file(str(p4))


def test_parse_matrix():
    close6(explain.parse_matrix("1,0,1,0; 0,2,0,2;1,1,1,1", "--x"),
           [[1, 0, 1, 0], [0, 2, 0, 2], [1, 1, 1, 1]])
    with pytest.raises(ConfigError, match="--wq: row 2 has 2 entries but row 1 has 3"):
        explain.parse_matrix("1,2,3;4,5", "--wq")
    with pytest.raises(ConfigError, match="row 1, entry 2 'b'"):
        explain.parse_matrix("1,b", "--wq")
    with pytest.raises(ConfigError, match="empty"):
        explain.parse_matrix("1,2;;3,4", "--wq")


# ------------------------------------------------------------------ command line

def test_cli_default_prints_both_scalings(capsys):
    assert main(["attention-example"]) == 0
    out = capsys.readouterr().out
    for s in ("[0, 1, 1]", "[4, 16, 12]", "[0.063379, 0.468311, 0.468311]", "[0.0, 0.5, 0.5]",
              "0.5·[2, 8, 0] = [1, 4, 0]", "[1.936621, 6.683105, 1.595068]",
              "[1.999705, 7.759892, 0.358389]", "z_1 = [2, 7, 1.5]",
              "[0.136126, 0.431937, 0.431937]", "[1.863874, 6.319371, 1.704189]"):
        assert s in out, s
    assert out.index("no scaling") < out.index("1/√d_k")


def test_cli_scale_flag(capsys):
    assert main(["attention-example", "--scale", "none"]) == 0
    out = capsys.readouterr().out
    assert "1.936621" in out and "1.863874" not in out
    assert main(["attention-example", "--scale", "sqrt", "--decimals", "3"]) == 0
    out = capsys.readouterr().out
    assert "[1.864, 6.319, 1.704]" in out and "1.936" not in out


def test_cli_file(tmp_path, capsys):
    data = {"x": [[1, 0], [0, 1]], "W_Q": [[1, 0], [0, 1]], "W_K": [[2, 0], [0, 2]],
            "W_V": [[1, 2], [3, 4]], "_comment": "mine"}
    assert main(["attention-example", "--file", _write(tmp_path, data), "--scale", "none"]) == 0
    out = capsys.readouterr().out
    x = np.array(data["x"], float)
    q, k, v = (x @ np.array(data[n], float) for n in ("W_Q", "W_K", "W_V"))
    z = softmax_rows(q @ k.T) @ v
    for row in z:
        assert "[" + ", ".join(f"{a:.6f}".rstrip("0").rstrip(".") for a in row) + "]" in out
    assert "Your example" in out


def test_cli_matrices_on_command_line(capsys):
    args = ["attention-example", "--x", "1,0,1,0;0,2,0,2;1,1,1,1",
            "--wq", "1,0,1;1,0,0;0,0,1;0,1,1", "--wk", "0,0,1;1,1,0;0,1,0;1,1,0",
            "--wv", "0,2,0;0,3,0;1,0,3;1,1,0", "--scale", "none"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "[1.936621, 6.683105, 1.595068]" in out and "[0.0, 0.9, 0.1]" in out
    # only x replaced: the lecture's weights stay
    assert main(["attention-example", "--x", "1,0,1,0", "--scale", "none"]) == 0
    out = capsys.readouterr().out
    assert "1 token," in out and "[1.936621, 6.683105, 1.595068]" not in out


def test_cli_shape_mismatch_one_line_error(capsys):
    rc = main(["attention-example", "--wk", "0,0,1;1,1,0;0,1,0;1,1,0;1,1,1"])
    assert rc == 2
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert "\n" not in err and "Traceback" not in cap.err
    assert "x is (3, 4) but W_K is (5, 3)" in err
    assert cap.out == ""
    for bad in (["--x", "1,2;3"], ["--wq", "1,x"], ["--scale", "big"], ["--decimals", "-1"],
                ["--file", "/nonexistent/ex.json"]):
        assert main(["attention-example", *bad]) == 2
        cap = capsys.readouterr()
        assert len(cap.err.strip().splitlines()) == 1 and "Traceback" not in cap.err


def test_cli_multi_head_file(tmp_path, capsys):
    x, heads, W_O = _two_heads()
    data = {"x": x.tolist(), "W_O": W_O.tolist(),
            "heads": [dict(zip(("W_Q", "W_K", "W_V"), (W.tolist() for W in h))) for h in heads]}
    path = _write(tmp_path, data)
    assert main(["attention-example", "--file", path, "--scale", "sqrt"]) == 0
    out = capsys.readouterr().out
    _, expected = _mha_oracle(x, heads, W_O, lambda d: 1 / math.sqrt(d))
    tail = out[out.index("concat @ W_O"):]
    for row in expected:
        assert "[" + ", ".join(f"{a:.6f}".rstrip("0").rstrip(".") for a in row) + "]" in tail
    # the packaged example by name gives the same printout
    assert main(["attention-example", "--example", "two_heads", "--scale", "sqrt"]) == 0
    assert capsys.readouterr().out.endswith(tail)


def test_python_dash_m(tmp_path):
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-m", "minivit.cli", "attention-example",
                        "--scale", "none"], cwd=root, capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert r.returncode == 0, r.stderr
    assert "[1.936621, 6.683105, 1.595068]" in r.stdout
