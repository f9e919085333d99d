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
# # 04 · The encoder block, and backpropagation by hand
#
# An encoder block (paper Eq. 2–3) is two residual branches, each starting with a
# LayerNorm ("pre-norm"):
#
#     z'_ℓ = MSA(LN(z_{ℓ−1})) + z_{ℓ−1}        (Eq. 2)
#     z_ℓ  = MLP(LN(z'_ℓ)) + z'_ℓ              (Eq. 3),   MLP = fc2(GELU(fc1(·)))
#
# The first half of this notebook looks at the pieces; the second derives each backward
# pass and **checks it live against finite differences**, up to the whole model's
# gradients. There is no autograd in minivit: every gradient is a hand-written function,
# so these checks are how we know they are right.

# %%
# %matplotlib inline
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
# ## LayerNorm
#
# For each token separately, over its D features: subtract the mean, divide by the
# standard deviation, then scale and shift with learned γ, β:
#
#     LN(x) = γ ⊙ (x − μ) / √(σ² + ε) + β,     ε = 1e-6
#
# It keeps every token's features on the same scale whatever the depth, which is what lets
# deep pre-norm Transformers train without careful tuning.

# %%
x = 3.0 + 5.0 * rng.standard_normal((4, 16))            # 4 tokens, D = 16, far from N(0, 1)
gamma, beta = np.ones(16), np.zeros(16)
y, _ = layernorm_forward(x, gamma, beta)
print("before: per-token mean", np.round(x.mean(1), 2), " std", np.round(x.std(1), 2))
print("after:  per-token mean", np.round(y.mean(1), 6), " std", np.round(y.std(1), 4))

# %% [markdown]
# ## The GELU MLP
#
# The MLP widens each token to `mlp_dim` (fc1), applies GELU, and projects back to D (fc2).
# GELU(x) = x·Φ(x), with Φ the standard normal CDF: like ReLU for large |x|, but smooth,
# and slightly negative for small negative x. Two forms exist: the exact one with erf
# (PyTorch/timm) and a tanh approximation (the official JAX ViT). minivit has both
# (`ViTConfig.gelu`); they differ by less than 1e-3.

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
# ## A whole block, and what the residuals do
#
# `ViT.block_forward(i, z)` is Eq. 2–3 for block i. We use a small model (8 × 8 images,
# P = 4 → 4 patches + the class token, D = 8, 2 heads) so that the finite-difference checks
# further down run in seconds.

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
# The residual connections make each block a *correction* added to its input. If the two
# branches' last layers (U_msa and fc2) output zeros, the block is exactly the identity —
# the signal, and in the backward pass the gradient, flows straight through:

# %%
saved = model.state_dict()
silenced = dict(saved)
for name in ["attn.proj.weight", "attn.proj.bias", "mlp.fc2.weight", "mlp.fc2.bias"]:
    silenced["blocks.0." + name] = np.zeros_like(saved["blocks.0." + name])
model.load_params(silenced)
print("block with silenced branches is the identity:", np.allclose(model.block_forward(0, z), z))
model.load_params(saved)

# %% [markdown]
# ## Backward passes, one op at a time
#
# Every op is a pair `forward(...) -> (out, cache)` and `backward(dout, cache) -> grads`.
# Given the gradient of the loss with respect to the output (`dout`), backward returns the
# gradients with respect to every input. `check_gradient` compares one with **centred
# finite differences**, (f(x + h) − f(x − h)) / 2h contracted with dout, in float64.
#
# ### Linear: y = x W + b
#
#     dx = dy Wᵀ,    dW = xᵀ dy  (summed over all rows),    db = Σ_rows dy

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
# ### LayerNorm
#
# With x̂ = (x − μ)·r, r = (σ² + ε)^(−1/2) and g = dy ⊙ γ, the chain rule through the
# mean and the variance (both depend on every feature) gives
#
#     dx = r · (g − mean(g) − x̂ · mean(g ⊙ x̂)),     dγ = Σ dy ⊙ x̂,     dβ = Σ dy
#
# The two subtracted means are the paths through μ and through σ².

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
# ### GELU
#
#     erf form:   d/dx [x Φ(x)] = Φ(x) + x φ(x)
#     tanh form:  ½(1 + t) + ½ x (1 − t²) √(2/π) (1 + 3·0.044715 x²),   t = tanh(√(2/π)(x + 0.044715 x³))

# %%
x = rng.standard_normal((4, 7))
dy = rng.standard_normal(x.shape)
for form in ["erf", "tanh"]:
    y, cache = gelu_forward(x, form)
    report(f"GELU ({form}) dx", check_gradient(lambda: gelu_forward(x, form)[0], x,
                                               gelu_backward(dy, cache), dy))

# %% [markdown]
# ### Softmax
#
# The Jacobian of a = softmax(s) is diag(a) − a aᵀ, so
#
#     ds = a ⊙ (da − Σ_j da_j a_j)

# %%
s = rng.standard_normal((3, 6))
a, cache = softmax_forward(s)
da = rng.standard_normal(a.shape)
report("softmax ds", check_gradient(lambda: softmax_forward(s)[0], s, softmax_backward(da, cache), da))

# %% [markdown]
# ### Attention: out = softmax(s · q kᵀ) v
#
# Backward walks the forward in reverse:
#
#     dA = dout vᵀ,   dv = Aᵀ dout,   dS = softmax backward of dA,   dq = s · dS k,   dk = s · dSᵀ q

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
# ### Residuals
#
# z_out = z + F(z) has dz = dz_out + (backward of F)(dz_out): the gradient passes through
# unchanged **and** picks up the branch's contribution. That identity path is why deep
# residual networks train: no matter how many blocks, the gradient reaches the first one.
#
# ## The whole block against finite differences
#
# `ViT.block_backward(i, dz)` chains the ops above in reverse order (fc2 → GELU/fc1 → LN2 →
# residual → U_msa → attention → U_qkv → LN1 → residual). We check the gradient with respect
# to the block's input and to each of its 12 parameters (a random sample of entries per
# tensor, to keep it fast).

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
# ## The whole model
#
# Finally the full chain: patches → Eq. 1 → two blocks → Eq. 4 → head → softmax
# cross-entropy. `loss_and_grads` runs forward and backward once and fills `model.grads`,
# a dict with the same names as `model.params`. We check every parameter tensor, and the
# gradient with respect to the input image.

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
# Every relative error is around 1e-9 or below: the hand-written backward passes agree
# with the definition of the derivative. (`tests/test_model.py` repeats these checks for
# every head type, position embedding and overlapping patches, and `tests/test_torch_parity.py`
# compares every gradient with PyTorch's autograd.)
#
# With correct gradients, we can train — notebook 05.
