"""The worked self-attention example's math: every intermediate of single- and multi-head
self-attention, computed by the library's own ops.

Everything here *calls* the library ops (``ops.attention.attention_forward``,
``ops.linear.linear_forward``) — nothing re-implements attention — so the numbers a
student reads are the numbers the model computes. Shapes use the lecture's letters:
``N`` tokens, ``d_in`` input width, ``d_k`` query/key width, ``d_v`` value width,
``H`` heads.

Single head (paper Eq. 5–7 of Appendix A; the lecture's notation)::

    k_i = x_i W_K,  q_i = x_i W_Q,  v_i = x_i W_V,
    s_ij = q_i · k_j,  a_ij = softmax_j(s · s_ij),  z_i = Σ_j a_ij v_j

with s = 1 in the lecture's example and s = 1/√d_k in ViT. Multi-head (Eq. 8):
``MSA(x) = [z^(1); …; z^(H)] W_O``.

Reading example files, parsing the command line and printing live in
:mod:`minivit.explain`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from .errors import ConfigError
from .ops.attention import attention_forward
from .ops.linear import linear_forward

# The lecture's numbers. minivit/examples/lecture_example.json holds the same numbers as a
# file students can copy and edit; a test keeps the two equal.
_LECTURE = {
    "x": [[1, 0, 1, 0], [0, 2, 0, 2], [1, 1, 1, 1]],
    "W_Q": [[1, 0, 1], [1, 0, 0], [0, 0, 1], [0, 1, 1]],
    "W_K": [[0, 0, 1], [1, 1, 0], [0, 1, 0], [1, 1, 0]],
    "W_V": [[0, 2, 0], [0, 3, 0], [1, 0, 3], [1, 1, 0]],
}

_WEIGHT_KEYS = ("W_Q", "W_K", "W_V")
_MAX_DECIMALS = 15


def lecture_example():
    """The lecture's inputs as float64 arrays.

    Returns a dict: ``x`` (3, 4) (one row per token), ``W_Q``, ``W_K``, ``W_V`` (4, 3),
    all used as ``x @ W``.
    """
    return {k: np.array(v, dtype=np.float64) for k, v in _LECTURE.items()}


def is_lecture_example(steps) -> bool:
    """True when ``steps`` (:class:`AttentionSteps`) ran on the lecture's own x, W_Q, W_K,
    W_V with the slides' rounding (1 decimal, rows summing to 1): only then are its rounded
    numbers "the slides' numbers"."""
    lec = lecture_example()
    return (steps.round_decimals == 1 and steps.rounding == "sum-to-one"
            and all(getattr(steps, k).shape == lec[k].shape
                    and np.array_equal(getattr(steps, k), lec[k]) for k in lec))


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
        return s, f"1/√d_k = 1/√{d_k} = {format_number(s, 6)} (ViT)"
    if isinstance(scale, str) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise ConfigError(f"scale must be None, True or a number, got {scale!r}")
    s = float(scale)
    if not math.isfinite(s):
        raise ConfigError(f"scale must be a finite number, got {scale!r}")
    return s, f"× {format_number(s, 6)}"


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




def format_number(v, decimals):
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
