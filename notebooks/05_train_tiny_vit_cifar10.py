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
# By default this notebook runs a **short schedule** — 3 epochs over 5 000 training images
# — so that you see the whole loop work in a few minutes. The full recipe is one flag away
# (`FULL = True`): the recipe of the model that ships with the package, on all 50 000
# images; below, the notebook reads how that model was trained, and how long it took,
# from the files its run left (never from a figure typed here). Training from scratch on
# CIFAR-10 is the hard case for a ViT: the paper pre-trains on 300M images; here the model
# sees 50 000.

# %%
# %matplotlib inline
import dataclasses
import shutil
import time
import numpy as np
import matplotlib.pyplot as plt
from IPython.display import display

from _common import setup, load_data, FAST, RUNS, REPO, BUNDLED_RUN
from _common import recorded_settings, bundled_run_summary
from minivit.backends import get_backend
from minivit.checkpoint import load_model
from minivit.predict import default_checkpoint
from minivit.train import train
from minivit.evaluate import evaluate
from minivit.data import Augmenter, normalize, CIFAR10_MEAN, CIFAR10_STD
from minivit.plots import plot_training_curves, plot_confusion_matrix, plot_predictions

setup()

FULL = False      # True: the bundled model's recipe on all 50 000 images (its time: below)

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
# ## The model and its recipe
#
# The package ships a ViT trained on all of CIFAR-10 (`minivit/weights/cifar10-vit.npz`,
# the model of `minivit predict default` and of notebook 06): the best plain ViT this
# project has trained within the training compute of its one-hour recipe. The checkpoint
# records the model's configuration and the command that trained it; that run's results
# (final accuracy, wall time, per-epoch metrics) are committed in the folder printed below
# (`BUNDLED_RUN` in `_common.py`, the one place that names it). Every setting not on the command line is the
# default of `TrainSettings`, every model field not on it is the `cifar10-tiny` preset's.
#
# Two fields of the configuration act only while training. `patch_keep` is patch
# dropout: each training image keeps that fraction of its N patch tokens (a random subset
# of them, after the position embeddings are added), so a training step costs about half
# as much and the same compute buys twice the epochs; evaluation sees all N. `attn_init`
# chooses how the attention kernels start: `xavier` (the official initialisation) or
# `mimetic`, which starts each head's W_q·W_kᵀ near a multiple of the identity, so that
# a token attends to itself and to similar tokens from the first step.

# %%
bundled_path = default_checkpoint()          # CheckpointError if the package lacks it
bundled, bundled_meta = load_model(bundled_path, backend=BACKEND)
config = bundled.config
print(config)
print(f"\n{config.num_params():,} parameters: {config.depth} blocks of {config.heads} heads, "
      f"D = {config.dim}, MLP width {config.mlp_dim}, P = {config.patch_size} "
      f"({config.num_patches} patches + class token); {config.flops_per_image() / 1e6:.0f} MFLOP "
      f"per image forward, {config.train_flops_per_image() / 1e6:.0f} MFLOP per training image "
      f"(forward + backward over the {config.train_num_tokens} tokens a training step keeps)")

# %%
recipe = recorded_settings(bundled_meta)
run = bundled_run_summary()
print(f"{bundled_path.relative_to(bundled_path.parents[2])} was trained by\n"
      f"  {bundled_meta['train_command']}\n")
print(f"recipe: {recipe.epochs} epochs, batch {recipe.batch_size}, {recipe.optimizer} "
      f"(lr {recipe.lr:g}, weight decay {recipe.weight_decay:g}), {recipe.warmup:g} warm-up epochs "
      f"then {recipe.schedule} decay to {recipe.min_lr:g}, gradient clipping at {recipe.clip_norm:g}, "
      f"label smoothing {recipe.label_smoothing:g}, random crop (padding {recipe.crop_padding}, "
      f"{recipe.crop_mode}) {'+ horizontal flip' if recipe.flip else 'without flips'}, "
      f"EMA of the weights {recipe.ema_decay:g}, {recipe.dtype} on {recipe.backend}")
# The package ships either the final weights or their moving average (`weights` in the
# checkpoint's meta), and quotes the test accuracy of the weights it ships.
shipped_ema = bundled_meta.get("weights") == "ema"
shipped_acc = run["final_ema_test_acc"] if shipped_ema else run["final_test_acc"]
print(f"\nits run ({BUNDLED_RUN.relative_to(REPO)}/summary.json): "
      f"{100 * shipped_acc:.2f}% test accuracy"
      f"{' (the moving average of the weights, the shipped ones)' if shipped_ema else ''}"
      f" after {run['epochs']} epochs in "
      f"{run['train_plus_eval_s'] / 60:.1f} min of training and evaluation "
      f"({run['machine']}; {run['images_per_s']:.0f} training images/s on average)")

# %% [markdown]
# ## The data, and what augmentation does
#
# CIFAR-10: 50 000 training and 10 000 test images of 32 × 32 pixels in 10 classes. A small
# ViT overfits quickly, so training uses the standard CIFAR augmentation: a random crop of
# the image padded by a few pixels (with zeros, or with the mirror image of its border:
# `crop_mode`), and a random horizontal flip (`minivit.data.Augmenter`, which also
# normalises each channel).

# %%
if FULL:
    LIMIT_TRAIN, LIMIT_TEST, EPOCHS = None, None, recipe.epochs
elif FAST:
    LIMIT_TRAIN, LIMIT_TEST, EPOCHS = 512, 256, 2
else:
    LIMIT_TRAIN, LIMIT_TEST, EPOCHS = 5000, None, 3
data, source = load_data(limit_train=LIMIT_TRAIN, limit_test=LIMIT_TEST)
classes = data["classes"]
print(f"{source}: {len(data['x_train'])} training and {len(data['x_test'])} test images")

rng = np.random.default_rng(0)
batch = data["x_train"][:8]
augmented = Augmenter(crop_padding=recipe.crop_padding, flip=recipe.flip,
                      crop_mode=recipe.crop_mode)(batch, data["y_train"][:8], rng)[0]
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
# `TrainSettings` holds every knob (saved in each checkpoint). Ours are the bundled
# model's recipe, read above: AdamW with decoupled weight decay, linear warm-up then cosine
# decay and gradient clipping at global norm 1 as in the paper (§4.1, Appendix B), plus
# what training from scratch on 32 × 32 images needs — label smoothing and crop + flip
# augmentation — and an exponential moving average of the weights, evaluated and saved
# beside them.
#
# With `FULL = True` the loop below runs exactly the bundled model's command, which is
# in Python
#
# ```python
# train(bundled.config, data_dir=..., out_dir=RUNS / "tiny", settings=recipe)
# ```
#
# (its epoch-by-epoch resumes are bit-identical to one call). The short schedule keeps
# everything the same except the number of epochs and the training-set size, and
# evaluates after each epoch on 2 000 test images only; the final accuracy below uses the
# whole test set. The recipe's last `full_token_epochs` epochs train on every patch
# token (patch dropout off, so the model meets full-length sequences before it is
# evaluated), and their learning rate restarts at `full_token_lr` and decays again; the
# short schedule keeps one such epoch in three (none, and so no restart, below three
# epochs).

# %%
settings = dataclasses.replace(recipe, backend=BACKEND)
if not FULL:
    ft = min(recipe.full_token_epochs, EPOCHS // 3)
    # a restarted lr (full_token_lr) needs full-token epochs to restart at
    settings = dataclasses.replace(settings, epochs=EPOCHS, eval_every=1, full_token_epochs=ft,
                                   full_token_lr=settings.full_token_lr if ft else None)
print(settings)
print(f"\n{settings.epochs} epochs × {len(data['x_train']) // settings.batch_size} steps per epoch")

# %% [markdown]
# ## Train, with live curves
#
# `train` prints a progress bar per epoch (loss, accuracy, learning rate, images/s). To
# redraw the curves after every epoch we let it stop after each epoch
# (`stop_after_epochs=1`) and resume from its checkpoint (`resume=True`) — the resumed run
# is bit-identical to an uninterrupted one, the same mechanism that survives a Ctrl-C.

# %%
out_dir = RUNS / ("tiny" if FULL else "05_short")
if not FULL:                        # the short run is this notebook's scratch: start afresh
    shutil.rmtree(out_dir, ignore_errors=True)   # (a full run is resumed where it stopped)
eval_data = data if FULL else dict(data, x_test=data["x_test"][:2000], y_test=data["y_test"][:2000])
curves = None                       # the display handle, updated after each epoch
t0 = time.perf_counter()
for _ in range(settings.epochs):
    result = train(config, data=eval_data, out_dir=out_dir, settings=settings,
                   resume=(out_dir / "checkpoint.npz").is_file(), stop_after_epochs=1)
    fig = plot_training_curves(result["history"])
    if curves is None:
        curves = display(fig, display_id=True)
    else:
        curves.update(fig)
    if result["interrupted"] is not None or len(result["history"]) >= settings.epochs:
        break
print(f"trained {len(result['history'])} epoch(s) in {time.perf_counter() - t0:.0f} s; "
      f"checkpoint: {result['checkpoint']}")

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
# After the short schedule the model is far from done. The published from-scratch results
# with models of this kind agree on what matters on 32 × 32 images: **patch size 4**
# (P = 16 leaves 4 tokens), **augmentation**, **warm-up + cosine decay**, **label
# smoothing**, and **long schedules**:
#
# | model | params | epochs | top-1 |
# |---|---|---|---|
# | pure-NumPy ViT on CPU (libaohang/ViT-NumPy), 4 layers, D = 64 | 142k | 40 | 77.5% (≈ 6.4 h on 2–3 cores, as its authors report) |
# | ViT (kentaroy47/vision-transformers-cifar10), 6 layers, D = 512, RandAugment | 9.5M | 200 | ≈ 80% |
# | ViT-Lite-7/4 (Hassani et al. 2021, "Escaping the Big Data Paradigm with Compact Transformers") | 3.7M | 200 | 91.4% |
#
# The paper itself (Dosovitskiy et al. 2021, Table 2) reaches 99.50% on CIFAR-10 only by
# fine-tuning a model pre-trained on JFT-300M. The bundled model, evaluated on the same
# test images as our short run:

# %%
ev_b = evaluate(bundled, data["x_test"], data["y_test"])
print(f"bundled model ({bundled_path.name}, {bundled.config.num_params():,} parameters, "
      f"{bundled_meta['epoch']} epochs): {100 * ev_b['acc']:.2f}% on the same {len(data['y_test'])} "
      f"test images, vs {100 * ev['acc']:.2f}% after the short schedule")
