"""``minivit attention-example``: the lecture's worked self-attention example (or a
student's own numbers) read from files or flags and printed step by step.

The math lives in :mod:`minivit.attention_steps` (re-exported here, so
``explain.self_attention_steps`` keeps working); this module reads example files
(JSON / .npz), parses matrices written on the command line, formats the steps as text and
runs the command line (see :func:`configure_parser`).
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
import zipfile

import numpy as np

from .attention_steps import (  # noqa: F401  (re-exported: the public API of explain)
    _LECTURE, _MAX_DECIMALS, _WEIGHT_KEYS, ROUNDINGS, AttentionSteps, MultiHeadSteps,
    _as_matrix, _check_decimals, _shape, lecture_example, multi_head_steps,
    is_lecture_example, round_weights, self_attention_steps,
)
from .attention_steps import format_number as _num
from .errors import ConfigError

_FILE_KEYS = ("x", "W_Q", "W_K", "W_V", "heads", "W_O")
_MAX_FILE_BYTES = 16 * 1024 * 1024


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


# ----------------------------------------------------------------------------- printing

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

    # "as on the slides" only for the lecture's own numbers: a student's matrices were
    # never on a slide
    slides = is_lecture_example(st)
    as_slides = ", as on the slides" if slides else ""
    how = (f"each row still summing to 1{as_slides}" if st.rounding == "sum-to-one"
           else "each to the nearest")
    out += ["", f"{indent}7. Attention weights rounded to {r} decimal{'s' if r != 1 else ''} "
                f"({how})"]
    for i, row in enumerate(st.softmax_rounded):
        note = "" if abs(row.sum() - 1.0) < 1e-9 else \
            f"   (sums to {_num(row.sum(), decimals)}, not 1: rounding)"
        out.append(f"{i1}token {i + 1}: {_vec(row, r, fixed=True)}{note}")

    out += ["", f"{indent}8. Weighted values  a_ij · v_j  (rounded weights{as_slides})"]
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

    whose = " (the slides' numbers)" if slides else ""
    out += ["", f"{indent}10. Outputs from the rounded weights{whose}"]
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

_EPILOG = """\
matrices on the command line:
  rows separated by ';', entries by ','; quote them for the shell. Negative entries
  work as written: --x "-1,0;0,2" (no --x=... needed).

several heads through flags:
  give --wq, --wk and --wv once per head, in the same order: the first --wq, --wk,
  --wv form head 1, the second ones head 2, and so on. --wo then projects the
  concatenated heads (H*d_v rows).
    minivit attention-example --x "1,0;0,1" --wq "1,0;0,1" --wk "1,0;0,1" \\
        --wv "1,0;0,1" --wq "0,1;1,0" --wk "0,1;1,0" --wv "1,1;0,1" \\
        --wo "1,0;0,1;1,0;0,1"

example file (--file PATH), JSON:
  one head:     {"x": [[1, 0], [0, 1]], "W_Q": [[...]], "W_K": [[...]], "W_V": [[...]]}
  several:      {"x": [[...]],
                 "heads": [{"W_Q": [[...]], "W_K": [[...]], "W_V": [[...]]},
                           {"W_Q": [[...]], "W_K": [[...]], "W_V": [[...]]}],
                 "W_O": [[...]]}
  every matrix is a list of rows; W_O is optional; keys starting with "_" and
  "description" are comments. .npz files use the same names (heads as
  heads/0/W_Q, heads/0/W_K, ... or 3-D stacked W_Q/W_K/W_V). A complete two-head
  file ships as --example two_heads.
"""


def _matrix_text(text):
    """argparse ``type`` for matrices: keep the text; parsed later with the flag's name."""
    return text


def configure_parser(parser):
    """Flags of ``minivit attention-example``."""
    import argparse
    parser.description = (
        "Print self-attention step by step. Without arguments: the lecture's 3-token "
        "example, unscaled (as in the lecture) and scaled by 1/sqrt(d_k) (as in ViT). "
        "Any matrix given replaces the lecture's (or the file's).")
    parser.epilog = _EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    # A matrix such as "-1,0;2,3" starts with '-': argparse would take it for an unknown
    # flag (its rule only knows plain negative numbers like -1 or -.5). This command has
    # no flag that starts with a digit, so anything "-<digit>" is a value here.
    parser._negative_number_matcher = re.compile(r"^-\.?\d")
    src = parser.add_argument_group("numbers")
    src.add_argument("--file", metavar="PATH",
                     help="JSON or .npz with x, W_Q, W_K, W_V (or x, heads, W_O); format below")
    src.add_argument("--example", metavar="NAME",
                     help="a packaged example: lecture_example or two_heads")
    src.add_argument("--x", metavar="M", help='tokens, e.g. "1,0,1,0;0,2,0,2;1,1,1,1"')
    for flag, key, shape in (("wq", "W_Q", "d_in × d_k"), ("wk", "W_K", "d_in × d_k"),
                             ("wv", "W_V", "d_in × d_v")):
        src.add_argument(f"--{flag}", metavar="M", action="append", type=_matrix_text,
                         help=f"{key} ({shape}); repeat once per head for several heads")
    src.add_argument("--wo", metavar="M",
                     help="W_O (H·d_v × D_out): multi-head output projection")
    out = parser.add_argument_group("printing")
    out.add_argument("--scale", default=None, metavar="{none,sqrt,VALUE}",
                     help="score scaling: none, sqrt (1/sqrt(d_k)) or a number "
                          "(default: print both none and sqrt)")
    out.add_argument("--decimals", type=int, default=6, metavar="N",
                     help="decimals printed (default 6)")
    out.add_argument("--round", type=int, default=1, metavar="N", dest="round",
                     help="decimals of the rounded weights (default 1, as on the slides)")
    out.add_argument("--rounding", choices=ROUNDINGS, default="sum-to-one",
                     help="how weights are rounded: sum-to-one (rows still sum to 1, the "
                          "slides' rule; default) or nearest")


def _flag_heads(args, ex):
    """Apply --wq/--wk/--wv to the example ``ex`` (a dict from a file or the lecture).

    Each flag may be given once per head. Given at most once each, they replace the
    single head's matrices one by one (the others stay the lecture's or the file's);
    given more than once, all three must come the same number of times and they define
    every head (head h = the h-th --wq, --wk, --wv)."""
    given = {key: getattr(args, flag) or [] for flag, key in
             (("wq", "W_Q"), ("wk", "W_K"), ("wv", "W_V"))}
    counts = {key: len(v) for key, v in given.items()}
    if max(counts.values()) == 0:
        return ex
    if max(counts.values()) == 1:
        if "heads" in ex:
            flag = next(f for f, k in (("wq", "W_Q"), ("wk", "W_K"), ("wv", "W_V"))
                        if counts[k])
            raise ConfigError(f"--{flag} cannot replace a weight of a multi-head example "
                              f"(it has {len(ex['heads'])} heads); give --wq, --wk and --wv "
                              f"once per head, or edit the file")
        for key, texts in given.items():
            if texts:
                ex[key] = parse_matrix(texts[0], f"--w{key[2].lower()}")
        return ex
    if len(set(counts.values())) != 1:
        said = ", ".join(f"--w{k[2].lower()} {n}×" for k, n in counts.items())
        raise ConfigError(f"several heads need --wq, --wk and --wv once per head, the same "
                          f"number of times; got {said}")
    H = counts["W_Q"]
    heads = [{key: parse_matrix(given[key][h], f"head {h + 1} --w{key[2].lower()}")
              for key in _WEIGHT_KEYS} for h in range(H)]
    for key in _WEIGHT_KEYS:
        ex.pop(key, None)
    ex["heads"] = heads
    return ex


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
    for flag, key in (("x", "x"), ("wo", "W_O")):
        if getattr(args, flag) is not None:
            ex[key] = parse_matrix(getattr(args, flag), f"--{flag}")
    ex = _flag_heads(args, ex)
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
