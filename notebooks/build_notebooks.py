"""Write the course notebooks (``NN_name.ipynb``) from the Python source in this file.

    python notebooks/build_notebooks.py            # write every notebook (outputs cleared)
    python notebooks/build_notebooks.py 01 03      # only these
    python notebooks/execute.py                    # then run them and keep the outputs

Each notebook is one string below in the "percent" format: a line ``# %% [markdown]``
starts a markdown cell, a line ``# %%`` a code cell. Edit the notebooks here, not in
Jupyter, so that a change is a reviewable diff of Python source;
``tests/test_notebooks.py`` checks that the ``.ipynb`` files match this file.

The notebooks narrate the lecture and *call the library*: every number they show is
computed by ``minivit``; matplotlib appears only to draw what the library computed.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}

NOTEBOOKS: dict[str, str] = {}

# =========================================================================================
NOTEBOOKS["01_self_attention_by_hand"] = r'''
# %% [markdown]
# 01 · Self-attention by hand

The lecture works one example of self-attention with pencil and paper: **three tokens of
width 4**, projected to keys, queries and values of width 3. This notebook redoes every
step with the library and checks each number against the one written in the lecture.

What you will see:

1. keys, queries and values are just `x @ W`;
2. a score is a dot product `q_i · k_j` — a similarity;
3. softmax turns the scores of one query into weights that sum to 1 (the slides round them);
4. the output of a token is the weighted sum of the values;
5. ViT divides the scores by √D_h — and why it has to.

Every library call below is the code that trains the model in notebook 05
(`minivit.ops.linear`, `minivit.ops.softmax`, `minivit.ops.attention`), and
`minivit.explain` strings them together step by step.

# %%
%matplotlib inline
import numpy as np
import matplotlib.pyplot as plt

from _common import setup
from minivit.explain import lecture_example, self_attention_steps, format_steps, round_weights
from minivit.ops.linear import linear_forward
from minivit.ops.softmax import softmax_forward, softmax_backward
from minivit.ops.attention import attention_forward

setup()


def compare(what, library_value, lecture_value, atol=1e-6):
    """Print whether the library's number equals the lecture's (np.allclose)."""
    ok = np.allclose(library_value, lecture_value, atol=atol)
    verdict = "matches the lecture" if ok else "MISMATCH with the lecture"
    print(f"{'✓' if ok else '✗'} {what}: {verdict}")
    if not ok:
        print("   library:", np.round(library_value, 6).tolist())
        print("   lecture:", np.asarray(lecture_value).tolist())

# %% [markdown]
## The inputs

One row per token. The weights are 4 × 3 matrices used as `x @ W` (a row vector times a
matrix), the convention of the whole library.

# %%
ex = lecture_example()
x, W_K, W_Q, W_V = ex["x"], ex["W_K"], ex["W_Q"], ex["W_V"]
print("x (3 tokens × 4 features):\n", x)
print("\nW_K:\n", W_K, "\n\nW_Q:\n", W_Q, "\n\nW_V:\n", W_V)

# %% [markdown]
## Step 1 — keys: k_i = x_i W_K

By hand for token 1: x₁ = [1, 0, 1, 0] picks rows 1 and 3 of W_K and adds them:
[0, 0, 1] + [0, 1, 0] = **[0, 1, 1]**. The library's dense layer
(`linear_forward(x, W)`, here without a bias) does this for all tokens at once.

# %%
keys, _ = linear_forward(x, W_K)
print(keys)
compare("keys", keys, [[0, 1, 1], [4, 4, 0], [2, 3, 1]])

# %% [markdown]
## Step 2 — queries: q_i = x_i W_Q

Token 1: rows 1 and 3 of W_Q, [1, 0, 1] + [0, 0, 1] = **[1, 0, 2]**.

# %%
queries, _ = linear_forward(x, W_Q)
print(queries)
compare("queries", queries, [[1, 0, 2], [2, 2, 2], [2, 1, 3]])

# %% [markdown]
## Step 3 — values: v_i = x_i W_V

Token 1: [0, 2, 0] + [1, 0, 3] = **[1, 2, 3]**.

# %%
values, _ = linear_forward(x, W_V)
print(values)
compare("values", values, [[1, 2, 3], [2, 8, 0], [2, 6, 3]])

# %% [markdown]
## Step 4 — scores: s_ij = q_i · k_j

The score of query i against key j is their dot product. By hand, for token 1's query
q₁ = [1, 0, 2]:

* q₁ · k₁ = 1·0 + 0·1 + 2·1 = **2**
* q₁ · k₂ = 1·4 + 0·4 + 2·0 = **4**
* q₁ · k₃ = 1·2 + 0·3 + 2·1 = **4**

**Why a dot product measures similarity.** q · k = ‖q‖ ‖k‖ cos θ: it is large when the two
vectors point the same way (θ small), zero when they are orthogonal and negative when
they point apart. The query says *what this token is looking for*, the key *what each
token offers*; a large dot product means "this key is what I am looking for". Unlike the
cosine, the dot product also grows with the lengths — which is why scores can become
large (step 8).

All scores at once are one matrix product, Q Kᵀ — again the library's dense layer:

# %%
scores, _ = linear_forward(queries, keys.T)          # (3, 3): row i = query i, column j = key j
print(scores)
compare("scores", scores, [[2, 4, 4], [4, 16, 12], [4, 12, 10]])

# the same scores split into length × length × cos θ, for token 1's query
cos = scores[0] / (np.linalg.norm(queries[0]) * np.linalg.norm(keys, axis=1))
print("\ncos θ between q1 and k1, k2, k3:", np.round(cos, 3))
print("lengths of k1, k2, k3:          ", np.round(np.linalg.norm(keys, axis=1), 3))

# %% [markdown]
k₁ points most nearly the way q₁ does (cos θ = 0.63) but is short, so it scores lowest;
k₂ is the least aligned (0.32) but four times longer, and ties with k₃ at 4. Direction
and length both count — one reason the scores of wide vectors can grow large (step 8).

# %% [markdown]
## Step 5 — softmax: attention weights

Each row of scores becomes a probability distribution over the keys:
a_ij = exp(s_ij) / Σ_k exp(s_ik). The library's softmax subtracts the row maximum first
(the result is the same, and `exp` cannot overflow).

# %%
A, _ = softmax_forward(scores)
print(A)
compare("softmax (exact)", A, [[0.063379, 0.468311, 0.468311],
                                [6.0337e-06, 0.982008, 0.017986],
                                [2.9539e-04, 0.880537, 0.119168]])
print("rows sum to", A.sum(axis=1))

# %% [markdown]
### The slides' rounded weights

The slides show the weights to one decimal: [0.0, 0.5, 0.5], [0.0, 1.0, 0.0],
[0.0, 0.9, 0.1]. Token 1's first weight is really 0.063, which rounds to the nearest
tenth as **0.1** — the slides write **0.0** so that the row still sums to 1 (largest-
remainder rounding: round down, then hand the missing tenths to the largest remainders).
The lecture notes that this "0.0" comes from rounding. `round_weights` offers both rules:

# %%
rounded = round_weights(A, decimals=1, rounding="sum-to-one")
nearest = round_weights(A, decimals=1, rounding="nearest")
print("sum-to-one (the slides):\n", rounded)
print("nearest:\n", nearest, "\nrow sums with 'nearest':", nearest.sum(axis=1))
compare("rounded softmax", rounded, [[0.0, 0.5, 0.5], [0.0, 1.0, 0.0], [0.0, 0.9, 0.1]])

# %% [markdown]
## Step 6 — weighted values

Token 1's output is the sum of every value weighted by token 1's attention weights. With
the slides' rounded weights:

* 0.0 · [1, 2, 3] = [0, 0, 0]
* 0.5 · [2, 8, 0] = [1, 4, 0]
* 0.5 · [2, 6, 3] = [1, 3, 1.5]

`self_attention_steps` runs steps 1–7 with the library and keeps every intermediate:

# %%
steps = self_attention_steps(x, W_Q, W_K, W_V)        # scale=None: plain dot product
print("token 1's weighted values (rounded weights):\n", steps.weighted_values_rounded[0])
compare("weighted values of token 1", steps.weighted_values_rounded[0],
        [[0, 0, 0], [1, 4, 0], [1, 3, 1.5]])

# %% [markdown]
## Step 7 — outputs: z_i = Σ_j a_ij v_j

The sum of the weighted values, for every token at once: z = A V. The library's
`attention_forward(q, k, v)` does steps 4–7 in one call — the same function the model
uses for every head.

# %%
outputs, cache = attention_forward(queries, keys, values, scale=None)
print("exact outputs:\n", outputs)
compare("outputs (exact)", outputs, [[1.936621, 6.683105, 1.595068],
                                     [1.999994, 7.963992, 0.053976],
                                     [1.999705, 7.759892, 0.358389]])
print("\noutputs from the rounded weights (the slides):\n", steps.outputs_rounded)
compare("outputs (slides)", steps.outputs_rounded, [[2.0, 7.0, 1.5], [2.0, 8.0, 0.0], [2.0, 7.8, 0.3]])
compare("attention_forward's weights = the softmax above", cache["A"], A)

# %% [markdown]
### The whole example at a glance

A picture of the attention weights (rows: the token that asks, columns: the token that
answers) and the library's step-by-step printout (`minivit attention-example` on the
command line prints the same).

# %%
fig, ax = plt.subplots(figsize=(4, 3.4))
im = ax.imshow(steps.softmax, cmap="Blues", vmin=0, vmax=1)
for i in range(3):
    for j in range(3):
        ax.text(j, i, f"{steps.softmax[i, j]:.3f}", ha="center", va="center",
                color="white" if steps.softmax[i, j] > 0.5 else "black")
ax.set_xticks(range(3), [f"key {j + 1}" for j in range(3)])
ax.set_yticks(range(3), [f"query {i + 1}" for i in range(3)])
ax.set_title("attention weights (unscaled)")
fig.colorbar(im, ax=ax)
plt.show()
print(format_steps(steps, decimals=6))

# %% [markdown]
## Step 8 — the scaled version, as in ViT

ViT (following Vaswani et al.) divides the scores by √d_k, the width of a query/key —
in a multi-head model, **D_h = D / heads**, the width of one head. Here d_k = 3:

# %%
scaled = self_attention_steps(x, W_Q, W_K, W_V, scale=True)
print("scale:", scaled.scale_label)
print("softmax:\n", scaled.softmax, "\noutputs:\n", scaled.outputs)
compare("scaled softmax, token 1", scaled.softmax[0], [0.136126, 0.431937, 0.431937])
compare("scaled output, token 1", scaled.outputs[0], [1.863874, 6.319371, 1.704189])

# %% [markdown]
Dividing by √3 flattens token 1's weights from [0.06, 0.47, 0.47] to [0.14, 0.43, 0.43].

### Why divide by √D_h?

Take random queries and keys whose entries have mean 0 and variance 1. A score
q · k = Σ_d q_d k_d is a sum of d independent terms of variance 1, so its **standard
deviation grows like √d**. In a wide head, the scores of one query are spread over a range
of tens, softmax puts nearly all the weight on the largest one (it *saturates*: the
weights become one-hot), and its gradient — the Jacobian diag(a) − a aᵀ — vanishes, so
the model stops learning where to look. Dividing by √d brings the spread back to 1 for
every width.

Below, for widths d from 4 to 1024: 64 random queries against 64 random keys, through the
library's `attention_forward` (unscaled and scaled) and `softmax_backward`.

# %%
rng = np.random.default_rng(0)
dims = [4, 16, 64, 256, 1024]
rows = []
for d in dims:
    q = rng.standard_normal((64, d))
    k = rng.standard_normal((64, d))
    v = np.zeros((64, 1))
    dy = rng.standard_normal((64, 64))
    row = {"d": d}
    for name, scale in (("unscaled", None), ("scaled", True)):
        _, c = attention_forward(q, k, v, scale=scale)
        a = c["A"]
        s, _ = linear_forward(q * c["scale"], k.T)          # the scores softmax saw
        row[name] = (s.std(), a.max(axis=1).mean(), np.abs(softmax_backward(dy, a)).mean())
    rows.append(row)

print(f"{'d':>5} | {'score std':>19} | {'mean largest weight':>21} | {'mean |softmax grad|':>21}")
print(f"{'':>5} | {'unscaled':>9} {'scaled':>9} | {'unscaled':>10} {'scaled':>10} | {'unscaled':>10} {'scaled':>10}")
for r in rows:
    u, s = r["unscaled"], r["scaled"]
    print(f"{r['d']:>5} | {u[0]:9.2f} {s[0]:9.2f} | {u[1]:10.3f} {s[1]:10.3f} | {u[2]:10.2e} {s[2]:10.2e}")

fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
for i, (title, log) in enumerate((("std of the scores", True), ("mean largest attention weight", False),
                                  ("mean |gradient through softmax|", True))):
    for name, style in (("unscaled", "o-"), ("scaled", "s-")):
        axes[i].plot(dims, [r[name][i] for r in rows], style, label=name)
    axes[i].set_xscale("log", base=2)
    if log:
        axes[i].set_yscale("log")
    axes[i].set(xlabel="width d of q and k", title=title)
    axes[i].grid(alpha=0.3)
    axes[i].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
Unscaled, the spread of the scores grows like √d, the largest weight tends to 1 (one key
takes everything) and the gradient through softmax keeps shrinking — six times smaller
at d = 1024 than at d = 4, and falling. Scaled, all three stay put whatever the width.

**Which width?** In multi-head attention each head computes its own softmax over its own
q · k of width **D_h = D / heads**, so the scale is 1/√D_h. Dividing by √D (the model's
full width) is a classic re-implementation bug: with 12 heads it makes every score
√12 ≈ 3.5 times too small. The library pins the right one with a test; notebook 02
builds the heads.

## Try it yourself

* Change a weight in `W_Q` and re-run: which scores change, and why?
* `minivit attention-example --x "1,0;0,1;1,1" --wq "1,0;0,1" --wk "1,0;0,1" --wv "1,0;0,1"`
  prints any example of your own, step by step.
'''

# =========================================================================================
NOTEBOOKS["02_multi_head_attention"] = r'''
# %% [markdown]
# 02 · Multi-head attention

One head computes one set of attention weights per token: it can look for one thing. ViT
runs **H heads in parallel**, each on its own slice of width D_h = D/H, and mixes their
results with an output projection (paper Appendix A, Eq. 5–8):

    [q, k, v] = z U_qkv                      U_qkv: D × 3D   (one fused projection)
    SA_h(z)   = softmax(q_h k_hᵀ / √D_h) v_h   for each head h
    MSA(z)    = [SA_1(z); …; SA_H(z)] U_msa   U_msa: D × D

This notebook follows the shapes through every step with the library's ops
(`split_heads`, `attention_forward`, `merge_heads`, `mhsa_forward`), draws each head's
attention map, and builds two heads by hand that attend to different things.

# %%
%matplotlib inline
import json
import numpy as np
import matplotlib.pyplot as plt

from _common import setup
from minivit import ViTConfig
from minivit.explain import example_path, load_example_file, multi_head_steps, format_steps
from minivit.ops.linear import linear_forward
from minivit.ops.attention import (split_heads, merge_heads, attention_forward,
                                   mhsa_core_forward, mhsa_forward)

setup()

# %% [markdown]
## The lecture's tokens with two small heads

`minivit/examples/two_heads.json` gives the lecture's three tokens two heads of width 2
and an output projection W_O (4 × 4). Each head is exactly the single-head computation of
notebook 01; the heads' outputs are concatenated side by side and multiplied by W_O.

# %%
ex = load_example_file(example_path("two_heads"))
mh = multi_head_steps(ex["x"], ex["heads"], ex["W_O"])           # unscaled, like the lecture
for h, st in enumerate(mh.heads):
    print(f"head {h + 1}: weights\n{np.round(st.softmax, 4)}\n  outputs\n{np.round(st.outputs, 4)}\n")
print("concatenation [head 1 | head 2]  (3 tokens × 4):\n", np.round(mh.concat, 4))
print("\noutput = concat @ W_O:\n", np.round(mh.output, 4))

# %% [markdown]
## Shapes at every step of ViT's MSA

In the model, the heads are not separate weight matrices: one fused dense layer produces
all queries, keys and values at once, and the heads are *slices of its columns*. The
3D output columns are laid out as **[q | k | v]**, and inside each part head h owns the
columns h·D_h … (h+1)·D_h − 1:

# %%
D, H = 8, 2
Dh = D // H
fig, ax = plt.subplots(figsize=(9, 1.3))
for part, name in enumerate("qkv"):
    for h in range(H):
        c0 = part * D + h * Dh
        ax.add_patch(plt.Rectangle((c0, 0), Dh, 1, color=f"C{h}", alpha=0.35 + 0.2 * part, ec="k"))
        ax.text(c0 + Dh / 2, 0.5, f"{name}, head {h + 1}", ha="center", va="center", fontsize=9)
ax.set_xlim(0, 3 * D)
ax.set_ylim(0, 1)
ax.set_yticks([])
ax.set_xticks(range(0, 3 * D + 1, Dh))
ax.set_xlabel(f"columns of qkv = z U_qkv   (D = {D}, H = {H}, D_h = {Dh})")
plt.show()

# %% [markdown]
A batch of B = 2 sequences of N = 5 tokens of width D = 8, two heads. Every array below
is computed by the library; we print its shape with the paper's letters.

# %%
rng = np.random.default_rng(0)
B, N = 2, 5
z = rng.standard_normal((B, N, D))
W_qkv, b_qkv = rng.standard_normal((D, 3 * D)) / np.sqrt(D), np.zeros(3 * D)
W_o, b_o = rng.standard_normal((D, D)) / np.sqrt(D), np.zeros(D)

qkv, _ = linear_forward(z, W_qkv, b_qkv)
q, k, v = split_heads(qkv, H)
out, cache = attention_forward(q, k, v, scale=1 / np.sqrt(Dh))   # every head at once
A = cache["A"]
concat = merge_heads(out)
y, _ = linear_forward(concat, W_o, b_o)

for name, arr, letters in [("z", z, "(B, N, D)"), ("qkv = z U_qkv", qkv, "(B, N, 3D)"),
                           ("q, k, v = split_heads(qkv, H)", q, "(B, H, N, D_h) each"),
                           ("A = softmax(q kᵀ/√D_h)", A, "(B, H, N, N)"),
                           ("A v", out, "(B, H, N, D_h)"),
                           ("merge_heads: [SA_1; …; SA_H]", concat, "(B, N, H·D_h) = (B, N, D)"),
                           ("MSA(z) = concat U_msa", y, "(B, N, D)")]:
    print(f"{name:32s} {str(arr.shape):16s} {letters}")

y_lib, _ = mhsa_forward(z, W_qkv, b_qkv, W_o, b_o, H)
print("\nthe step-by-step result equals the library's mhsa_forward:", np.allclose(y, y_lib))

# %% [markdown]
Note what `split_heads` and `merge_heads` are: reshapes and transposes, no arithmetic.
Head h of token i is just columns h·D_h … of row i.

# %%
print("q of head 2, token 1, batch 1 :", q[0, 1, 0])
print("qkv[batch 1, token 1, D_h:2·D_h]:", qkv[0, 0, Dh:2 * Dh])

# %% [markdown]
## Per-head attention maps

Each head has its own N × N matrix of weights (rows: the query token, columns: the keys,
each row sums to 1). With random weights there is no pattern yet — a trained model's
maps are in notebook 06.

# %%
fig, axes = plt.subplots(1, H, figsize=(3.4 * H, 3))
for h in range(H):
    im = axes[h].imshow(A[0, h], cmap="viridis", vmin=0, vmax=1)
    axes[h].set(title=f"head {h + 1}", xlabel="key token", ylabel="query token")
fig.colorbar(im, ax=list(axes))
plt.show()

# %% [markdown]
## Two heads that look for different things

To see why several heads help, build them by hand on a toy sequence. Each token carries
its **content** (one of 4 symbols, one-hot) and its **position** (one of 8, one-hot):

    token = [content one-hot (4) | position one-hot (8) | 4 spare zeros]   → D = 16, H = 2, D_h = 8

* **Head 1, "previous token"**: its query of token i is position i; its key of token j is
  position j + 1 (a shifted copy). q_i · k_j is large only when j = i − 1.
* **Head 2, "same content"**: query and key are both the content one-hot, so
  q_i · k_j is large when tokens i and j hold the same symbol.
* Both heads' values copy the **content**, so each head's output says *which symbol it
  found*.

The weights are multiplied by a gain c so that the softmax is sharp. They are packed into
one fused U_qkv in the library's [q | k | v] × heads column layout, and the library's MSA
core runs them — scale 1/√D_h included.

# %%
symbols = "ABCD"
seq = "ABACBADC"
Nt, D, H = len(seq), 16, 2
Dh = D // H
content = np.eye(4)[[symbols.index(s) for s in seq]]
position = np.eye(8)
tokens = np.concatenate([content, position, np.zeros((Nt, 4))], axis=1)[None]   # (1, N, D)

c = 8.0 * np.sqrt(Dh)                       # the gain, large against the 1/√D_h scale
W = np.zeros((D, 3 * D))                    # U_qkv: columns [q | k | v], heads inside each
def cols(part, head, width=Dh):
    """Columns of U_qkv for part 0 = q, 1 = k, 2 = v of a head (the library's layout)."""
    start = part * D + head * Dh
    return slice(start, start + width)


W[4:12, cols(0, 0)] = c * np.eye(8)         # head 1 query: my position
W[4:12, cols(1, 0)] = np.eye(8, k=1)        # head 1 key:   position j → slot j + 1
W[0:4, cols(0, 1, 4)] = c * np.eye(4)       # head 2 query: my content
W[0:4, cols(1, 1, 4)] = np.eye(4)           # head 2 key:   my content
W[0:4, cols(2, 0, 4)] = np.eye(4)           # both values: the content
W[0:4, cols(2, 1, 4)] = np.eye(4)
print("U_qkv:", W.shape)

qkv, _ = linear_forward(tokens, W)
heads_out, cache = mhsa_core_forward(qkv, H)      # softmax(q kᵀ/√D_h) v, heads concatenated
A = cache["A"][0]                                 # (H, N, N)

fig, axes = plt.subplots(1, 2, figsize=(9, 4))
for h, title in enumerate(["head 1: previous token", "head 2: same content"]):
    axes[h].imshow(A[h], cmap="Blues", vmin=0, vmax=1)
    axes[h].set_xticks(range(Nt), [f"{s}{i}" for i, s in enumerate(seq)])
    axes[h].set_yticks(range(Nt), [f"{s}{i}" for i, s in enumerate(seq)])
    axes[h].set(title=title, xlabel="key token", ylabel="query token")
plt.tight_layout()
plt.show()

# %%
for i, s in enumerate(seq):
    j = int(np.argmax(A[0, i]))
    if A[0, i, j] > 0.5:
        head1 = f"head 1 attends to {seq[j]}{j} (its output reads symbol {symbols[int(np.argmax(heads_out[0, i, :4]))]})"
    else:
        head1 = "head 1 finds no previous token and spreads evenly"
    same = [f"{seq[j]}{j}" for j in np.flatnonzero(A[1, i] > 0.1)]
    print(f"token {s}{i}:  {head1:52s}  head 2 spreads over {same}")

# %% [markdown]
Head 1 reads off the previous symbol (token 0 has no predecessor: its key slot is empty,
so it spreads evenly — a trained model would learn what to do there). Head 2 averages
over every occurrence of the token's own symbol. A single head would have to choose one
of these two behaviours; with two heads the concatenation `[SA_1; SA_2]` carries both,
and U_msa mixes them. In ViT, heads learn such specialisations from data: some look at
neighbouring patches, others across the whole image (notebook 06).

## How big do the attention matrices get?

Every head of every layer forms an N × N matrix per image. With the paper's models:

# %%
print(f"{'model':14s} {'tokens N+1':>10s} {'heads':>6s} {'layers':>7s} {'attention weights per image':>28s}")
for name in ["cifar10-tiny", "cifar10-small", "vit-b16", "vit-l16", "vit-h14"]:
    cfg = ViTConfig.preset(name)
    T = cfg.num_patches + 1
    print(f"{name:14s} {T:10d} {cfg.heads:6d} {cfg.depth:7d} {T * T * cfg.heads * cfg.depth:28,d}")

# %% [markdown]
The cost grows with N², i.e. with the fourth power of 1/P: halving the patch size
multiplies the attention work by 16. The fused kernels of notebook 07 avoid writing these
matrices to memory more than once.

## The scale is 1/√D_h, per head

Each head's softmax sees scores of width D_h, so the library scales by 1/√D_h. Check it
against `attention_forward` with the two candidate scales:

# %%
rng = np.random.default_rng(1)
D, H = 64, 8
Dh = D // H
qkv = rng.standard_normal((1, 10, 3 * D))
out_lib, _ = mhsa_core_forward(qkv, H)
q, k, v = split_heads(qkv, H)
by_Dh, _ = attention_forward(q, k, v, scale=1 / np.sqrt(Dh))
by_D, _ = attention_forward(q, k, v, scale=1 / np.sqrt(D))
print("library == scale 1/√D_h :", np.allclose(out_lib, merge_heads(by_Dh)))
print("library == scale 1/√D   :", np.allclose(out_lib, merge_heads(by_D)), "(the common bug)")
'''

# =========================================================================================
NOTEBOOKS["03_patches_and_embeddings"] = r'''
# %% [markdown]
# 03 · Patches and embeddings (Eq. 1)

A Transformer reads a sequence of vectors. ViT turns an image into one:

    z_0 = [x_class; x_p¹E; x_p²E; …; x_pᴺE] + E_pos          (paper Eq. 1)

1. cut the image x ∈ R^{H×W×C} into N = HW/P² patches of P × P pixels;
2. flatten each patch into a vector x_p of P²·C numbers;
3. project every patch with the same matrix E (P²·C × D);
4. put a learned **[class] token** in front;
5. add a learned **position embedding** to every token.

We follow one CIFAR-10 test image through these steps with the library.

# %%
%matplotlib inline
import numpy as np
import matplotlib.pyplot as plt

from _common import setup, load_data, FAST
from minivit import ViT, ViTConfig
from minivit.data import normalize
from minivit.ops.patches import patches_forward, patches_backward, patch_grid
from minivit.ops.linear import linear_forward
from minivit.ops.embedding import pos2d_forward
from minivit.plots import plot_patches
from minivit.inspect import pos_embed_similarity
from minivit.plots_inspect import plot_pos_embed_similarity
from IPython.display import display

setup()
data, source = load_data(limit_train=0, limit_test=16)
img, label = data["x_test"][0], data["classes"][data["y_test"][0]]
print(f"one {source} test image: {img.shape} {img.dtype}, class '{label}'")
fig, ax = plt.subplots(figsize=(3, 3))
ax.imshow(img)
ax.set_title(f"{label} (32 × 32 × 3)")
ax.axis("off")
plt.show()

# %% [markdown]
## Patches: P = 4 → N = 32²/4² = 64

The image is 32 × 32 pixels with C = 3 colour channels. With P = 4 (the CIFAR presets)
it becomes an 8 × 8 grid of 4 × 4 patches: **N = HW/P² = 64 tokens**, read row by row.
Left: the grid on the image; right: the patches in token order, as the model receives
them.

# %%
plot_patches(img, P=4)

# %% [markdown]
## Overlapping patches: P = 8, stride S = 4

The lecture also allows patches that overlap: take a P × P window every S pixels. With
P = 8 and S = 4 there are (32 − 8)/4 + 1 = 7 windows per side, **N = 49**. Each window
shares half its width with its neighbour (the coloured outlines show the overlap).

# %%
print("grid for P=8, S=4:", patch_grid(32, 32, 8, 4),
      "→ N =", ViTConfig(patch_size=8, stride=4).num_patches)
plot_patches(img, P=8, S=4)

# %% [markdown]
How many patches contain each pixel? The backward pass of patch extraction answers it:
`patches_backward` sends each patch's gradient back to its pixels and *adds* where
patches overlap. Feed it all ones and it counts:

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 3.6), layout="constrained")
for ax, (P, S) in zip(axes, [(4, 4), (8, 4)]):
    p, cache = patches_forward(img[None].astype(np.float64), P, S)
    counts = patches_backward(np.ones_like(p), cache)[0, :, :, 0]
    im = ax.imshow(counts, cmap="magma", vmin=0, vmax=4)
    ax.set_title(f"P={P}, S={S}")
    ax.axis("off")
fig.suptitle("number of patches that contain each pixel")
fig.colorbar(im, ax=list(axes), ticks=range(5))
plt.show()

# %% [markdown]
Without overlap every pixel is in exactly one patch; with P = 8, S = 4 the border pixels
are in 1 or 2 windows and the interior in 4. This matters for the gradient with respect
to the image: overlapping patches add up.

## Flattening in (h, w, c) order

A 4 × 4 × 3 patch becomes a vector of 48 numbers. The library flattens it in
**(h, w, c)** order — row by row, pixel by pixel, the three colours of a pixel side by
side — the same order as the official checkpoints' HWIO embedding kernel reshaped to
(P·P·C, D), so imported weights line up without a permutation.

# %%
patches, _ = patches_forward(img[None].astype(np.float64), 4)
print("patches:", patches.shape, " = (B, N, P·P·C)")
n = 10
r, c = divmod(n, 8)
print(f"token {n} is grid row {r}, column {c}: pixels [{4 * r}:{4 * r + 4}, {4 * c}:{4 * c + 4}]")
print("its first 12 numbers:      ", patches[0, n, :12].astype(int))
print("pixel (0,0) RGB, (0,1) RGB, …:", img[4 * r, 4 * c:4 * c + 4].reshape(-1).astype(int))
print("the whole vector is that window, flattened (h, w, c):",
      np.array_equal(patches[0, n].reshape(4, 4, 3), img[4 * r:4 * r + 4, 4 * c:4 * c + 4]))

# %% [markdown]
## The linear projection E

Every patch vector x_p (48 numbers) is multiplied by the same matrix **E** (48 × D) plus
a bias: a dense layer applied to each token. The cifar10-tiny preset uses D = 128.
`ViT.embed_forward` is Eq. 1; we compare it with the projection done by hand through the
library's `linear_forward`.

# %%
config = ViTConfig.preset("cifar10-tiny")
model = ViT(config, seed=0, dtype="float64")
x = normalize(img[None])                          # uint8 → standardised floats (B, H, W, C)
z0 = model.embed_forward(x)                       # Eq. 1
p = model.params
print("E = patch_embed.weight:", p["patch_embed.weight"].shape, "  (P²·C, D)")
print("z_0:", z0.shape, "  (B, N+1, D): the class token + 64 patch tokens")

xp, _ = patches_forward(x.astype(np.float64), config.patch_size)
xpE, _ = linear_forward(xp, p["patch_embed.weight"], p["patch_embed.bias"])
print("patch tokens of z_0 = x_p E + b + E_pos:",
      np.allclose(z0[:, 1:], xpE + p["pos_embed"][:, 1:]))

fig, ax = plt.subplots(figsize=(9, 3.2))
im = ax.imshow(z0[0].T, aspect="auto", cmap="RdBu_r", vmin=-3, vmax=3)
ax.set(xlabel="token (0 = class token, then the 64 patches)", ylabel="feature (D = 128)",
       title="z_0: one column per token (random initial E)")
fig.colorbar(im, ax=ax)
plt.show()

# %% [markdown]
## The [class] token

Like BERT's [CLS], ViT prepends one learned vector x_class to the sequence. It belongs to
no patch; through attention it gathers information from all of them, and after the last
block its state alone feeds the classifier (Eq. 4: y = LN(z_L⁰)). It is initialised to
zeros, so at the start token 0 of z_0 is just its position embedding:

# %%
print("cls_token:", p["cls_token"].shape, " all zeros at init:", not p["cls_token"].any())
print("z_0[token 0] = x_class + E_pos[0]:", np.allclose(z0[0, 0], p["cls_token"][0, 0] + p["pos_embed"][0, 0]))

# %% [markdown]
## Position embeddings: 1-D, 2-D or none

Attention treats its input as a *set*: shuffle the patches and every token's output is
shuffled the same way. The model only knows where a patch came from through **E_pos**,
added to every token. `ViTConfig.pos_embed` chooses it:

* `"learned-1d"` (the paper's default): one learned vector per token, a table (N+1) × D.
  Nothing tells it that patch 9 is below patch 1 — it must learn the 2-D layout.
* `"learned-2d"` (Appendix D.4): a table of row embeddings and one of column
  embeddings, each of width D/2; patch (r, c) gets [row_r ; col_c], the class token its own.
* `"none"`: no position information at all.

The paper found 2-D no better than 1-D, and "none" about 3 points worse.

# %%
for kind in ["learned-1d", "learned-2d", "none"]:
    cfg = config.replace(pos_embed=kind)
    shapes = {k: v for k, v in cfg.param_shapes().items() if k.startswith("pos_embed")}
    n = sum(int(np.prod(s)) for s in shapes.values())
    print(f"{kind:11s} {n:6,d} position parameters  {shapes}")

# %% [markdown]
How similar is each patch's position embedding to every other's (cosine similarity)?
Each small square below belongs to one patch (r, c) and shows its similarity with all 64
patches. At initialisation, 1-D embeddings are independent random vectors: every patch
is similar only to itself. The 2-D embedding has the grid built in: patches in the same
row share half their vector, and so do patches in the same column. (Notebook 06 shows
what a trained 1-D embedding learns.)

# %%
model_2d = ViT(config.replace(pos_embed="learned-2d"), seed=0, dtype="float64")
pos2d, _ = pos2d_forward(model_2d.params["pos_embed_cls"], model_2d.params["pos_embed_row"],
                         model_2d.params["pos_embed_col"])
print("2-D E_pos assembled from the two tables:", pos2d.shape)
fig = plot_pos_embed_similarity(pos_embed_similarity(model))
fig.suptitle("learned-1d at initialisation")
display(fig)
fig = plot_pos_embed_similarity(pos_embed_similarity(model_2d))
fig.suptitle("learned-2d at initialisation")
display(fig)

# %% [markdown]
## N = HW/P²: the patch size sets the sequence length

The patch size is the single most important choice on small images: N grows with 1/P²
and the attention cost with N². On CIFAR-10's 32 × 32 images P = 16 would leave only
4 tokens — catastrophic — which is why the CIFAR presets use P = 4.

# %%
print(f"{'image':>6s} {'P':>3s} {'S':>3s} {'N':>5s} {'patch dim P²C':>14s}")
for size, P, S in [(32, 2, None), (32, 4, None), (32, 8, None), (32, 8, 4), (32, 16, None),
                   (224, 14, None), (224, 16, None), (224, 32, None)]:
    cfg = ViTConfig(image_size=size, patch_size=P, stride=S)
    print(f"{size:6d} {P:3d} {cfg.S:3d} {cfg.num_patches:5d} {cfg.patch_dim:14d}")

# %% [markdown]
The sequence z_0 (N + 1 tokens of width D) now enters the encoder blocks — notebook 04.
'''

# =========================================================================================
NOTEBOOKS["04_encoder_block_and_backprop"] = r'''
# %% [markdown]
# 04 · The encoder block, and backpropagation by hand

An encoder block (paper Eq. 2–3) is two residual branches, each starting with a
LayerNorm ("pre-norm"):

    z'_ℓ = MSA(LN(z_{ℓ−1})) + z_{ℓ−1}        (Eq. 2)
    z_ℓ  = MLP(LN(z'_ℓ)) + z'_ℓ              (Eq. 3),   MLP = fc2(GELU(fc1(·)))

The first half of this notebook looks at the pieces; the second derives each backward
pass and **checks it live against finite differences**, up to the whole model's
gradients. There is no autograd in minivit: every gradient is a hand-written function,
so these checks are how we know they are right.

# %%
%matplotlib inline
import numpy as np
import matplotlib.pyplot as plt

from _common import setup, FAST
from minivit import ViT, ViTConfig
from minivit.gradcheck import check_gradient
from minivit.ops.layernorm import layernorm_forward, layernorm_backward
from minivit.ops.activations import gelu_forward, gelu_backward
from minivit.ops.linear import linear_forward, linear_backward
from minivit.ops.softmax import softmax_forward, softmax_backward
from minivit.ops.attention import attention_forward, attention_backward
from minivit.ops.losses import cross_entropy_forward, softmax_cross_entropy

setup()
rng = np.random.default_rng(0)


def report(name, err, threshold=1e-7):
    """cs231n's rule of thumb in float64: a correct gradient has relative error < 1e-7."""
    print(f"{'✓' if err < threshold else '✗ MISMATCH'}  {name:34s} relative error {err:.1e}")

# %% [markdown]
## LayerNorm

For each token separately, over its D features: subtract the mean, divide by the
standard deviation, then scale and shift with learned γ, β:

    LN(x) = γ ⊙ (x − μ) / √(σ² + ε) + β,     ε = 1e-6

It keeps every token's features on the same scale whatever the depth, which is what lets
deep pre-norm Transformers train without careful tuning.

# %%
x = 3.0 + 5.0 * rng.standard_normal((4, 16))            # 4 tokens, D = 16, far from N(0, 1)
gamma, beta = np.ones(16), np.zeros(16)
y, _ = layernorm_forward(x, gamma, beta)
print("before: per-token mean", np.round(x.mean(1), 2), " std", np.round(x.std(1), 2))
print("after:  per-token mean", np.round(y.mean(1), 6), " std", np.round(y.std(1), 4))

# %% [markdown]
## The GELU MLP

The MLP widens each token to `mlp_dim` (fc1), applies GELU, and projects back to D (fc2).
GELU(x) = x·Φ(x), with Φ the standard normal CDF: like ReLU for large |x|, but smooth,
and slightly negative for small negative x. Two forms exist: the exact one with erf
(PyTorch/timm) and a tanh approximation (the official JAX ViT). minivit has both
(`ViTConfig.gelu`); they differ by less than 1e-3.

# %%
t = np.linspace(-4, 4, 801)
g_tanh, _ = gelu_forward(t, "tanh")
g_erf, _ = gelu_forward(t, "erf")
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
axes[0].plot(t, np.maximum(t, 0), "k:", label="ReLU (for reference)")
axes[0].plot(t, g_erf, label="GELU, erf (exact)")
axes[0].plot(t, g_tanh, "--", label="GELU, tanh approximation")
axes[0].set(title="GELU", xlabel="x")
axes[0].legend()
axes[1].plot(t, g_tanh - g_erf)
axes[1].set(title="tanh form − erf form", xlabel="x")
for ax in axes:
    ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()
print(f"largest difference between the two forms: {np.abs(g_tanh - g_erf).max():.1e}")

# %% [markdown]
## A whole block, and what the residuals do

`ViT.block_forward(i, z)` is Eq. 2–3 for block i. We use a small model (8 × 8 images,
P = 4 → 4 patches + the class token, D = 8, 2 heads) so that the finite-difference checks
further down run in seconds.

# %%
cfg = ViTConfig(image_size=8, patch_size=4, dim=8, depth=2, heads=2, mlp_dim=16, num_classes=3)
model = ViT(cfg, seed=0, dtype="float64")
# The official initialisation zeroes the head (and so every gradient at step 0); perturb
# all parameters so that every gradient below is non-trivial.
model.load_params({k: v + 0.3 * rng.standard_normal(v.shape) for k, v in model.state_dict().items()})

z = rng.standard_normal((2, cfg.num_patches + 1, cfg.dim))       # (B, N+1, D)
out = model.block_forward(0, z)
print("block 0:", z.shape, "→", out.shape)
for name, arr in model.params.items():
    if name.startswith("blocks.0."):
        print(f"   {name:26s} {arr.shape}")

# %% [markdown]
The residual connections make each block a *correction* added to its input. If the two
branches' last layers (U_msa and fc2) output zeros, the block is exactly the identity —
the signal, and in the backward pass the gradient, flows straight through:

# %%
saved = model.state_dict()
silenced = dict(saved)
for name in ["attn.proj.weight", "attn.proj.bias", "mlp.fc2.weight", "mlp.fc2.bias"]:
    silenced["blocks.0." + name] = np.zeros_like(saved["blocks.0." + name])
model.load_params(silenced)
print("block with silenced branches is the identity:", np.allclose(model.block_forward(0, z), z))
model.load_params(saved)

# %% [markdown]
## Backward passes, one op at a time

Every op is a pair `forward(...) -> (out, cache)` and `backward(dout, cache) -> grads`.
Given the gradient of the loss with respect to the output (`dout`), backward returns the
gradients with respect to every input. `check_gradient` compares one with **centred
finite differences**, (f(x + h) − f(x − h)) / 2h contracted with dout, in float64.

### Linear: y = x W + b

    dx = dy Wᵀ,    dW = xᵀ dy  (summed over all rows),    db = Σ_rows dy

# %%
x, W, b = rng.standard_normal((2, 5, 6)), rng.standard_normal((6, 4)), rng.standard_normal(4)
y, cache = linear_forward(x, W, b)
dy = rng.standard_normal(y.shape)
dx, dW, db = linear_backward(dy, cache)
f = lambda: linear_forward(x, W, b)[0]
report("linear dx", check_gradient(f, x, dx, dy))
report("linear dW", check_gradient(f, W, dW, dy))
report("linear db", check_gradient(f, b, db, dy))

# %% [markdown]
### LayerNorm

With x̂ = (x − μ)·r, r = (σ² + ε)^(−1/2) and g = dy ⊙ γ, the chain rule through the
mean and the variance (both depend on every feature) gives

    dx = r · (g − mean(g) − x̂ · mean(g ⊙ x̂)),     dγ = Σ dy ⊙ x̂,     dβ = Σ dy

The two subtracted means are the paths through μ and through σ².

# %%
x = rng.standard_normal((3, 5, 8))
gamma, beta = rng.standard_normal(8), rng.standard_normal(8)
y, cache = layernorm_forward(x, gamma, beta)
dy = rng.standard_normal(y.shape)
dx, dgamma, dbeta = layernorm_backward(dy, cache)
f = lambda: layernorm_forward(x, gamma, beta)[0]
report("layernorm dx", check_gradient(f, x, dx, dy))
report("layernorm dγ", check_gradient(f, gamma, dgamma, dy))
report("layernorm dβ", check_gradient(f, beta, dbeta, dy))

# %% [markdown]
### GELU

    erf form:   d/dx [x Φ(x)] = Φ(x) + x φ(x)
    tanh form:  ½(1 + t) + ½ x (1 − t²) √(2/π) (1 + 3·0.044715 x²),   t = tanh(√(2/π)(x + 0.044715 x³))

# %%
x = rng.standard_normal((4, 7))
dy = rng.standard_normal(x.shape)
for form in ["erf", "tanh"]:
    y, cache = gelu_forward(x, form)
    report(f"GELU ({form}) dx", check_gradient(lambda: gelu_forward(x, form)[0], x,
                                               gelu_backward(dy, cache), dy))

# %% [markdown]
### Softmax

The Jacobian of a = softmax(s) is diag(a) − a aᵀ, so

    ds = a ⊙ (da − Σ_j da_j a_j)

# %%
s = rng.standard_normal((3, 6))
a, cache = softmax_forward(s)
da = rng.standard_normal(a.shape)
report("softmax ds", check_gradient(lambda: softmax_forward(s)[0], s, softmax_backward(da, cache), da))

# %% [markdown]
### Attention: out = softmax(s · q kᵀ) v

Backward walks the forward in reverse:

    dA = dout vᵀ,   dv = Aᵀ dout,   dS = softmax backward of dA,   dq = s · dS k,   dk = s · dSᵀ q

# %%
q, k, v = (rng.standard_normal((2, 3, 5, 4)) for _ in range(3))      # (B, H, N, D_h)
out, cache = attention_forward(q, k, v, scale=True)
dout = rng.standard_normal(out.shape)
dq, dk, dv = attention_backward(dout, cache)
f = lambda: attention_forward(q, k, v, scale=True)[0]
report("attention dq", check_gradient(f, q, dq, dout))
report("attention dk", check_gradient(f, k, dk, dout))
report("attention dv", check_gradient(f, v, dv, dout))

# %% [markdown]
### Residuals

z_out = z + F(z) has dz = dz_out + (backward of F)(dz_out): the gradient passes through
unchanged **and** picks up the branch's contribution. That identity path is why deep
residual networks train: no matter how many blocks, the gradient reaches the first one.

## The whole block against finite differences

`ViT.block_backward(i, dz)` chains the ops above in reverse order (fc2 → GELU/fc1 → LN2 →
residual → U_msa → attention → U_qkv → LN1 → residual). We check the gradient with respect
to the block's input and to each of its 12 parameters (a random sample of entries per
tensor, to keep it fast).

# %%
out = model.block_forward(0, z)
dout = rng.standard_normal(out.shape)
dz = model.block_backward(0, dout)
grads = {k: v.copy() for k, v in model.grads.items()}
f = lambda: model.block_forward(0, z)
report("block: d input z", check_gradient(f, z, dz, dout, num_checks=30))
for name, value in model.params.items():
    if name.startswith("blocks.0."):
        report(f"block: d {name[9:]}", check_gradient(f, value, grads[name], dout, num_checks=30))

# %% [markdown]
## The whole model

Finally the full chain: patches → Eq. 1 → two blocks → Eq. 4 → head → softmax
cross-entropy. `loss_and_grads` runs forward and backward once and fills `model.grads`,
a dict with the same names as `model.params`. We check every parameter tensor, and the
gradient with respect to the input image.

# %%
images = rng.standard_normal((2, 8, 8, 3))
labels = np.array([0, 2])
loss, _ = model.loss_and_grads(images, labels)
grads = {k: v.copy() for k, v in model.grads.items()}
print(f"loss {loss:.4f}; {len(grads)} gradient tensors for {len(model.params)} parameters\n")

f = lambda: cross_entropy_forward(model.forward(images), labels)[0]
n_checks = 5 if FAST else 15
worst = 0.0
for name, value in model.params.items():
    err = check_gradient(f, value, grads[name], num_checks=n_checks)
    worst = max(worst, err)
    report(name, err)
print(f"\nworst relative error over all parameters: {worst:.1e}")

logits = model.forward(images)
_, dlogits = softmax_cross_entropy(logits, labels)
dimages = model.backward(dlogits, need_dimages=True)
report("d images", check_gradient(f, images, dimages, num_checks=20))

# %% [markdown]
Every relative error is around 1e-9 or below: the hand-written backward passes agree
with the definition of the derivative. (`tests/test_model.py` repeats these checks for
every head type, position embedding and overlapping patches, and `tests/test_torch_parity.py`
compares every gradient with PyTorch's autograd.)

With correct gradients, we can train — notebook 05.
'''

# =========================================================================================
NOTEBOOKS["05_train_tiny_vit_cifar10"] = r'''
# %% [markdown]
# 05 · Training a tiny ViT on CIFAR-10

Everything so far comes together in `minivit.train.train`: mini-batches with
augmentation, forward, softmax cross-entropy with label smoothing, backward, gradient
clipping, AdamW with warm-up and cosine decay, an evaluation after each epoch, and a
checkpoint.

By default this notebook runs a **short schedule** — 3 epochs over 5 000 training images,
about a hundred steps, a minute or two on two CPU cores — so that you see the whole loop
work. The full recipe is one flag away (`FULL = True`: 30 epochs over all 50 000 images,
about an hour and a half at the ~400 images/s the Numba backend reaches on two idle
cores). Training from scratch on CIFAR-10 is the hard case for a ViT: the paper
pre-trains on 300M images; here the model sees 50 000.

# %%
%matplotlib inline
import time
import numpy as np
import matplotlib.pyplot as plt
from IPython.display import display

from _common import setup, load_data, data_dir, FAST, RUNS
from minivit import ViTConfig
from minivit.backends import get_backend
from minivit.train import train, TrainSettings
from minivit.evaluate import evaluate
from minivit.data import Augmenter, normalize, CIFAR10_MEAN, CIFAR10_STD
from minivit.plots import plot_training_curves, plot_confusion_matrix, plot_predictions

setup()

FULL = False      # True: the full recipe (30 epochs on all 50 000 images) — ~1.5 h on 2 cores

try:              # the fused Numba kernels if they compile here, else the NumPy reference
    get_backend("numba")
    BACKEND = "numba"
except Exception as e:          # noqa: BLE001
    print(f"Numba backend unavailable ({e}); using NumPy")
    BACKEND = "numpy"
if FAST:
    BACKEND = "numpy"           # fast mode: skip JIT compilation time
print("backend:", BACKEND)

# %% [markdown]
## The model

The `cifar10-tiny` preset: 32 × 32 images, P = 4 (N = 64 patches), D = 128, 4 blocks of
4 heads, MLP width 256, a linear head for the 10 classes.

# %%
config = ViTConfig.preset("cifar10-tiny")
print(config)
print(f"\n{config.num_params():,} parameters, {config.num_patches} patches + class token, "
      f"{config.flops_per_image() / 1e6:.0f} MFLOP per image forward (≈ 3× that to train)")

# %% [markdown]
## The data, and what augmentation does

CIFAR-10: 50 000 training and 10 000 test images of 32 × 32 pixels in 10 classes. A small
ViT overfits quickly, so training uses the standard CIFAR augmentation: a random crop of
the image padded by 4 pixels, and a random horizontal flip (`minivit.data.Augmenter`,
which also normalises each channel).

# %%
if FULL:
    LIMIT_TRAIN, LIMIT_TEST, EPOCHS = None, None, 30
elif FAST:
    LIMIT_TRAIN, LIMIT_TEST, EPOCHS = 512, 256, 2
else:
    LIMIT_TRAIN, LIMIT_TEST, EPOCHS = 5000, None, 3
data, source = load_data(limit_train=LIMIT_TRAIN, limit_test=LIMIT_TEST)
classes = data["classes"]
print(f"{source}: {len(data['x_train'])} training and {len(data['x_test'])} test images")

rng = np.random.default_rng(0)
batch = data["x_train"][:8]
augmented = Augmenter(crop_padding=4, flip=True)(batch, data["y_train"][:8], rng)[0]
shown = np.clip(augmented * np.array(CIFAR10_STD) + np.array(CIFAR10_MEAN), 0, 1)   # undo the
fig, axes = plt.subplots(2, 8, figsize=(12, 3.4))                                 # normalisation
for i in range(8):                                                                # to display
    axes[0, i].imshow(batch[i])
    axes[0, i].set_title(classes[data["y_train"][i]], fontsize=8)
    axes[1, i].imshow(shown[i])
for ax in axes.ravel():
    ax.axis("off")
axes[0, 0].set_title("original\n" + classes[data["y_train"][0]], fontsize=8)
axes[1, 0].set_title("crop + flip", fontsize=8)
plt.show()

# %% [markdown]
## The training settings

`TrainSettings` holds every knob (saved in each checkpoint). The defaults are the
recipe that matters on small images (REFERENCE.md §3): AdamW (lr 1e-3, weight decay
0.05), linear warm-up then cosine decay, gradient clipping at global norm 1, label
smoothing 0.1, random crop + flip, batch 128.

The full recipe, exactly as the command line runs it
(`minivit train --preset cifar10-tiny --epochs 30 --backend numba --out runs/tiny`):

```python
result = train("cifar10-tiny", data_dir=data_dir(), out_dir=RUNS / "tiny", epochs=30,
               backend=BACKEND)
```

With `FULL = True` the loop below runs exactly this (its epoch-by-epoch resumes are
bit-identical to one call). The short schedule keeps everything the same except the
number of epochs and the training-set size, and evaluates after each epoch on 2 000 test
images only; the final accuracy below uses the whole test set.

# %%
settings = TrainSettings(epochs=EPOCHS, backend=BACKEND,
                         batch_size=128 if not FAST else 64, eval_batch_size=500)
print(settings)
print(f"\n{EPOCHS} epochs × {len(data['x_train']) // settings.batch_size} steps per epoch")

# %% [markdown]
## Train, with live curves

`train` prints a progress bar per epoch (loss, accuracy, learning rate, images/s). To
redraw the curves after every epoch we let it stop after each epoch
(`stop_after_epochs=1`) and resume from its checkpoint (`resume=True`) — the resumed run
is bit-identical to an uninterrupted one, the same mechanism that survives a Ctrl-C.

# %%
out_dir = RUNS / ("tiny" if FULL else "05_short")
eval_data = data if FULL else dict(data, x_test=data["x_test"][:2000], y_test=data["y_test"][:2000])
curves = None                       # the display handle, updated after each epoch
t0 = time.perf_counter()
result = None
for epoch in range(EPOCHS):
    result = train(config, data=eval_data, out_dir=out_dir, resume=epoch > 0,
                   settings=settings, stop_after_epochs=1)
    fig = plot_training_curves(result["history"])
    if curves is None:
        curves = display(fig, display_id=True)
    else:
        curves.update(fig)
print(f"trained {EPOCHS} epoch(s) in {time.perf_counter() - t0:.0f} s; checkpoint: {result['checkpoint']}")

# %% [markdown]
## Evaluation

Accuracy on the whole test set, per class, and the confusion matrix (rows: the true
class, columns: the prediction).

# %%
model = result["model"]
ev = evaluate(model, data["x_test"], data["y_test"])
print(f"test accuracy: {100 * ev['acc']:.2f}% on {len(data['y_test'])} images (chance: 10%)\n")
for name, acc in zip(classes, ev["per_class_acc"]):
    print(f"  {name:12s} {100 * acc:5.1f}%  " + "█" * int(round(40 * acc)))
plot_confusion_matrix(ev["confusion"], classes)

# %% [markdown]
## Sample predictions

The top class and its probability for 16 test images (green: right, red: wrong).

# %%
images = data["x_test"][:16]
probs = model.predict_proba(normalize(images))
plot_predictions(images, probs, classes, labels=data["y_test"][:16])

# %% [markdown]
## What to expect

After the short schedule (about a hundred steps) the model is far from done. What matters on 32 × 32 images, in order (REFERENCE.md §3): **patch size 4**
(16 leaves 4 tokens), **augmentation**, **warm-up + cosine decay**, **label smoothing**,
and **long schedules**. Published from-scratch results with models of this kind:

| model | params | epochs | top-1 |
|---|---|---|---|
| pure-NumPy ViT on CPU, 4 layers, D = 64 | 142k | 40 | 77.5% (≈ 6.4 h on 2–3 cores) |
| ViT, 6 layers, D = 512, RandAugment | 9.5M | 200 | ≈ 80% |
| ViT-Lite-7/4 (Compact Transformers) | 3.7M | 200 | 91.4% |

The bundled checkpoint `minivit/weights/cifar10-tiny.npz` (used by `minivit predict
default` and by notebook 06, when present) is this preset trained for many epochs; its
metadata records how.

# %%
from minivit.predict import default_checkpoint
from minivit.checkpoint import load_model
try:
    path = default_checkpoint()
except Exception:               # noqa: BLE001 — CheckpointError: not shipped (yet)
    print("No bundled checkpoint (minivit/weights/cifar10-tiny.npz) in this checkout.")
else:
    bundled, meta = load_model(path, backend=BACKEND)
    st = meta.get("settings", {})
    print(f"bundled model: {meta.get('epoch', '?')} epochs, batch {st.get('batch_size', '?')}, "
          f"lr {st.get('lr', '?')}, label smoothing {st.get('label_smoothing', '?')}")
    ev_b = evaluate(bundled, data["x_test"], data["y_test"])
    print(f"bundled model ({path.name}): {100 * ev_b['acc']:.2f}% on the same "
          f"{len(data['y_test'])} test images, vs {100 * ev['acc']:.2f}% after the short schedule")
'''

# =========================================================================================
NOTEBOOKS["06_inspecting_vit"] = r'''
# %% [markdown]
# 06 · Inspecting a trained ViT (paper §4.5)

Section 4.5 of the paper, "Inspecting Vision Transformer", looks inside a trained model
in four ways. We repeat each on our tiny CIFAR-10 model with `minivit.inspect`, set the
paper's observation beside ours, and say whether the tiny model shows it.

1. the principal components of the patch-embedding filters E (Fig. 7 left);
2. the similarity of the learned position embeddings (Fig. 7 centre);
3. the mean attention distance of every head against depth (Fig. 7 right);
4. attention rollout: which pixels the class token draws on (Fig. 6).

The paper's model (ViT-L/16 trained on JFT-300M) saw 6 000 times more images than ours.

# %%
%matplotlib inline
import numpy as np
import matplotlib.pyplot as plt

from _common import setup, load_data, data_dir, FAST, RUNS
from minivit.checkpoint import load_model
from minivit.predict import default_checkpoint
from minivit.data import normalize

from minivit import inspect as vit_inspect
from minivit import plots_inspect

setup()

# %% [markdown]
## The model

The bundled checkpoint (`minivit/weights/cifar10-tiny.npz`, cifar10-tiny trained for
many epochs) when it is shipped; otherwise the run of notebook 05; otherwise a short
run trained here. A barely trained model shows only the beginnings of the structure the
paper describes — keep that in mind when reading the verdicts.

# %%
def find_model():
    try:
        path = default_checkpoint()
        return (*load_model(path), f"the bundled checkpoint {path.name}")
    except Exception:           # noqa: BLE001 — CheckpointError: not shipped (yet)
        print("No bundled checkpoint (minivit/weights/cifar10-tiny.npz) in this checkout.")
    path = RUNS / "05_short" / "checkpoint.npz"
    if path.is_file():
        return (*load_model(path), f"notebook 05's run ({path})")
    from minivit.train import train
    print("Training a short model here (run notebook 05 first to reuse its run).")
    data, _ = load_data(limit_train=512 if FAST else 5000, limit_test=256 if FAST else 1000)
    r = train("cifar10-tiny", data=data, epochs=1 if FAST else 2,
              backend="numpy" if FAST else "numba", out_dir=RUNS / "06_short")
    return r["model"], {"epoch": len(r["history"])}, "a short run trained here"


model, meta, what = find_model()
c = model.config
print(f"model: {what}\n  {c.num_params():,} parameters, depth {c.depth}, {c.heads} heads, "
      f"P = {c.patch_size}, grid {c.grid}; trained epochs: {meta.get('epoch', '?')}")

n_images = 16 if FAST else 64
imgs, x, labels, source = vit_inspect.load_images(n_images, c.image_size, data_dir(),
                                                  channels=c.channels)
print(f"{n_images} {source} test images for the attention statistics")

# %% [markdown]
## 1 · Embedding filters

> Paper: the first layer linearly projects the flattened patches (Eq. 1); the top
> principal components of the learned embedding filters "resemble plausible basis
> functions for a low-dimensional representation of the fine structure within each
> patch."

Each of the D columns of E is a linear filter over a P × P × 3 patch. Principal component
analysis of these D filters (`embedding_filters_pca`) gives the directions they vary
along most; each is drawn as a small RGB image (rescaled for display), titled with its
share of the variance.

# %%
components, explained = vit_inspect.embedding_filters_pca(model, k=28)
print(f"the first 28 components explain {100 * explained.sum():.0f}% of the filters' variance; "
      f"the first 3: {np.round(100 * explained[:3], 1)}%")
plots_inspect.plot_embedding_filters(components, explained)

# %% [markdown]
With P = 4 a filter has only 4 × 4 pixels, so the "basis functions" are coarse: look for
a uniform brightness component, colour-opponent components (one colour against another)
and low-frequency gradients across the patch — the P = 4 version of the paper's smooth
blobs and stripes. A barely trained E is still close to its random initialisation, and
its components look like noise.

## 2 · Position-embedding similarity

> Paper: "the model learns to encode distance within the image in the similarity of
> position embeddings, i.e. closer patches tend to have more similar position
> embeddings. Further, the row-column structure appears; patches in the same row/column
> have similar embeddings."

Our model uses 1-D position embeddings: nothing tells it that patch 9 sits under patch 1.
At initialisation every patch is similar only to itself (notebook 03). If training finds
the 2-D layout, the tile of each patch lights up around its own position.

# %%
sim = vit_inspect.pos_embed_similarity(model)               # (G_h, G_w, G_h, G_w)
gh, gw = c.grid
rr, cc = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
centres = np.stack([rr.ravel(), cc.ravel()], 1)
dist = np.sqrt(((centres[:, None] - centres[None]) ** 2).sum(-1))
S = sim.reshape(gh * gw, gh * gw)
off = ~np.eye(gh * gw, dtype=bool)
corr = np.corrcoef(dist[off], S[off])[0, 1]
same_line = ((centres[:, None, 0] == centres[None, :, 0]) | (centres[:, None, 1] == centres[None, :, 1])) & off
print(f"correlation between grid distance and similarity: {corr:+.2f} "
      f"(negative = closer patches are more similar)")
print(f"mean similarity, same row or column: {S[same_line].mean():+.3f};  "
      f"other patches: {S[off & ~same_line].mean():+.3f}")
print("→ distance encoded:", "yes" if corr < -0.2 else "weakly" if corr < -0.05 else "not (yet)",
      "| row-column structure:", "yes" if S[same_line].mean() > S[off & ~same_line].mean() + 0.05 else "not clearly")
plots_inspect.plot_pos_embed_similarity(sim)

# %% [markdown]
## 3 · Mean attention distance

> Paper: the average distance in image space across which information is integrated,
> "analogous to receptive field size in CNNs". "Some heads attend to most of the image
> already in the lowest layers", others have "consistently small attention distances in
> the low layers", and "the attention distance increases with network depth".

For every query patch, the distance (in pixels) to every other patch, weighted by the
attention weight, averaged over patches and images (`mean_attention_distance`). One dot
per head; our images are only 32 pixels wide. For reference, the same function applied to
a head that attends *uniformly* to every token gives the distance of "no preference".

# %%
atts = vit_inspect.attention_maps(model, x)                 # L × (B, heads, N+1, N+1)
dist_heads = vit_inspect.mean_attention_distance(atts, c.grid, c.patch_size, c.S)
for layer, d in enumerate(dist_heads):
    print(f"layer {layer}: " + "  ".join(f"{v:5.1f}" for v in d) + " px")
T = c.num_patches + 1
uniform = vit_inspect.mean_attention_distance([np.full((1, 1, T, T), 1.0 / T)], c.grid,
                                              c.patch_size, c.S)[0, 0]
print(f"a uniform head: {uniform:.1f} px")
first, last = dist_heads[0], dist_heads[-1]
print(f"\nspread of heads in layer 0: {first.min():.1f} … {first.max():.1f} px "
      f"→ {'local and global heads side by side' if first.max() - first.min() > 3 else 'heads alike'}")
print(f"mean distance layer 0 → layer {c.depth - 1}: {first.mean():.1f} → {last.mean():.1f} px "
      f"→ {'grows with depth' if last.mean() > first.mean() + 1.5 else 'no clear growth with depth'}")
if np.abs(dist_heads - uniform).max() < 1.5:
    print("every head is within 1.5 px of a uniform head: the attention has not specialised yet")
plots_inspect.plot_mean_distance(dist_heads, image_size=c.image_size)

# %% [markdown]
What each head of the first and the last layer looks at, for one image: the class
token's attention row, over the patches.

# %%
display(plots_inspect.plot_attention_heads(imgs[0], atts[0][0], c.grid, layer=0))
plots_inspect.plot_attention_heads(imgs[0], atts[-1][0], c.grid, layer=c.depth - 1)

# %% [markdown]
## 4 · Attention rollout

> Paper: "Globally, we find that the model attends to image regions that are
> semantically relevant for classification" (Fig. 6, computed by attention rollout).

Rollout (Abnar & Zuidema, 2020) follows the information from the input patches to the
class token through all layers: average each layer's heads, add the identity for the
residual path, renormalise the rows, and multiply the layers together. The class token's
row is a map over the patches; below it is multiplied onto each image.

# %%
maps = vit_inspect.cls_rollout_map(atts, c.grid)             # (B, G_h, G_w)
probs = model.predict_proba(x[:8])
if labels is not None and source == "cifar10":
    from minivit.data import CLASSES
    for i in range(8):
        print(f"image {i}: true {CLASSES[labels[i]]:10s} predicted {CLASSES[int(np.argmax(probs[i]))]}")
plots_inspect.plot_rollout(imgs[:8], maps[:8])

# %% [markdown]
## Side by side

| §4.5 observation | what to look for above |
|---|---|
| embedding filters look like basis functions of the fine structure in a patch | section 1: smooth, colour-opponent components in the first few |
| closer patches have more similar position embeddings; row-column structure | section 2: negative distance–similarity correlation; bright rows/columns in the tiles |
| some heads global, some local in the lowest layers | section 3: the spread of layer 0 |
| attention distance grows with depth | section 3: the trend of the dots |
| the class token attends to semantically relevant regions | section 4: the rollout on the object rather than the background |

The printed verdicts are computed from this model, so they change with the checkpoint.
A model trained for minutes shows the position structure first (it is the easiest thing
to learn); the attention-distance trend and object-centred rollouts need the full
schedule — and the paper's clearest pictures come from a model pre-trained on 300M images.
'''

# =========================================================================================
NOTEBOOKS["07_kernels"] = r'''
# %% [markdown]
# 07 · Kernels: the same computation, faster

minivit has one model and three backends (`minivit/backends/`):

* **numpy** — the reference ops of `minivit/ops`, written to be read; the specification.
* **numba** — the same operations as fused CPU kernels (`@njit(parallel=True)`).
* **cuda** — the same operations as `numba.cuda` GPU kernels: a tiled matmul and a
  flash-style fused attention.

The model calls only the backend, so switching is one argument: `ViT(config,
backend="numba")`. This notebook shows that the Numba backend computes **the same
numbers**, how its fused attention kernel works, how a GPU matmul is tiled, and what the
speed-ups are.

# %%
%matplotlib inline
import inspect
import json
import os
import time
from pathlib import Path

import numpy as np
import matplotlib.pyplot as plt

from _common import setup, FAST, REPO
from minivit import ViT, ViTConfig
from minivit.backends import get_backend
from minivit.gradcheck import rel_error_norm

setup()
ref = get_backend("numpy")
try:
    nb = get_backend("numba")
    import numba
    print(f"Numba {numba.__version__}, {numba.get_num_threads()} threads")
except Exception as e:          # noqa: BLE001
    nb = None
    print(f"The Numba backend is not available here ({e}); the comparisons below are skipped.")

# %% [markdown]
## Same numbers: Numba against the NumPy reference

First one op, the multi-head attention core softmax(q kᵀ/√D_h) v, then a whole model:
logits and every parameter gradient, in float64 (where both should agree to rounding)
and float32 (the training precision). Each backend is also tested op by op in
`tests/test_numba_backend.py`.

# %%
rng = np.random.default_rng(0)
B, N, D, H = 4, 65, 128, 4                      # cifar10-tiny: 64 patches + class token
if nb is not None:
    for dtype in (np.float64, np.float32):
        qkv = rng.standard_normal((B, N, 3 * D)).astype(dtype)
        out_ref, c_ref = ref.mhsa_core_forward(qkv, H)
        out_nb, c_nb = nb.mhsa_core_forward(qkv, H)
        dout = rng.standard_normal(out_ref.shape).astype(dtype)
        print(f"{np.dtype(dtype).name}: attention output rel. error "
              f"{rel_error_norm(out_nb, out_ref):.1e}, weights {rel_error_norm(nb.attention_probs(c_nb), ref.attention_probs(c_ref)):.1e}, "
              f"backward dqkv {rel_error_norm(nb.mhsa_core_backward(dout, c_nb), ref.mhsa_core_backward(dout, c_ref)):.1e}")

# %%
if nb is not None:
    cfg = ViTConfig(image_size=16, patch_size=4, dim=32, depth=2, heads=4, mlp_dim=64, num_classes=10)
    images = rng.standard_normal((8, 16, 16, 3))
    labels = rng.integers(0, 10, 8)
    for dtype in ("float64", "float32"):
        m_ref = ViT(cfg, seed=0, dtype=dtype, backend="numpy")
        m_nb = ViT(cfg, seed=0, dtype=dtype, backend="numba")
        # perturb the (zero-initialised) head so that every gradient is non-trivial
        host = m_ref.state_dict()
        host["head.weight"] = rng.standard_normal(host["head.weight"].shape) * 0.1
        m_ref.load_params(host)
        m_nb.load_params(host)
        loss_ref, logits_ref = m_ref.loss_and_grads(images, labels, smoothing=0.1)
        loss_nb, logits_nb = m_nb.loss_and_grads(images, labels, smoothing=0.1)
        worst = max(rel_error_norm(nb.to_host(m_nb.grads[k]), m_ref.grads[k]) for k in m_ref.grads)
        print(f"{dtype}: loss {loss_ref:.10f} vs {loss_nb:.10f}; logits rel. error "
              f"{rel_error_norm(logits_nb, logits_ref):.1e}; worst gradient rel. error over "
              f"{len(m_ref.grads)} tensors {worst:.1e}")

# %% [markdown]
In float64 the backends agree to ~1e-15: the same arithmetic, in a different order. In
float32 they agree to ~1e-7 – 1e-6, the float32 rounding level (the Numba kernels may
reorder sums and form fused multiply-adds; they never drop NaN/inf semantics).

## The fused attention kernel

The NumPy reference computes attention as a chain of whole-array operations:
`split_heads` (a transpose copy), `q @ kᵀ`, softmax (several passes over the B·H·N·N
scores), `A @ v`, `merge_heads` (another copy). Each step reads and writes arrays that do
not fit in cache.

The Numba kernel makes **one loop iteration per (batch, head) pair** (`prange(B * H)`
spreads them over the cores) and does everything for that pair while its data sits in
the core's cache: gather q, kᵀ, v
straight out of the fused qkv (no transposes), S = q kᵀ, the row softmax, A v, and write
the head's columns of the output. Here is the source — it is short:

# %%
if nb is not None:
    from minivit.backends import numba_cpu
    print(inspect.getsource(numba_cpu._attn_fwd.py_func))

# %% [markdown]
## Timing one attention forward, live

cifar10-tiny's shape (B = 128 images, N = 65 tokens, D = 128, 4 heads; fewer images in
fast mode). The best of several runs, after one warm-up call (which, for Numba, may
compile the kernel — or load it from the on-disk cache).

# %%
def machine_load():
    """The 1-minute load average against the core count: timings mean little on a busy machine."""
    load, cores = os.getloadavg()[0], os.cpu_count()
    note = ("  — other programs are competing for the cores: the timings below are noisy"
            if load > 0.75 * cores else "")
    print(f"machine load {load:.1f} on {cores} cores{note}")


def best_time(fn, repeats):
    fn()                                            # warm-up (and JIT compilation)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


if nb is not None:
    machine_load()
    Bt = 16 if FAST else 128
    qkv = rng.standard_normal((Bt, 65, 3 * 128)).astype(np.float32)
    dout = rng.standard_normal((Bt, 65, 128)).astype(np.float32)
    repeats = 2 if FAST else 7
    rows = []
    for name, be in (("numpy", ref), ("numba", nb)):
        _, cache = be.mhsa_core_forward(qkv, 4)
        fwd = best_time(lambda: be.mhsa_core_forward(qkv, 4), repeats)
        bwd = best_time(lambda: be.mhsa_core_backward(dout, cache), repeats)
        rows.append((name, fwd, bwd))
    print(f"attention core, B={Bt}, N=65, D=128, H=4, float32")
    for name, fwd, bwd in rows:
        print(f"  {name:6s} forward {1e3 * fwd:7.2f} ms   backward {1e3 * bwd:7.2f} ms")
    print(f"  numba / numpy speed-up: forward ×{rows[0][1] / rows[1][1]:.2f}, "
          f"backward ×{rows[0][2] / rows[1][2]:.2f}")
    faster = "Numba" if rows[1][1] + rows[1][2] < rows[0][1] + rows[0][2] else "NumPy"
    print(f"  → here, {faster} is faster on the attention core alone")

# %% [markdown]
And a whole training step of cifar10-tiny (forward, loss, backward; no optimizer update):

# %%
if nb is not None:
    config = ViTConfig.preset("cifar10-tiny")
    Bs = 8 if FAST else 64
    images = rng.standard_normal((Bs, 32, 32, 3)).astype(np.float32)
    labels = rng.integers(0, 10, Bs)
    step = {}
    for name in ("numpy", "numba"):
        m = ViT(config, seed=0, backend=name)
        step[name] = best_time(lambda: m.loss_and_grads(images, labels, 0.1), 2 if FAST else 5)
        print(f"  {name:6s} {1e3 * step[name]:7.1f} ms per step of {Bs} images "
              f"({Bs / step[name]:.0f} images/s)")
    print(f"  numba / numpy speed-up: ×{step['numpy'] / step['numba']:.2f}")

# %% [markdown]
Fusion saves memory traffic, but it also trades the tuned BLAS kernels that NumPy's
batched `@` calls for hand-written loops over small per-head matrices (65 × 32 here), so
which side wins the attention core alone depends on the shape and the machine: measure,
as above. Over a whole step the fused LayerNorm, bias + GELU, loss and optimizer kernels
add up. Timings taken live on a shared machine also move with whatever else runs on it
(and on two cores, NumPy's BLAS and Numba's thread pool compete for the same cores); the
controlled measurements, on an otherwise idle machine, are the saved benchmark at the end.

The other fusions of the Numba backend follow the same idea — do all the elementwise
work of a step in one pass while the data is in cache: LayerNorm forward and backward in
one pass per row, the fc1 bias + GELU in one pass after the matmul, softmax +
cross-entropy together, AdamW updating every parameter in place. The big matrix products
(x W of every dense layer) are left to BLAS: `benchmarks/matmul_choice.py` measured that
a hand-written Numba matmul does not beat OpenBLAS at these shapes.

## Tiling a matrix product (the CUDA kernel)

On a GPU, a naive matmul kernel (one thread per output C[i, j], reading a row of A and a
column of B from global memory) is limited by memory bandwidth: every number of A is
read N times, every number of B M times. `cuda_kernels.matmul` **tiles** the product:

* a block of TY × TX threads owns a BM × BN tile of C;
* the K dimension is swept in slabs of depth BK: the block loads a BM × BK piece of A and
  a BK × BN piece of B into fast **shared memory** (each thread a few elements, reads
  coalesced), synchronises, and every thread multiplies from shared memory;
* each thread accumulates an RM × RN **register block** of C, so one value read from
  shared memory is used RN (or RM) times.

Every element of A is then read from global memory N/BN times instead of N times, every
element of B M/BM times instead of M.

# %%
try:
    from minivit.backends.cuda_kernels import DEFAULT_TILES as T
except Exception as e:          # noqa: BLE001 — numba.cuda missing entirely
    from collections import namedtuple
    print(f"(cuda_kernels not importable here: {e}; using its documented defaults)")
    T = namedtuple("Tiles", "mm_ty mm_tx mm_rm mm_rn mm_bk")(16, 16, 4, 4, 16)
BM, BN, BK = T.mm_ty * T.mm_rm, T.mm_tx * T.mm_rn, T.mm_bk
print(f"tiles: {T.mm_ty}×{T.mm_tx} threads per block, {T.mm_rm}×{T.mm_rn} outputs per thread "
      f"→ a {BM}×{BN} tile of C per block; K in slabs of {BK}")

M, N, K = 3 * BM, 3 * BN, 4 * BK             # a 3 × 3 grid of tiles, K in 4 slabs
ti, tj, ks = 1, 2, 1                          # the block drawn, and its current K slab
gap = 24
x0, y0 = K + gap, K + gap                     # C's top-left corner: A to its left, B above
fig, ax = plt.subplots(figsize=(8, 7.5))


def rect(x, y, w, h, **kw):
    ax.add_patch(plt.Rectangle((x, y), w, h, **kw))


for x, y, w, h in [(0, y0, K, M), (x0, 0, N, K), (x0, y0, N, M)]:      # A, B, C
    rect(x, y, w, h, fill=False, ec="k", lw=1.2)
for i in range(1, M // BM):                   # tile boundaries of C (and the row strips of A)
    ax.plot([0, K], [y0 + i * BM] * 2, color="0.6", lw=0.8)
    ax.plot([x0, x0 + N], [y0 + i * BM] * 2, color="0.6", lw=0.8)
for j in range(1, N // BN):                   # ... and the column strips of B
    ax.plot([x0 + j * BN] * 2, [0, K], color="0.6", lw=0.8)
    ax.plot([x0 + j * BN] * 2, [y0, y0 + M], color="0.6", lw=0.8)
for k in range(1, K // BK):                   # the K slabs
    ax.plot([k * BK] * 2, [y0, y0 + M], color="0.85", lw=0.6)
    ax.plot([x0, x0 + N], [k * BK] * 2, color="0.85", lw=0.6)
rect(0, y0 + ti * BM, K, BM, color="C1", alpha=0.15)              # the rows of A the block needs
rect(x0 + tj * BN, 0, BN, K, color="C1", alpha=0.15)              # the columns of B
rect(ks * BK, y0 + ti * BM, BK, BM, color="C1", alpha=0.85)       # this step's slabs
rect(x0 + tj * BN, ks * BK, BN, BK, color="C1", alpha=0.85)
rect(x0 + tj * BN, y0 + ti * BM, BN, BM, color="C0", alpha=0.35)  # the block's tile of C
for r in range(T.mm_rm):                      # one thread's register block: rows ty + TY·r,
    for s_ in range(T.mm_rn):                 # columns tx + TX·s (strided: stores coalesce)
        rect(x0 + tj * BN + 3 + T.mm_tx * s_, y0 + ti * BM + 5 + T.mm_ty * r, 2.5, 2.5, color="C3")
ax.text(K / 2, y0 + M + 12, "A  (M × K)", ha="center")
ax.text(x0 + N + 8, K / 2, "B  (K × N)", va="center")
ax.text(x0 + N / 2, y0 + M + 12, "C = A B  (M × N)", ha="center")
ax.text(x0 + tj * BN + BN / 2, y0 + ti * BM + BM + 5, f"one block: a {BM}×{BN} tile\n"
        f"red: one thread's {T.mm_rm}×{T.mm_rn} outputs", ha="center", va="top", fontsize=8)
ax.set_title(f"Each step of the K loop stages a {BM}×{BK} slab of A and a {BK}×{BN} slab of B "
             f"(orange)\nin shared memory; the {T.mm_ty * T.mm_tx} threads of the block then "
             f"multiply from there into registers", fontsize=9)
ax.set_xlim(-4, x0 + N + 75)
ax.set_ylim(y0 + M + 22, -4)
ax.set_aspect("equal")
ax.axis("off")
plt.show()

for name, m, n, k in [("cifar10-tiny fc1 (B=128)", 128 * 65, 256, 128), ("square 4096", 4096, 4096, 4096)]:
    naive = 2 * m * n * k                                   # A and B element reads, one per multiply-add
    tiled = m * k * -(-n // BN) + k * n * -(-m // BM)
    print(f"{name:26s}: global reads naive {naive / 1e6:10.1f} M, tiled {tiled / 1e6:8.1f} M  (×{naive / tiled:.0f} fewer)")

# %% [markdown]
The CUDA attention kernels go one step further than the Numba one: a flash-attention
style kernel never writes the N × N matrix at all. Each thread keeps one query row and
its output in registers, keys and values stream through shared memory in tiles, and the
softmax is computed *online* (a running maximum and denominator, rescaling the partial
output when the maximum grows).

# %%
try:
    from numba import cuda
    gpu = cuda.is_available()
except Exception:               # noqa: BLE001
    gpu = False
if gpu:
    cu = get_backend("cuda")
    qkv = rng.standard_normal((8, 65, 3 * 128)).astype(np.float32)
    out_ref, _ = ref.mhsa_core_forward(qkv, 4)
    out_cu, _ = cu.mhsa_core_forward(cu.asarray(qkv), 4)
    print("CUDA attention vs NumPy, rel. error:", f"{rel_error_norm(cu.to_host(out_cu), out_ref):.1e}")
else:
    print("No CUDA GPU here. The CUDA kernels are tested against the NumPy reference under the "
          "numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1 pytest tests/cuda) and benchmarked "
          "with benchmarks/gpu.py on a GPU.")

# %% [markdown]
## Measured speed-ups

`benchmarks/train_step.py` times one full training step (forward, loss, backward, AdamW)
at batch 128, and inference, for each backend and for PyTorch (CPU, eager) on the same
model; `benchmarks/gpu.py` does the same on a GPU. Their saved results:

# %%
results = REPO / "benchmarks" / "results"
path = results / "train_step.json"
if path.is_file():
    bench = json.loads(path.read_text())
    print(f"train_step.json: batch {bench['batch']}, {bench.get('cpu_count', '?')} CPU cores, "
          f"{bench.get('numba_threads', '?')} Numba threads\n")
    print(f"{'model':14s} {'backend':8s} {'train img/s':>12s} {'infer img/s':>12s} {'train GFLOP/s':>14s}")
    for model_name, m in bench["models"].items():
        for be_name, r in m["backends"].items():
            print(f"{model_name:14s} {be_name:8s} {r['train_img_s']:12.0f} {r['infer_img_s']:12.0f} "
                  f"{r.get('train_gflops', float('nan')):14.1f}")
        for pair, ratio in m.get("ratios", {}).items():
            print(f"{'':14s} {pair:14s} train ×{ratio['train']:.2f}, inference ×{ratio['infer']:.2f}")
        print()
else:
    print("benchmarks/results/train_step.json not found: run  python benchmarks/train_step.py")

gpu_path = results / "gpu.json"
if gpu_path.is_file():
    print("gpu.json:\n" + json.dumps(json.loads(gpu_path.read_text()), indent=1)[:3000])
else:
    print("benchmarks/results/gpu.json not found: run  python benchmarks/gpu.py  on a machine with a GPU")

# %% [markdown]
On two CPU cores most of a training step is spent in the big matrix products, which
both backends hand to the same BLAS — so the end-to-end gain of the fused kernels is
modest on the tiny model, and larger on the wider `cifar10-small` model, where the
Numba backend roughly matches PyTorch's CPU speed. On a GPU (the `cuda` backend) the
whole step — parameters, activations, gradients and optimizer state — stays on the
device, and only the batch goes up and the loss comes down.
'''


# =========================================================================================
def parse_cells(source: str):
    """Split a percent-format string into nbformat cells."""
    cells, kind, lines = [], None, []

    def flush():
        if kind is None:
            return
        text = "\n".join(lines).strip("\n")
        if kind == "markdown":
            cells.append(nbformat.v4.new_markdown_cell(text))
        else:
            cells.append(nbformat.v4.new_code_cell(text))

    for line in source.strip("\n").splitlines():
        if line.startswith("# %%"):
            flush()
            kind = "markdown" if "[markdown]" in line else "code"
            lines = []
        else:
            lines.append(line)
    flush()
    return cells


def build(name: str):
    """The notebook ``name`` as an nbformat v4 object, outputs empty."""
    nb = nbformat.v4.new_notebook()
    nb.cells = parse_cells(NOTEBOOKS[name])
    for i, cell in enumerate(nb.cells):
        cell.id = f"{name[:2]}-{i:02d}"      # stable ids: rebuilding gives identical files
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def main(argv):
    wanted = [n for n in NOTEBOOKS if not argv or any(n.startswith(a) for a in argv)]
    for name in wanted:
        path = HERE / f"{name}.ipynb"
        nbformat.write(build(name), path)
        print(f"wrote {path.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main(sys.argv[1:])
