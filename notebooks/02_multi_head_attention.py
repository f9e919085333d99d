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
# # 02 · Multi-head attention
#
# One head computes one set of attention weights per token: it can look for one thing. ViT
# runs **H heads in parallel**, each on its own slice of width D_h = D/H, and mixes their
# results with an output projection (paper Appendix A, Eq. 5–8):
#
#     [q, k, v] = z U_qkv                      U_qkv: D × 3D   (one fused projection)
#     SA_h(z)   = softmax(q_h k_hᵀ / √D_h) v_h   for each head h
#     MSA(z)    = [SA_1(z); …; SA_H(z)] U_msa   U_msa: D × D
#
# This notebook follows the shapes through every step with the library's ops
# (`split_heads`, `attention_forward`, `merge_heads`, `mhsa_forward`), draws each head's
# attention map, and builds two heads by hand that attend to different things.

# %%
# %matplotlib inline
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
# ## The lecture's tokens with two small heads
#
# `minivit/examples/two_heads.json` gives the lecture's three tokens two heads of width 2
# and an output projection W_O (4 × 4). Each head is exactly the single-head computation of
# notebook 01; the heads' outputs are concatenated side by side and multiplied by W_O.

# %%
ex = load_example_file(example_path("two_heads"))
mh = multi_head_steps(ex["x"], ex["heads"], ex["W_O"])           # unscaled, like the lecture
for h, st in enumerate(mh.heads):
    print(f"head {h + 1}: weights\n{np.round(st.softmax, 4)}\n  outputs\n{np.round(st.outputs, 4)}\n")
print("concatenation [head 1 | head 2]  (3 tokens × 4):\n", np.round(mh.concat, 4))
print("\noutput = concat @ W_O:\n", np.round(mh.output, 4))

# %% [markdown]
# ## Shapes at every step of ViT's MSA
#
# In the model, the heads are not separate weight matrices: one fused dense layer produces
# all queries, keys and values at once, and the heads are *slices of its columns*. The
# 3D output columns are laid out as **[q | k | v]**, and inside each part head h owns the
# columns h·D_h … (h+1)·D_h − 1:

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
# A batch of B = 2 sequences of N = 5 tokens of width D = 8, two heads. Every array below
# is computed by the library; we print its shape with the paper's letters.

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
# Note what `split_heads` and `merge_heads` are: reshapes and transposes, no arithmetic.
# Head h of token i is just columns h·D_h … of row i.

# %%
print("q of head 2, token 1, batch 1 :", q[0, 1, 0])
print("qkv[batch 1, token 1, D_h:2·D_h]:", qkv[0, 0, Dh:2 * Dh])

# %% [markdown]
# ## Per-head attention maps
#
# Each head has its own N × N matrix of weights (rows: the query token, columns: the keys,
# each row sums to 1). With random weights there is no pattern yet — a trained model's
# maps are in notebook 06.

# %%
fig, axes = plt.subplots(1, H, figsize=(3.4 * H, 3))
for h in range(H):
    im = axes[h].imshow(A[0, h], cmap="viridis", vmin=0, vmax=1)
    axes[h].set(title=f"head {h + 1}", xlabel="key token", ylabel="query token")
fig.colorbar(im, ax=list(axes))
plt.show()

# %% [markdown]
# ## Two heads that look for different things
#
# To see why several heads help, build them by hand on a toy sequence. Each token carries
# its **content** (one of 4 symbols, one-hot) and its **position** (one of 8, one-hot):
#
#     token = [content one-hot (4) | position one-hot (8) | 4 spare zeros]   → D = 16, H = 2, D_h = 8
#
# * **Head 1, "previous token"**: its query of token i is position i; its key of token j is
#   position j + 1 (a shifted copy). q_i · k_j is large only when j = i − 1.
# * **Head 2, "same content"**: query and key are both the content one-hot, so
#   q_i · k_j is large when tokens i and j hold the same symbol.
# * Both heads' values copy the **content**, so each head's output says *which symbol it
#   found*.
#
# The weights are multiplied by a gain c so that the softmax is sharp. They are packed into
# one fused U_qkv in the library's [q | k | v] × heads column layout, and the library's MSA
# core runs them — scale 1/√D_h included.

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
# Head 1 reads off the previous symbol (token 0 has no predecessor: its key slot is empty,
# so it spreads evenly — a trained model would learn what to do there). Head 2 averages
# over every occurrence of the token's own symbol. A single head would have to choose one
# of these two behaviours; with two heads the concatenation `[SA_1; SA_2]` carries both,
# and U_msa mixes them. In ViT, heads learn such specialisations from data: some look at
# neighbouring patches, others across the whole image (notebook 06).
#
# ## How big do the attention matrices get?
#
# Every head of every layer forms an N × N matrix per image. With the paper's models:

# %%
print(f"{'model':14s} {'tokens N+1':>10s} {'heads':>6s} {'layers':>7s} {'attention weights per image':>28s}")
for name in ["cifar10-tiny", "cifar10-small", "vit-b16", "vit-l16", "vit-h14"]:
    cfg = ViTConfig.preset(name)
    T = cfg.num_patches + 1
    print(f"{name:14s} {T:10d} {cfg.heads:6d} {cfg.depth:7d} {T * T * cfg.heads * cfg.depth:28,d}")

# %% [markdown]
# The cost grows with N², i.e. with the fourth power of 1/P: halving the patch size
# multiplies the attention work by 16. The fused kernels of notebook 07 avoid writing these
# matrices to memory more than once.
#
# ## The scale is 1/√D_h, per head
#
# Each head's softmax sees scores of width D_h, so the library scales by 1/√D_h. Check it
# against `attention_forward` with the two candidate scales:

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
