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
# # 03 · Patches and embeddings (Eq. 1)
#
# A Transformer reads a sequence of vectors. ViT turns an image into one:
#
#     z_0 = [x_class; x_p¹E; x_p²E; …; x_pᴺE] + E_pos          (paper Eq. 1)
#
# 1. cut the image x ∈ R^{H×W×C} into N = HW/P² patches of P × P pixels;
# 2. flatten each patch into a vector x_p of P²·C numbers;
# 3. project every patch with the same matrix E (P²·C × D);
# 4. put a learned **[class] token** in front;
# 5. add a learned **position embedding** to every token.
#
# We follow one CIFAR-10 test image through these steps with the library.

# %%
# %matplotlib inline
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
# ## Patches: P = 4 → N = 32²/4² = 64
#
# The image is 32 × 32 pixels with C = 3 colour channels. With P = 4 (the CIFAR presets)
# it becomes an 8 × 8 grid of 4 × 4 patches: **N = HW/P² = 64 tokens**, read row by row.
# Left: the grid on the image; right: the patches in token order, as the model receives
# them.

# %%
plot_patches(img, P=4)

# %% [markdown]
# ## Overlapping patches: P = 8, stride S = 4
#
# The lecture also allows patches that overlap: take a P × P window every S pixels. With
# P = 8 and S = 4 there are (32 − 8)/4 + 1 = 7 windows per side, **N = 49**. Each window
# shares half its width with its neighbour (the coloured outlines show the overlap).

# %%
print("grid for P=8, S=4:", patch_grid(32, 32, 8, 4),
      "→ N =", ViTConfig(patch_size=8, stride=4).num_patches)
plot_patches(img, P=8, S=4)

# %% [markdown]
# How many patches contain each pixel? The backward pass of patch extraction answers it:
# `patches_backward` sends each patch's gradient back to its pixels and *adds* where
# patches overlap. Feed it all ones and it counts:

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
# Without overlap every pixel is in exactly one patch; with P = 8, S = 4 the border pixels
# are in 1 or 2 windows and the interior in 4. This matters for the gradient with respect
# to the image: overlapping patches add up.
#
# ## Flattening in (h, w, c) order
#
# A 4 × 4 × 3 patch becomes a vector of 48 numbers. The library flattens it in
# **(h, w, c)** order — row by row, pixel by pixel, the three colours of a pixel side by
# side — the same order as the official checkpoints' HWIO embedding kernel reshaped to
# (P·P·C, D), so imported weights line up without a permutation.

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
# ## The linear projection E
#
# Every patch vector x_p (48 numbers) is multiplied by the same matrix **E** (48 × D) plus
# a bias: a dense layer applied to each token. The cifar10-tiny preset uses D = 128.
# `ViT.embed_forward` is Eq. 1; we compare it with the projection done by hand through the
# library's `linear_forward`.

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
# ## The [class] token
#
# Like BERT's [CLS], ViT prepends one learned vector x_class to the sequence. It belongs to
# no patch; through attention it gathers information from all of them, and after the last
# block its state alone feeds the classifier (Eq. 4: y = LN(z_L⁰)). It is initialised to
# zeros, so at the start token 0 of z_0 is just its position embedding:

# %%
print("cls_token:", p["cls_token"].shape, " all zeros at init:", not p["cls_token"].any())
print("z_0[token 0] = x_class + E_pos[0]:", np.allclose(z0[0, 0], p["cls_token"][0, 0] + p["pos_embed"][0, 0]))

# %% [markdown]
# ## Position embeddings: 1-D, 2-D or none
#
# Attention treats its input as a *set*: shuffle the patches and every token's output is
# shuffled the same way. The model only knows where a patch came from through **E_pos**,
# added to every token. `ViTConfig.pos_embed` chooses it:
#
# * `"learned-1d"` (the paper's default): one learned vector per token, a table (N+1) × D.
#   Nothing tells it that patch 9 is below patch 1 — it must learn the 2-D layout.
# * `"learned-2d"` (Appendix D.4): a table of row embeddings and one of column
#   embeddings, each of width D/2; patch (r, c) gets [row_r ; col_c], the class token its own.
# * `"none"`: no position information at all.
#
# The paper found 2-D no better than 1-D, and "none" about 3 points worse.

# %%
for kind in ["learned-1d", "learned-2d", "none"]:
    cfg = config.replace(pos_embed=kind)
    shapes = {k: v for k, v in cfg.param_shapes().items() if k.startswith("pos_embed")}
    n = sum(int(np.prod(s)) for s in shapes.values())
    print(f"{kind:11s} {n:6,d} position parameters  {shapes}")

# %% [markdown]
# How similar is each patch's position embedding to every other's (cosine similarity)?
# Each small square below belongs to one patch (r, c) and shows its similarity with all 64
# patches. At initialisation, 1-D embeddings are independent random vectors: every patch
# is similar only to itself. The 2-D embedding has the grid built in: patches in the same
# row share half their vector, and so do patches in the same column. (Notebook 06 shows
# what a trained 1-D embedding learns.)

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
# ## N = HW/P²: the patch size sets the sequence length
#
# The patch size is the single most important choice on small images: N grows with 1/P²
# and the attention cost with N². On CIFAR-10's 32 × 32 images P = 16 would leave only
# 4 tokens — catastrophic — which is why the CIFAR presets use P = 4.

# %%
print(f"{'image':>6s} {'P':>3s} {'S':>3s} {'N':>5s} {'patch dim P²C':>14s}")
for size, P, S in [(32, 2, None), (32, 4, None), (32, 8, None), (32, 8, 4), (32, 16, None),
                   (224, 14, None), (224, 16, None), (224, 32, None)]:
    cfg = ViTConfig(image_size=size, patch_size=P, stride=S)
    print(f"{size:6d} {P:3d} {cfg.S:3d} {cfg.num_patches:5d} {cfg.patch_dim:14d}")

# %% [markdown]
# The sequence z_0 (N + 1 tokens of width D) now enters the encoder blocks — notebook 04.
