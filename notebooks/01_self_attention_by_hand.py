# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Self-attention by hand
#
# The lecture works one example of self-attention with pencil and paper: **three tokens of
# width 4**, projected to keys, queries and values of width 3. This notebook redoes every
# step with the library and checks each number against the one written in the lecture.
#
# What you will see:
#
# 1. keys, queries and values are just `x @ W`;
# 2. a score is a dot product `q_i · k_j` — a similarity;
# 3. softmax turns the scores of one query into weights that sum to 1 (the slides round them);
# 4. the output of a token is the weighted sum of the values;
# 5. ViT divides the scores by √D_h — and why it has to.
#
# Every library call below is the code that trains the model in notebook 05
# (`minivit.ops.linear`, `minivit.ops.softmax`, `minivit.ops.attention`), and
# `minivit.explain` strings them together step by step.

# %%
# %matplotlib inline
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
# ## The inputs
#
# One row per token. The weights are 4 × 3 matrices used as `x @ W` (a row vector times a
# matrix), the convention of the whole library.

# %%
ex = lecture_example()
x, W_K, W_Q, W_V = ex["x"], ex["W_K"], ex["W_Q"], ex["W_V"]
print("x (3 tokens × 4 features):\n", x)
print("\nW_K:\n", W_K, "\n\nW_Q:\n", W_Q, "\n\nW_V:\n", W_V)

# %% [markdown]
# ## Step 1 — keys: k_i = x_i W_K
#
# By hand for token 1: x₁ = [1, 0, 1, 0] picks rows 1 and 3 of W_K and adds them:
# [0, 0, 1] + [0, 1, 0] = **[0, 1, 1]**. The library's dense layer
# (`linear_forward(x, W)`, here without a bias) does this for all tokens at once.

# %%
keys, _ = linear_forward(x, W_K)
print(keys)
compare("keys", keys, [[0, 1, 1], [4, 4, 0], [2, 3, 1]])

# %% [markdown]
# ## Step 2 — queries: q_i = x_i W_Q
#
# Token 1: rows 1 and 3 of W_Q, [1, 0, 1] + [0, 0, 1] = **[1, 0, 2]**.

# %%
queries, _ = linear_forward(x, W_Q)
print(queries)
compare("queries", queries, [[1, 0, 2], [2, 2, 2], [2, 1, 3]])

# %% [markdown]
# ## Step 3 — values: v_i = x_i W_V
#
# Token 1: [0, 2, 0] + [1, 0, 3] = **[1, 2, 3]**.

# %%
values, _ = linear_forward(x, W_V)
print(values)
compare("values", values, [[1, 2, 3], [2, 8, 0], [2, 6, 3]])

# %% [markdown]
# ## Step 4 — scores: s_ij = q_i · k_j
#
# The score of query i against key j is their dot product. By hand, for token 1's query
# q₁ = [1, 0, 2]:
#
# * q₁ · k₁ = 1·0 + 0·1 + 2·1 = **2**
# * q₁ · k₂ = 1·4 + 0·4 + 2·0 = **4**
# * q₁ · k₃ = 1·2 + 0·3 + 2·1 = **4**
#
# **Why a dot product measures similarity.** q · k = ‖q‖ ‖k‖ cos θ: it is large when the two
# vectors point the same way (θ small), zero when they are orthogonal and negative when
# they point apart. The query says *what this token is looking for*, the key *what each
# token offers*; a large dot product means "this key is what I am looking for". Unlike the
# cosine, the dot product also grows with the lengths — which is why scores can become
# large (step 8).
#
# All scores at once are one matrix product, Q Kᵀ — again the library's dense layer:

# %%
scores, _ = linear_forward(queries, keys.T)          # (3, 3): row i = query i, column j = key j
print(scores)
compare("scores", scores, [[2, 4, 4], [4, 16, 12], [4, 12, 10]])

# the same scores split into length × length × cos θ, for token 1's query
cos = scores[0] / (np.linalg.norm(queries[0]) * np.linalg.norm(keys, axis=1))
print("\ncos θ between q1 and k1, k2, k3:", np.round(cos, 3))
print("lengths of k1, k2, k3:          ", np.round(np.linalg.norm(keys, axis=1), 3))

# %% [markdown]
# k₁ points most nearly the way q₁ does (cos θ = 0.63) but is short, so it scores lowest;
# k₂ is the least aligned (0.32) but four times longer, and ties with k₃ at 4. Direction
# and length both count — one reason the scores of wide vectors can grow large (step 8).

# %% [markdown]
# ## Step 5 — softmax: attention weights
#
# Each row of scores becomes a probability distribution over the keys:
# a_ij = exp(s_ij) / Σ_k exp(s_ik). The library's softmax subtracts the row maximum first
# (the result is the same, and `exp` cannot overflow).

# %%
A, _ = softmax_forward(scores)
print(A)
compare("softmax (exact)", A, [[0.063379, 0.468311, 0.468311],
                                [6.0337e-06, 0.982008, 0.017986],
                                [2.9539e-04, 0.880537, 0.119168]])
print("rows sum to", A.sum(axis=1))

# %% [markdown]
# ### The slides' rounded weights
#
# The slides show the weights to one decimal: [0.0, 0.5, 0.5], [0.0, 1.0, 0.0],
# [0.0, 0.9, 0.1]. Token 1's first weight is really 0.063, which rounds to the nearest
# tenth as **0.1** — the slides write **0.0** so that the row still sums to 1 (largest-
# remainder rounding: round down, then hand the missing tenths to the largest remainders).
# The lecture notes that this "0.0" comes from rounding. `round_weights` offers both rules:

# %%
rounded = round_weights(A, decimals=1, rounding="sum-to-one")
nearest = round_weights(A, decimals=1, rounding="nearest")
print("sum-to-one (the slides):\n", rounded)
print("nearest:\n", nearest, "\nrow sums with 'nearest':", nearest.sum(axis=1))
compare("rounded softmax", rounded, [[0.0, 0.5, 0.5], [0.0, 1.0, 0.0], [0.0, 0.9, 0.1]])

# %% [markdown]
# ## Step 6 — weighted values
#
# Token 1's output is the sum of every value weighted by token 1's attention weights. With
# the slides' rounded weights:
#
# * 0.0 · [1, 2, 3] = [0, 0, 0]
# * 0.5 · [2, 8, 0] = [1, 4, 0]
# * 0.5 · [2, 6, 3] = [1, 3, 1.5]
#
# `self_attention_steps` runs steps 1–7 with the library and keeps every intermediate:

# %%
steps = self_attention_steps(x, W_Q, W_K, W_V)        # scale=None: plain dot product
print("token 1's weighted values (rounded weights):\n", steps.weighted_values_rounded[0])
compare("weighted values of token 1", steps.weighted_values_rounded[0],
        [[0, 0, 0], [1, 4, 0], [1, 3, 1.5]])

# %% [markdown]
# ## Step 7 — outputs: z_i = Σ_j a_ij v_j
#
# The sum of the weighted values, for every token at once: z = A V. The library's
# `attention_forward(q, k, v)` does steps 4–7 in one call — the same function the model
# uses for every head.

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
# ### The whole example at a glance
#
# A picture of the attention weights (rows: the token that asks, columns: the token that
# answers) and the library's step-by-step printout (`minivit attention-example` on the
# command line prints the same).

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
# ## Step 8 — the scaled version, as in ViT
#
# ViT (following Vaswani et al.) divides the scores by √d_k, the width of a query/key —
# in a multi-head model, **D_h = D / heads**, the width of one head. Here d_k = 3:

# %%
scaled = self_attention_steps(x, W_Q, W_K, W_V, scale=True)
print("scale:", scaled.scale_label)
print("softmax:\n", scaled.softmax, "\noutputs:\n", scaled.outputs)
compare("scaled softmax, token 1", scaled.softmax[0], [0.136126, 0.431937, 0.431937])
compare("scaled output, token 1", scaled.outputs[0], [1.863874, 6.319371, 1.704189])

# %% [markdown]
# Dividing by √3 flattens token 1's weights from [0.06, 0.47, 0.47] to [0.14, 0.43, 0.43].
#
# ### Why divide by √D_h?
#
# Take random queries and keys whose entries have mean 0 and variance 1. A score
# q · k = Σ_d q_d k_d is a sum of d independent terms of variance 1, so its **standard
# deviation grows like √d**. In a wide head, the scores of one query are spread over a range
# of tens, softmax puts nearly all the weight on the largest one (it *saturates*: the
# weights become one-hot), and its gradient — the Jacobian diag(a) − a aᵀ — vanishes, so
# the model stops learning where to look. Dividing by √d brings the spread back to 1 for
# every width.
#
# Below, for widths d from 4 to 1024: 64 random queries against 64 random keys, through the
# library's `attention_forward` (unscaled and scaled) and `softmax_backward`.

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
# Unscaled, the spread of the scores grows like √d, the largest weight tends to 1 (one key
# takes everything) and the gradient through softmax keeps shrinking — six times smaller
# at d = 1024 than at d = 4, and falling. Scaled, all three stay put whatever the width.
#
# **Which width?** In multi-head attention each head computes its own softmax over its own
# q · k of width **D_h = D / heads**, so the scale is 1/√D_h. Dividing by √D (the model's
# full width) is a classic re-implementation bug: with 12 heads it makes every score
# √12 ≈ 3.5 times too small. The library pins the right one with a test; notebook 02
# builds the heads.
#
# ## Try it yourself
#
# * Change a weight in `W_Q` and re-run: which scores change, and why?
# * `minivit attention-example --x "1,0;0,1;1,1" --wq "1,0;0,1" --wk "1,0;0,1" --wv "1,0;0,1"`
#   prints any example of your own, step by step.
