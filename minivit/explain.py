"""The lecture's worked self-attention example, computed by the library and printed step by step.

Everything here *calls* the library ops (``ops.attention.attention_forward``,
``ops.linear.linear_forward``) — nothing re-implements attention — so the numbers a
student reads are the numbers the model computes. Shapes use the lecture's letters:
``N`` tokens, ``d_in`` input width, ``d_k`` query/key width, ``d_v`` value width,
``H`` heads.

Single head (REFERENCE.md §1)::

    k_i = x_i W_K,  q_i = x_i W_Q,  v_i = x_i W_V,
    s_ij = q_i · k_j,  a_ij = softmax_j(s · s_ij),  z_i = Σ_j a_ij v_j

with s = 1 in the lecture's example and s = 1/√d_k in ViT. Multi-head:
``MSA(x) = [z^(1); …; z^(H)] W_O``.

Command line: ``minivit attention-example`` (see :func:`configure_parser`).
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
import zipfile
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from .errors import ConfigError
from .ops.attention import attention_forward
from .ops.linear import linear_forward

# The lecture's numbers (REFERENCE.md §1). minivit/examples/lecture_example.json holds the
# same numbers as a file students can copy and edit; a test keeps the two equal.
_LECTURE = {
    "x": [[1, 0, 1, 0], [0, 2, 0, 2], [1, 1, 1, 1]],
    "W_Q": [[1, 0, 1], [1, 0, 0], [0, 0, 1], [0, 1, 1]],
    "W_K": [[0, 0, 1], [1, 1, 0], [0, 1, 0], [1, 1, 0]],
    "W_V": [[0, 2, 0], [0, 3, 0], [1, 0, 3], [1, 1, 0]],
}

_WEIGHT_KEYS = ("W_Q", "W_K", "W_V")
_FILE_KEYS = ("x", "W_Q", "W_K", "W_V", "heads", "W_O")
_MAX_FILE_BYTES = 16 * 1024 * 1024
_MAX_DECIMALS = 15


def lecture_example():
    """The lecture's inputs as float64 arrays.

    Returns a dict: ``x`` (3, 4) (one row per token), ``W_Q``, ``W_K``, ``W_V`` (4, 3),
    all used as ``x @ W``.
    """
    return {k: np.array(v, dtype=np.float64) for k, v in _LECTURE.items()}


def example_path(name):
    """Path of a packaged example file: ``"lecture_example"`` or ``"two_heads"`` (the
    ``.json`` suffix is optional). Raises ConfigError for an unknown name."""
    base = os.path.join(os.path.dirname(os.path.abspath(__file__)), "examples")
    stem = name[:-5] if name.endswith(".json") else name
    path = os.path.join(base, stem + ".json")
    if not stem or os.sep in stem or "/" in stem or not os.path.isfile(path):
        known = sorted(f[:-5] for f in os.listdir(base) if f.endswith(".json")) \
            if os.path.isdir(base) else []
        raise ConfigError(f"unknown example {name!r}; packaged examples: {', '.join(known)}")
    return path


# ----------------------------------------------------------------------------- validation

def _shape(a):
    return tuple(int(n) for n in a.shape)


def _as_matrix(a, name):
    """Any array-like → finite float64 2-D array with at least one row and column."""
    if isinstance(a, np.ndarray) and a.dtype.kind not in "biuf":
        raise ConfigError(f"{name} must hold numbers, got dtype {a.dtype}")
    try:
        m = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as e:
        raise ConfigError(f"{name} must be a rectangular matrix of numbers ({e})") from None
    if m.ndim != 2:
        raise ConfigError(f"{name} must be a 2-D matrix, got shape {_shape(m)}")
    if m.shape[0] == 0 or m.shape[1] == 0:
        raise ConfigError(f"{name} must not be empty, got shape {_shape(m)}")
    if not np.all(np.isfinite(m)):
        raise ConfigError(f"{name} contains a non-finite entry (nan or inf)")
    return m


def _check_head(x, W_Q, W_K, W_V, tag=""):
    """Validate one head's weights against x (N, d_in); returns float64 copies."""
    W_Q, W_K, W_V = (_as_matrix(W, f"{tag}{n}") for W, n in zip((W_Q, W_K, W_V), _WEIGHT_KEYS))
    for W, n in zip((W_Q, W_K, W_V), _WEIGHT_KEYS):
        if W.shape[0] != x.shape[1]:
            raise ConfigError(
                f"x is {_shape(x)} but {tag}{n} is {_shape(W)}: "
                f"x's width {x.shape[1]} must equal {tag}{n}'s rows {W.shape[0]}")
    if W_Q.shape[1] != W_K.shape[1]:
        raise ConfigError(
            f"{tag}W_Q is {_shape(W_Q)} but {tag}W_K is {_shape(W_K)}: queries and keys are "
            f"dotted, so W_Q's width {W_Q.shape[1]} must equal W_K's width {W_K.shape[1]}")
    return W_Q, W_K, W_V


def _scale_value(scale, d_k):
    """(s, label) for scale None/False (no scaling), True (1/√d_k) or a number."""
    if scale is None or scale is False:
        return 1.0, "none (plain dot-product attention, as in the lecture)"
    if scale is True:
        s = 1.0 / math.sqrt(d_k)
        return s, f"1/√d_k = 1/√{d_k} = {_num(s, 6)} (ViT)"
    if isinstance(scale, str) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise ConfigError(f"scale must be None, True or a number, got {scale!r}")
    s = float(scale)
    if not math.isfinite(s):
        raise ConfigError(f"scale must be a finite number, got {scale!r}")
    return s, f"× {_num(s, 6)}"


ROUNDINGS = ("sum-to-one", "nearest")


def round_weights(A, decimals=1, rounding="sum-to-one"):
    """Round attention weights A (N, N) to ``decimals`` decimals, as the slides do.

    "sum-to-one" (default, the slides' rule): largest-remainder rounding, so every row
    still sums to 1 — round each weight down, then give the missing units (10^-decimals
    each) to the weights with the largest remainders (ties: the earlier token). This is
    what turns the lecture's [0.063379, 0.468311, 0.468311] into [0.0, 0.5, 0.5].
    "nearest": plain round-to-nearest of each weight ([0.1, 0.5, 0.5], summing to 1.1).
    Returns (N, N) float64.
    """
    decimals = _check_decimals(decimals, "round_decimals")
    A = np.asarray(A, dtype=np.float64)
    if rounding == "nearest":
        return np.round(A, decimals)
    if rounding != "sum-to-one":
        raise ConfigError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
    unit = 10.0 ** decimals
    u = np.round(A * unit, 9)                   # weights in units of 10^-decimals
    base = np.floor(u)
    rem = u - base
    need = np.clip(np.rint(u.sum(axis=-1) - base.sum(axis=-1)), 0, A.shape[-1]).astype(int)
    order = np.argsort(-rem, axis=-1, kind="stable")
    for i in range(A.shape[0]):
        base[i, order[i, :need[i]]] += 1.0
    return base / unit


def _check_decimals(n, name):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= _MAX_DECIMALS:
        raise ConfigError(f"{name} must be an integer from 0 to {_MAX_DECIMALS}, got {n!r}")
    return int(n)


# ----------------------------------------------------------------------------- single head

@dataclass
class AttentionSteps:
    """Every intermediate of single-head self-attention on N tokens.

    Inputs: ``x`` (N, d_in); ``W_Q``, ``W_K`` (d_in, d_k); ``W_V`` (d_in, d_v).
    ``keys`` = x W_K, ``queries`` = x W_Q (N, d_k); ``values`` = x W_V (N, d_v).
    ``scores`` (N, N): s_ij = q_i · k_j before scaling; ``scaled_scores`` = scale · scores.
    ``softmax`` (N, N): exact attention weights a_ij (rows: queries, sum to 1);
    ``softmax_rounded``: the same rounded to ``round_decimals`` decimals as on the slides
    (by default each row still sums to 1, see :func:`round_weights`; ``rounding`` says how).
    ``weighted_values`` (N, N, d_v): a_ij · v_j with the exact weights;
    ``weighted_values_rounded`` (N, N, d_v): the same with the rounded weights.
    ``outputs`` (N, d_v): z_i = Σ_j a_ij v_j (exact, from ``attention_forward``);
    ``outputs_rounded`` (N, d_v): from the rounded weights (the slides' numbers).
    ``scale``: the factor applied to the scores (1.0 when unscaled); ``scale_label``
    describes it.
    """

    x: np.ndarray
    W_Q: np.ndarray
    W_K: np.ndarray
    W_V: np.ndarray
    keys: np.ndarray
    queries: np.ndarray
    values: np.ndarray
    scores: np.ndarray
    scale: float
    scale_label: str
    scaled_scores: np.ndarray
    softmax: np.ndarray
    round_decimals: int
    rounding: str
    softmax_rounded: np.ndarray
    weighted_values: np.ndarray
    weighted_values_rounded: np.ndarray
    outputs: np.ndarray
    outputs_rounded: np.ndarray

    @property
    def scaled(self):
        """True when the scores were multiplied by a factor other than 1."""
        return self.scale != 1.0


def self_attention_steps(x, W_Q, W_K, W_V, scale=None, round_decimals=1,
                         rounding="sum-to-one"):
    """Single-head self-attention with every intermediate kept.

    x: (N, d_in); W_Q, W_K: (d_in, d_k); W_V: (d_in, d_v) (array-likes, used as x @ W).
    scale: None/False → no scaling (the lecture's example); True → 1/√d_k (ViT); a number
    → that factor. round_decimals, rounding: how the slides' rounded weights are made
    (see :func:`round_weights`; the default reproduces the slides).
    Returns :class:`AttentionSteps`. Raises ConfigError (naming the shapes) when the
    shapes do not fit together.
    """
    x = _as_matrix(x, "x")
    W_Q, W_K, W_V = _check_head(x, W_Q, W_K, W_V)
    round_decimals = _check_decimals(round_decimals, "round_decimals")
    s, label = _scale_value(scale, W_Q.shape[1])

    with np.errstate(over="ignore", invalid="ignore"):
        keys, _ = linear_forward(x, W_K)                    # (N, d_k)
        queries, _ = linear_forward(x, W_Q)                 # (N, d_k)
        values, _ = linear_forward(x, W_V)                  # (N, d_v)
        outputs, cache = attention_forward(queries, keys, values, scale=s)
        scores, _ = linear_forward(queries, keys.T)         # (N, N): q_i · k_j, unscaled
    if not (np.all(np.isfinite(scores * s)) and np.all(np.isfinite(outputs))):
        raise ConfigError("the numbers are too large: the scores or outputs overflow float64 "
                          f"(largest |score| {np.nanmax(np.abs(scores)):.3g})")
    A = cache["A"]                                          # (N, N) exact weights
    A_round = round_weights(A, round_decimals, rounding)
    outputs_rounded, _ = linear_forward(A_round, values)    # (N, d_v)
    return AttentionSteps(
        x=x, W_Q=W_Q, W_K=W_K, W_V=W_V, keys=keys, queries=queries, values=values,
        scores=scores, scale=cache["scale"], scale_label=label,
        scaled_scores=scores * cache["scale"], softmax=A, round_decimals=round_decimals,
        rounding=rounding, softmax_rounded=A_round,
        weighted_values=A[:, :, None] * values[None, :, :],
        weighted_values_rounded=A_round[:, :, None] * values[None, :, :],
        outputs=outputs, outputs_rounded=outputs_rounded)


# ----------------------------------------------------------------------------- multi-head

@dataclass
class MultiHeadSteps:
    """Multi-head self-attention on N tokens with H heads.

    ``x`` (N, d_in); ``heads``: H :class:`AttentionSteps`, head h giving outputs
    (N, d_v^(h)); ``concat`` (N, Σ_h d_v^(h)) = [z^(1); …; z^(H)] (H·d_v when the heads
    have equal widths); ``W_O`` (Σ_h d_v^(h), D_out) or None (no output projection);
    ``output`` (N, D_out) = concat @ W_O (= concat when W_O is None).
    """

    x: np.ndarray
    heads: List[AttentionSteps]
    concat: np.ndarray
    W_O: Optional[np.ndarray]
    output: np.ndarray


def _head_weights(head, h):
    if isinstance(head, dict):
        missing = [k for k in _WEIGHT_KEYS if k not in head]
        if missing:
            raise ConfigError(f"head {h + 1} is missing {', '.join(missing)}")
        return head["W_Q"], head["W_K"], head["W_V"]
    try:
        parts = tuple(head)
    except TypeError:
        parts = ()
    if len(parts) != 3:
        raise ConfigError(f"head {h + 1} must be (W_Q, W_K, W_V), got {type(head).__name__}")
    return parts


def multi_head_steps(x, heads, W_O=None, scale=None, round_decimals=1, rounding="sum-to-one"):
    """Multi-head self-attention, each head computed by :func:`self_attention_steps`.

    x: (N, d_in); heads: list of H triples ``(W_Q, W_K, W_V)`` (or dicts with those keys),
    head h with W_Q, W_K (d_in, d_k^(h)) and W_V (d_in, d_v^(h)); W_O: (Σ_h d_v^(h), D_out),
    i.e. (H·d_v, D_out) for equal heads, or None for no output projection.
    scale: as in :func:`self_attention_steps`, applied per head (True → 1/√d_k of that
    head, ViT's 1/√D_h). Returns :class:`MultiHeadSteps`; raises ConfigError naming the
    shapes when they do not fit.
    """
    x = _as_matrix(x, "x")
    if isinstance(heads, (str, bytes, dict)) or not hasattr(heads, "__len__") or len(heads) == 0:
        raise ConfigError("heads must be a non-empty list of (W_Q, W_K, W_V)")
    steps = []
    for h, head in enumerate(heads):
        W_Q, W_K, W_V = _check_head(x, *_head_weights(head, h), tag=f"head {h + 1} ")
        steps.append(self_attention_steps(x, W_Q, W_K, W_V, scale=scale,
                                          round_decimals=round_decimals, rounding=rounding))
    concat = np.concatenate([st.outputs for st in steps], axis=1)   # (N, Σ d_v)
    if W_O is None:
        return MultiHeadSteps(x=x, heads=steps, concat=concat, W_O=None, output=concat.copy())
    W_O = _as_matrix(W_O, "W_O")
    if W_O.shape[0] != concat.shape[1]:
        widths = " + ".join(str(st.values.shape[1]) for st in steps)
        raise ConfigError(
            f"the concatenated heads are {_shape(concat)} ({len(steps)} "
            f"head{'s' if len(steps) != 1 else ''}, value width{'s' if len(steps) != 1 else ''} "
            f"{widths}) but W_O is {_shape(W_O)}: W_O's rows {W_O.shape[0]} must equal "
            f"{concat.shape[1]}")
    output, _ = linear_forward(concat, W_O)
    return MultiHeadSteps(x=x, heads=steps, concat=concat, W_O=W_O, output=output)


# ----------------------------------------------------------------------------- printing

def _num(v, decimals):
    """A number as students write it: 2 not 2.000000, 0.468311, 6.0337e-06."""
    v = float(v)
    if not math.isfinite(v):
        return str(v)
    if v != 0 and abs(v) < 1e-3 and decimals >= 3:
        return f"{v:.{decimals - 2}e}"
    s = f"{v:.{decimals}f}"
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _vec(v, decimals, fixed=False):
    if fixed:
        return "[" + ", ".join(f"{float(a):.{decimals}f}" for a in v) + "]"
    return "[" + ", ".join(_num(a, decimals) for a in v) + "]"


def _matrix_lines(name, M, decimals, indent="   "):
    lines = [f"{indent}{name} ({M.shape[0]} × {M.shape[1]}):"]
    lines += [f"{indent}  {_vec(row, decimals)}" for row in M]
    return lines


def _steps_lines(st, decimals, indent=""):
    N, d_in = st.x.shape
    d_k, d_v = st.W_Q.shape[1], st.W_V.shape[1]
    r = st.round_decimals
    i1 = indent + "   "
    out = [f"{indent}Self-attention step by step: {N} token{'s' if N != 1 else ''}, "
           f"d_in = {d_in}, d_k = {d_k}, d_v = {d_v}; scaling: {st.scale_label}"]

    out += ["", f"{indent}1. Inputs (one row per token; weights used as x @ W)"]
    out += [f"{i1}x_{i + 1} = {_vec(row, decimals)}" for i, row in enumerate(st.x)]
    for name in _WEIGHT_KEYS:
        out += _matrix_lines(name, getattr(st, name), decimals, i1)

    for num, title, sym, M in ((2, "Keys", "k", st.keys), (3, "Queries", "q", st.queries),
                               (4, "Values", "v", st.values)):
        W = {"k": "W_K", "q": "W_Q", "v": "W_V"}[sym]
        out += ["", f"{indent}{num}. {title}  {sym}_i = x_i {W}"]
        out += [f"{i1}token {i + 1}: {sym}_{i + 1} = {_vec(row, decimals)}"
                for i, row in enumerate(M)]

    out += ["", f"{indent}5. Scores  s_ij = q_i · k_j  (row i: token i's query against every key)"]
    for i, row in enumerate(st.scores):
        terms = ", ".join(f"q_{i + 1}·k_{j + 1} = {_num(a, decimals)}" for j, a in enumerate(row))
        out.append(f"{i1}token {i + 1}: {_vec(row, decimals)}   ({terms})")
    if st.scaled:
        out += [f"{i1}scaled by {st.scale_label}:"]
        out += [f"{i1}token {i + 1}: {_vec(row, decimals)}"
                for i, row in enumerate(st.scaled_scores)]
        what = "softmax_j(scaled s_ij)"
    else:
        what = "softmax_j(s_ij)"

    out += ["", f"{indent}6. Attention weights  a_ij = {what}, exact (each row sums to 1)"]
    out += [f"{i1}token {i + 1}: {_vec(row, decimals)}" for i, row in enumerate(st.softmax)]

    how = ("each row still summing to 1, as on the slides" if st.rounding == "sum-to-one"
           else "each to the nearest")
    out += ["", f"{indent}7. Attention weights rounded to {r} decimal{'s' if r != 1 else ''} "
                f"({how})"]
    for i, row in enumerate(st.softmax_rounded):
        note = "" if abs(row.sum() - 1.0) < 1e-9 else \
            f"   (sums to {_num(row.sum(), decimals)}, not 1: rounding)"
        out.append(f"{i1}token {i + 1}: {_vec(row, r, fixed=True)}{note}")

    out += ["", f"{indent}8. Weighted values  a_ij · v_j  (rounded weights, as on the slides)"]
    for i in range(N):
        pad = " " * len(f"token {i + 1}: ")
        for j in range(N):
            head = f"token {i + 1}: " if j == 0 else pad
            out.append(f"{i1}{head}{st.softmax_rounded[i, j]:.{r}f}·{_vec(st.values[j], decimals)}"
                       f" = {_vec(st.weighted_values_rounded[i, j], decimals)}")
        out.append(f"{i1}{pad}sum = {_vec(st.outputs_rounded[i], decimals)}")

    out += ["", f"{indent}9. Outputs  z_i = Σ_j a_ij v_j  (exact weights)"]
    out += [f"{i1}token {i + 1}: z_{i + 1} = {_vec(row, decimals)}"
            for i, row in enumerate(st.outputs)]

    out += ["", f"{indent}10. Outputs from the rounded weights (the slides' numbers)"]
    out += [f"{i1}token {i + 1}: z_{i + 1} = {_vec(row, decimals)}"
            for i, row in enumerate(st.outputs_rounded)]
    return out


def format_steps(steps, decimals=6):
    """A step-by-step printout of :class:`AttentionSteps` (or :class:`MultiHeadSteps`,
    via :func:`format_multi_head`) for students: inputs, keys, queries, values, scores,
    exact and rounded softmax, weighted values, exact outputs and outputs from the rounded
    weights, one row per token. ``decimals``: decimals shown (trailing zeros dropped).
    Returns the text (no trailing newline)."""
    decimals = _check_decimals(decimals, "decimals")
    if isinstance(steps, MultiHeadSteps):
        return format_multi_head(steps, decimals)
    if not isinstance(steps, AttentionSteps):
        raise ConfigError(f"format_steps needs AttentionSteps, got {type(steps).__name__}")
    return "\n".join(_steps_lines(steps, decimals))


def format_multi_head(steps, decimals=6):
    """A printout of :class:`MultiHeadSteps`: each head step by step, then the
    concatenation (N, Σ d_v) and the output concat @ W_O (N, D_out), one row per token."""
    decimals = _check_decimals(decimals, "decimals")
    H = len(steps.heads)
    N = steps.x.shape[0]
    out = [f"Multi-head self-attention: {H} head{'s' if H != 1 else ''}, {N} token"
           f"{'s' if N != 1 else ''}; "
           f"scaling: {steps.heads[0].scale_label}"]
    for h, st in enumerate(steps.heads):
        out += ["", f"=== Head {h + 1} of {H} ==="]
        out += _steps_lines(st, decimals, indent="")
    out += ["", f"=== Concatenation [z^(1); …; z^({H})]  ({steps.concat.shape[0]} × "
                f"{steps.concat.shape[1]}) ==="]
    out += [f"   token {i + 1}: {_vec(row, decimals)}" for i, row in enumerate(steps.concat)]
    if steps.W_O is None:
        out += ["", "=== Output: no W_O given, so the output is the concatenation ==="]
    else:
        out += ["", "=== Output  concat @ W_O ==="]
        out += _matrix_lines("W_O", steps.W_O, decimals)
    out += [f"   token {i + 1}: {_vec(row, decimals)}" for i, row in enumerate(steps.output)]
    return "\n".join(out)


# ----------------------------------------------------------------------------- files

def _json_matrix(value, name):
    """A JSON list of rows of numbers → float64 (rows, cols); ConfigError naming the key."""
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{name} must be a non-empty list of rows, e.g. [[1, 0], [0, 1]]")
    width = None
    for i, row in enumerate(value):
        if not isinstance(row, list):
            raise ConfigError(f"{name}: row {i + 1} must be a list of numbers, got {row!r}"[:200])
        if not row:
            raise ConfigError(f"{name}: row {i + 1} is empty")
        for j, a in enumerate(row):
            if isinstance(a, bool) or not isinstance(a, (int, float)):
                raise ConfigError(
                    f"{name}: row {i + 1}, entry {j + 1} is not a number: {a!r}"[:200])
        if width is None:
            width = len(row)
        elif len(row) != width:
            raise ConfigError(f"{name}: row {i + 1} has {len(row)} entries but row 1 has {width}"
                              " (ragged rows)")
    return _as_matrix(value, name)


def _check_keys(found, where):
    unknown = [k for k in found if k not in _FILE_KEYS and not k.startswith("_")
               and k != "description"]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; expected {', '.join(_FILE_KEYS)}")


def _finish_example(ex, where):
    if "x" not in ex:
        raise ConfigError(f"{where}: missing key 'x' (the tokens, one row each)")
    single = [k for k in _WEIGHT_KEYS if k in ex]
    if "heads" in ex:
        if single:
            raise ConfigError(f"{where}: give either W_Q/W_K/W_V or 'heads', not both "
                              f"(found {', '.join(single)} and heads)")
    else:
        missing = [k for k in _WEIGHT_KEYS if k not in ex]
        if missing:
            raise ConfigError(f"{where}: missing key {missing[0]!r} (needs x, W_Q, W_K, W_V, "
                              f"or x and heads)")
    return ex


def _load_json(path, raw):
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 JSON file (or a .npz)") from None

    def no_constants(c):
        raise ConfigError(f"{path}: {c} is not allowed; use finite numbers")
    try:
        data = json.loads(text, parse_constant=no_constants)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: "
                          f"{e.msg}") from None
    except RecursionError:
        raise ConfigError(f"{path}: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be an object with keys x, W_Q, W_K, "
                          f"W_V (or x, heads, W_O)")
    _check_keys(data, path)
    ex = {}
    for k in ("x", "W_Q", "W_K", "W_V", "W_O"):
        if k in data:
            ex[k] = _json_matrix(data[k], k)
    if "heads" in data:
        heads = data["heads"]
        if not isinstance(heads, list) or not heads:
            raise ConfigError(f"{path}: 'heads' must be a non-empty list of "
                              f'{{"W_Q": ..., "W_K": ..., "W_V": ...}}')
        ex["heads"] = []
        for h, head in enumerate(heads):
            if not isinstance(head, dict):
                raise ConfigError(f"{path}: heads[{h}] must be an object with W_Q, W_K, W_V")
            extra = [k for k in head if k not in _WEIGHT_KEYS and not k.startswith("_")]
            if extra:
                raise ConfigError(f"{path}: heads[{h}] has unknown key {extra[0]!r}; "
                                  f"expected W_Q, W_K, W_V")
            missing = [k for k in _WEIGHT_KEYS if k not in head]
            if missing:
                raise ConfigError(f"{path}: heads[{h}] is missing key {missing[0]!r}")
            ex["heads"].append({k: _json_matrix(head[k], f"heads[{h}].{k}") for k in _WEIGHT_KEYS})
    return _finish_example(ex, path)


def _load_npz(path):
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise ConfigError(f"{path}: unreadable .npz file ({e})".splitlines()[0]) from None
    ex, heads = {}, {}
    for k, a in arrays.items():
        if k.startswith("heads/"):                        # heads/0/W_Q, heads/0/W_K, …
            parts = k.split("/")
            if len(parts) != 3 or not parts[1].isdigit() or parts[2] not in _WEIGHT_KEYS:
                raise ConfigError(f"{path}: unknown key {k!r}; head arrays are named "
                                  f"heads/<i>/W_Q, heads/<i>/W_K, heads/<i>/W_V")
            heads.setdefault(int(parts[1]), {})[parts[2]] = _as_matrix(a, k)
            continue
        _check_keys([k], path)
        if k in _WEIGHT_KEYS and getattr(a, "ndim", 0) == 3:   # stacked (H, d_in, d)
            for h in range(a.shape[0]):
                heads.setdefault(h, {})[k] = _as_matrix(a[h], f"{k}[{h}]")
            continue
        ex[k] = _as_matrix(a, k)
    if heads:
        order = sorted(heads)
        if order != list(range(len(order))):
            raise ConfigError(f"{path}: heads must be numbered 0, 1, …, got {order}")
        for h in order:
            missing = [k for k in _WEIGHT_KEYS if k not in heads[h]]
            if missing:
                raise ConfigError(f"{path}: head {h} is missing {missing[0]!r}")
        if any(k in ex for k in _WEIGHT_KEYS):
            raise ConfigError(f"{path}: give either 2-D W_Q/W_K/W_V or heads, not both")
        ex["heads"] = [heads[h] for h in order]
    return _finish_example(ex, path)


def load_example_file(path):
    """Read a student's example from JSON or NumPy ``.npz``.

    JSON: ``{"x": [[...], ...], "W_Q": ..., "W_K": ..., "W_V": ...}`` for one head, or
    ``{"x": ..., "heads": [{"W_Q": ..., "W_K": ..., "W_V": ...}, ...], "W_O": ...}`` for
    several; keys starting with ``_`` and ``"description"`` are comments. ``.npz``: arrays
    named x, W_Q, W_K, W_V, W_O; heads as ``heads/<i>/W_Q`` … or as 3-D stacked W_Q/W_K/W_V
    (H, d_in, d). Loaded with ``allow_pickle=False``.
    Returns a dict of float64 arrays: ``x`` (N, d_in), then ``W_Q``, ``W_K``, ``W_V`` or
    ``heads`` (a list of dicts with those keys), and ``W_O`` when given. Shapes are
    checked later by :func:`self_attention_steps` / :func:`multi_head_steps`.
    Raises ConfigError naming the key or problem (malformed JSON, non-numbers, ragged
    rows, missing keys, unreadable file).
    """
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        if size > _MAX_FILE_BYTES:
            raise ConfigError(f"{path}: file too large ({size} bytes) for an example")
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read example file {path}: {e.strerror or e}") from None
    if path.lower().endswith(".npz") or raw[:4] == b"PK\x03\x04":
        return _load_npz(path)
    return _load_json(path, raw)


def parse_matrix(text, name="matrix"):
    """Parse a matrix written on the command line: rows separated by ``;``, entries by
    ``,`` — ``"1,0,1,0;0,2,0,2"`` → float64 (2, 4). Raises ConfigError naming the row."""
    rows = [r.strip() for r in str(text).strip().rstrip(";").split(";")]
    out = []
    for i, r in enumerate(rows):
        if not r:
            raise ConfigError(f"{name}: row {i + 1} is empty (rows are separated by ';', "
                              f"entries by ',')")
        vals = []
        for j, e in enumerate(r.split(",")):
            try:
                vals.append(float(e.strip()))
            except ValueError:
                raise ConfigError(f"{name}: row {i + 1}, entry {j + 1} {e.strip()!r} is not "
                                  f"a number") from None
        if out and len(vals) != len(out[0]):
            raise ConfigError(f"{name}: row {i + 1} has {len(vals)} entries but row 1 has "
                              f"{len(out[0])} (ragged rows)")
        out.append(vals)
    return _as_matrix(out, name)


# ----------------------------------------------------------------------------- command line

def configure_parser(parser):
    """Flags of ``minivit attention-example``."""
    parser.description = (
        "Print self-attention step by step. Without arguments: the lecture's 3-token "
        "example, unscaled (as in the lecture) and scaled by 1/sqrt(d_k) (as in ViT). "
        "Matrices on the command line: rows separated by ';', entries by ','; quote them, "
        "and write --x=-1,2 when the first entry is negative. Any matrix given replaces "
        "the lecture's (or the file's).")
    src = parser.add_argument_group("numbers")
    src.add_argument("--file", metavar="PATH",
                     help="JSON or .npz with x, W_Q, W_K, W_V (or x, heads, W_O)")
    src.add_argument("--example", metavar="NAME",
                     help="a packaged example: lecture_example or two_heads")
    src.add_argument("--x", metavar="M", help='tokens, e.g. "1,0,1,0;0,2,0,2;1,1,1,1"')
    src.add_argument("--wq", metavar="M", help="W_Q (d_in × d_k)")
    src.add_argument("--wk", metavar="M", help="W_K (d_in × d_k)")
    src.add_argument("--wv", metavar="M", help="W_V (d_in × d_v)")
    src.add_argument("--wo", metavar="M",
                     help="W_O (H·d_v × D_out): multi-head output projection")
    out = parser.add_argument_group("printing")
    out.add_argument("--scale", default=None, metavar="{none,sqrt,VALUE}",
                     help="score scaling: none, sqrt (1/sqrt(d_k)) or a number "
                          "(default: print both none and sqrt)")
    out.add_argument("--decimals", type=int, default=6, metavar="N",
                     help="decimals printed (default 6)")
    out.add_argument("--round", type=int, default=1, metavar="N", dest="round",
                     help="decimals of the slides' rounded weights (default 1)")
    out.add_argument("--rounding", choices=ROUNDINGS, default="sum-to-one",
                     help="how weights are rounded: sum-to-one (rows still sum to 1, the "
                          "slides' numbers; default) or nearest")


def _parse_scale(text):
    t = str(text).strip().lower()
    if t in ("none", "no", "1/1"):
        return None
    if t in ("sqrt", "1/sqrt(d_k)", "vit"):
        return True
    try:
        v = float(t)
    except ValueError:
        raise ConfigError(f"--scale must be none, sqrt or a number, got {text!r}") from None
    if not math.isfinite(v):
        raise ConfigError(f"--scale must be a finite number, got {text!r}")
    return v


def _emit(text):
    try:
        print(text)
    except UnicodeEncodeError:            # a console that cannot print √, ·, ×, Σ
        text = re.sub(r"√(\w+)", r"sqrt(\1)", text)
        for a, b in (("√", "sqrt"), ("·", "*"), ("×", "x"), ("Σ", "sum"), ("…", "...")):
            text = text.replace(a, b)
        enc = getattr(sys.stdout, "encoding", None) or "ascii"
        print(text.encode(enc, "replace").decode(enc, "replace"))


def cli_run(args):
    """Run ``minivit attention-example``; returns the exit status (0)."""
    decimals = _check_decimals(args.decimals, "--decimals")
    rnd = _check_decimals(args.round, "--round")
    if args.file and args.example:
        raise ConfigError("give --file or --example, not both")
    custom = any(getattr(args, k) for k in ("file", "example", "x", "wq", "wk", "wv", "wo"))
    ex = lecture_example()
    if args.file or args.example:
        ex = load_example_file(args.file or example_path(args.example))
    for flag, key in (("x", "x"), ("wq", "W_Q"), ("wk", "W_K"), ("wv", "W_V"), ("wo", "W_O")):
        text = getattr(args, flag)
        if text is not None:
            if key in _WEIGHT_KEYS and "heads" in ex:
                raise ConfigError(f"--{flag} cannot replace a weight of a multi-head file "
                                  f"(it has {len(ex['heads'])} heads); edit the file instead")
            ex[key] = parse_matrix(text, f"--{flag}")
    scales = [None, True] if args.scale is None else [_parse_scale(args.scale)]

    texts = []
    for s in scales:
        if "heads" in ex or "W_O" in ex:
            heads = ex.get("heads") or [tuple(ex[k] for k in _WEIGHT_KEYS)]
            steps = multi_head_steps(ex["x"], heads, ex.get("W_O"), scale=s, round_decimals=rnd,
                                     rounding=args.rounding)
        else:
            steps = self_attention_steps(ex["x"], ex["W_Q"], ex["W_K"], ex["W_V"], scale=s,
                                         round_decimals=rnd, rounding=args.rounding)
        texts.append(steps)
    what = "Your example" if custom else "The lecture's worked example"
    parts = []
    for s, steps in zip(scales, texts):
        if s is None:
            title = f"{what}: plain dot-product attention (no scaling)"
        elif s is True:
            title = f"{what}: scaled by 1/√d_k, as in ViT"
        else:
            title = f"{what}: scores scaled by {_num(s, decimals)}"
        bar = "=" * max(len(title), 20)
        parts.append(f"{bar}\n{title}\n{bar}\n\n{format_steps(steps, decimals)}")
    _emit("\n\n".join(parts))
    return 0
