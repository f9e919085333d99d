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
# # 05 · Training a tiny ViT on CIFAR-10
#
# Everything so far comes together in `minivit.train.train`: mini-batches with
# augmentation, forward, softmax cross-entropy with label smoothing, backward, gradient
# clipping, AdamW with warm-up and cosine decay, an evaluation after each epoch, and a
# checkpoint.
#
# By default this notebook runs a **short schedule** — 3 epochs over 5 000 training images,
# about a hundred steps, a minute or two on two CPU cores — so that you see the whole loop
# work. The full recipe is one flag away (`FULL = True`: 30 epochs over all 50 000 images,
# about an hour and a half at the ~400 images/s the Numba backend reaches on two idle
# cores). Training from scratch on CIFAR-10 is the hard case for a ViT: the paper
# pre-trains on 300M images; here the model sees 50 000.

# %%
# %matplotlib inline
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
# ## The model
#
# The `cifar10-tiny` preset: 32 × 32 images, P = 4 (N = 64 patches), D = 128, 4 blocks of
# 4 heads, MLP width 256, a linear head for the 10 classes.

# %%
config = ViTConfig.preset("cifar10-tiny")
print(config)
print(f"\n{config.num_params():,} parameters, {config.num_patches} patches + class token, "
      f"{config.flops_per_image() / 1e6:.0f} MFLOP per image forward (≈ 3× that to train)")

# %% [markdown]
# ## The data, and what augmentation does
#
# CIFAR-10: 50 000 training and 10 000 test images of 32 × 32 pixels in 10 classes. A small
# ViT overfits quickly, so training uses the standard CIFAR augmentation: a random crop of
# the image padded by 4 pixels, and a random horizontal flip (`minivit.data.Augmenter`,
# which also normalises each channel).

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
# ## The training settings
#
# `TrainSettings` holds every knob (saved in each checkpoint). The defaults are the
# recipe that matters on small images (REFERENCE.md §3): AdamW (lr 1e-3, weight decay
# 0.05), linear warm-up then cosine decay, gradient clipping at global norm 1, label
# smoothing 0.1, random crop + flip, batch 128.
#
# The full recipe, exactly as the command line runs it
# (`minivit train --preset cifar10-tiny --epochs 30 --backend numba --out runs/tiny`):
#
# ```python
# result = train("cifar10-tiny", data_dir=data_dir(), out_dir=RUNS / "tiny", epochs=30,
#                backend=BACKEND)
# ```
#
# With `FULL = True` the loop below runs exactly this (its epoch-by-epoch resumes are
# bit-identical to one call). The short schedule keeps everything the same except the
# number of epochs and the training-set size, and evaluates after each epoch on 2 000 test
# images only; the final accuracy below uses the whole test set.

# %%
settings = TrainSettings(epochs=EPOCHS, backend=BACKEND,
                         batch_size=128 if not FAST else 64, eval_batch_size=500)
print(settings)
print(f"\n{EPOCHS} epochs × {len(data['x_train']) // settings.batch_size} steps per epoch")

# %% [markdown]
# ## Train, with live curves
#
# `train` prints a progress bar per epoch (loss, accuracy, learning rate, images/s). To
# redraw the curves after every epoch we let it stop after each epoch
# (`stop_after_epochs=1`) and resume from its checkpoint (`resume=True`) — the resumed run
# is bit-identical to an uninterrupted one, the same mechanism that survives a Ctrl-C.

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
# ## Evaluation
#
# Accuracy on the whole test set, per class, and the confusion matrix (rows: the true
# class, columns: the prediction).

# %%
model = result["model"]
ev = evaluate(model, data["x_test"], data["y_test"])
print(f"test accuracy: {100 * ev['acc']:.2f}% on {len(data['y_test'])} images (chance: 10%)\n")
for name, acc in zip(classes, ev["per_class_acc"]):
    print(f"  {name:12s} {100 * acc:5.1f}%  " + "█" * int(round(40 * acc)))
plot_confusion_matrix(ev["confusion"], classes)

# %% [markdown]
# ## Sample predictions
#
# The top class and its probability for 16 test images (green: right, red: wrong).

# %%
images = data["x_test"][:16]
probs = model.predict_proba(normalize(images))
plot_predictions(images, probs, classes, labels=data["y_test"][:16])

# %% [markdown]
# ## What to expect
#
# After the short schedule (about a hundred steps) the model is far from done. What matters on 32 × 32 images, in order (REFERENCE.md §3): **patch size 4**
# (16 leaves 4 tokens), **augmentation**, **warm-up + cosine decay**, **label smoothing**,
# and **long schedules**. Published from-scratch results with models of this kind:
#
# | model | params | epochs | top-1 |
# |---|---|---|---|
# | pure-NumPy ViT on CPU, 4 layers, D = 64 | 142k | 40 | 77.5% (≈ 6.4 h on 2–3 cores) |
# | ViT, 6 layers, D = 512, RandAugment | 9.5M | 200 | ≈ 80% |
# | ViT-Lite-7/4 (Compact Transformers) | 3.7M | 200 | 91.4% |
#
# The bundled checkpoint `minivit/weights/cifar10-tiny.npz` (used by `minivit predict
# default` and by notebook 06, when present) is this preset trained for many epochs; its
# metadata records how.

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
