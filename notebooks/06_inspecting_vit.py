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
# # 06 · Inspecting a trained ViT (paper §4.5)
#
# Section 4.5 of the paper, "Inspecting Vision Transformer", looks inside a trained model
# in four ways. We repeat each on our tiny CIFAR-10 model with `minivit.inspect`, set the
# paper's observation beside ours, and say whether the tiny model shows it.
#
# 1. the principal components of the patch-embedding filters E (Fig. 7 left);
# 2. the similarity of the learned position embeddings (Fig. 7 centre);
# 3. the mean attention distance of every head against depth (Fig. 7 right);
# 4. attention rollout: which pixels the class token draws on (Fig. 6).
#
# The paper's model (ViT-L/16 trained on JFT-300M) saw 6 000 times more images than ours.

# %%
# %matplotlib inline
import numpy as np
import matplotlib.pyplot as plt

from _common import setup, load_data, data_dir, FAST, RUNS
from minivit import CheckpointError
from minivit.checkpoint import load_model
from minivit.predict import default_checkpoint
from minivit.data import normalize

from minivit import inspect as vit_inspect
from minivit import plots_inspect

setup()


# %% [markdown]
# ## The model
#
# The bundled checkpoint (`minivit/weights/cifar10-vit.npz`, the package's best plain ViT,
# trained on all of CIFAR-10) when it is shipped; otherwise the run of notebook 05; otherwise a short
# run trained here. A barely trained model shows only the beginnings of the structure the
# paper describes — keep that in mind when reading the verdicts.

# %%
def find_model():
    try:
        path = default_checkpoint()
    except CheckpointError as e:    # not shipped with this installation
        print(f"The bundled checkpoint was not found ({e}).")
    else:
        return (*load_model(path), f"the bundled checkpoint {path.relative_to(path.parents[2])}")
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
      f"P = {c.patch_size}, grid {c.grid}; trained epochs: {meta['epoch']}")

n_images = 16 if FAST else 64
imgs, x, labels, source = vit_inspect.load_images(n_images, c.image_size, data_dir(),
                                                  channels=c.channels)
print(f"{n_images} {source} test images for the attention statistics")

# %% [markdown]
# ## 1 · Embedding filters
#
# > Paper: the first layer linearly projects the flattened patches (Eq. 1); the top
# > principal components of the learned embedding filters "resemble plausible basis
# > functions for a low-dimensional representation of the fine structure within each
# > patch."
#
# Each of the D columns of E is a linear filter over a P × P × 3 patch. Principal component
# analysis of these D filters (`embedding_filters_pca`) gives the directions they vary
# along most; each is drawn as a small RGB image (rescaled for display), titled with its
# share of the variance.

# %%
components, explained = vit_inspect.embedding_filters_pca(model, k=28)
print(f"the first 28 components explain {100 * explained.sum():.0f}% of the filters' variance; "
      f"the first 3: {np.round(100 * explained[:3], 1)}%")
plots_inspect.plot_embedding_filters(components, explained)

# %% [markdown]
# With P = 4 a filter has only 4 × 4 pixels, so the "basis functions" are coarse: look for
# a uniform brightness component, colour-opponent components (one colour against another)
# and low-frequency gradients across the patch — the P = 4 version of the paper's smooth
# blobs and stripes. A barely trained E is still close to its random initialisation, and
# its components look like noise.
#
# ## 2 · Position-embedding similarity
#
# > Paper: "the model learns to encode distance within the image in the similarity of
# > position embeddings, i.e. closer patches tend to have more similar position
# > embeddings. Further, the row-column structure appears; patches in the same row/column
# > have similar embeddings."
#
# Our model uses 1-D position embeddings: nothing tells it that patch 9 sits under patch 1.
# At initialisation every patch is similar only to itself (notebook 03). If training finds
# the 2-D layout, the tile of each patch lights up around its own position.

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
# ## 3 · Mean attention distance
#
# > Paper: the average distance in image space across which information is integrated,
# > "analogous to receptive field size in CNNs". "Some heads attend to most of the image
# > already in the lowest layers", others have "consistently small attention distances in
# > the low layers", and "the attention distance increases with network depth".
#
# For every query patch, the distance (in pixels) to every other patch, weighted by the
# attention weight, averaged over patches and images (`mean_attention_distance`). One dot
# per head; our images are only 32 pixels wide. For reference, the same function applied to
# a head that attends *uniformly* to every token gives the distance of "no preference".

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
# What each head of the first and the last layer looks at, for one image: the class
# token's attention row, over the patches.

# %%
display(plots_inspect.plot_attention_heads(imgs[0], atts[0][0], c.grid, layer=0))
plots_inspect.plot_attention_heads(imgs[0], atts[-1][0], c.grid, layer=c.depth - 1)

# %% [markdown]
# ## 4 · Attention rollout
#
# > Paper: "Globally, we find that the model attends to image regions that are
# > semantically relevant for classification" (Fig. 6, computed by attention rollout).
#
# Rollout (Abnar & Zuidema, 2020) follows the information from the input patches to the
# class token through all layers: average each layer's heads, add the identity for the
# residual path, renormalise the rows, and multiply the layers together. The class token's
# row is a map over the patches; below it is multiplied onto each image.

# %%
maps = vit_inspect.cls_rollout_map(atts, c.grid)             # (B, G_h, G_w)
probs = model.predict_proba(x[:8])
if labels is not None and source == "cifar10":
    from minivit.data import CLASSES
    for i in range(8):
        print(f"image {i}: true {CLASSES[labels[i]]:10s} predicted {CLASSES[int(np.argmax(probs[i]))]}")
plots_inspect.plot_rollout(imgs[:8], maps[:8])

# %% [markdown]
# ## Side by side
#
# | §4.5 observation | what to look for above |
# |---|---|
# | embedding filters look like basis functions of the fine structure in a patch | section 1: smooth, colour-opponent components in the first few |
# | closer patches have more similar position embeddings; row-column structure | section 2: negative distance–similarity correlation; bright rows/columns in the tiles |
# | some heads global, some local in the lowest layers | section 3: the spread of layer 0 |
# | attention distance grows with depth | section 3: the trend of the dots |
# | the class token attends to semantically relevant regions | section 4: the rollout on the object rather than the background |
#
# The printed verdicts are computed from this model, so they change with the checkpoint.
# A model trained for minutes shows the position structure first (it is the easiest thing
# to learn); the attention-distance trend and object-centred rollouts need the full
# schedule — and the paper's clearest pictures come from a model pre-trained on 300M images.
