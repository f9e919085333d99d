"""The Vision Transformer, in the order of the paper (§3.1, Eq. 1–4).

    Eq. 1   z_0 = [x_class; x_p¹E; …; x_pᴺE] + E_pos              embed_forward
    Eq. 2   z'_ℓ = MSA(LN(z_{ℓ−1})) + z_{ℓ−1}                      block_forward
    Eq. 3   z_ℓ  = MLP(LN(z'_ℓ)) + z'_ℓ                             block_forward
    Eq. 4   y    = LN(z_L⁰)                                         head_forward
            logits = head(y)   (linear, or tanh pre-logits + linear)

With ``classifier="gap"`` (Appendix D.3) there is no class token: z_0 = [x_pE] + E_pos and
y = mean_n LN(z_L)_n. Dropout (after the embedding sum, the attention output projection and
each MLP dense, as in the official code) and stochastic depth (a per-sample mask on each
residual branch of Eq. 2–3) are active only in a training step, i.e. when ``forward`` gets
an ``rng_key``; their masks are a pure function of that key (the trainer passes
(seed, step)), so a resumed run draws exactly the masks the uninterrupted run drew.

Each stage has its backward pass right below it. The model does no arithmetic on arrays
itself: every op goes through the backend (NumPy, Numba or CUDA), so this one file drives
all of them. Parameters and gradients are flat, ordered dicts with the same names
(``blocks.3.attn.qkv.weight`` …), kernels stored (in, out) and used as ``x @ W``.
"""
from __future__ import annotations

import math

import numpy as np

from .backends import get_backend
from .config import ViTConfig
from .errors import ConfigError
from .ops.dropout import drop_path_mask, dropout_mask, patch_keep_indices
from .ops.embedding import sincos2d_pos_embed

# Tag mixed into the dropout generator's seed, so its stream never coincides with the
# data order / augmentation streams, which are also seeded from (seed, …).
_DROPOUT_STREAM = 0x44524F50            # "DROP"
_PATCH_KEEP_STREAM = 0x4B454550         # "KEEP": its own stream, so the dropout masks
                                        # of a config do not change when it is turned on


def drop_path_rates(config: ViTConfig) -> list[float]:
    """Stochastic-depth rate of each block: linear from 0 (block 0) to ``drop_path``
    (block L−1), the rule of Huang et al. 2016 as used by DeiT/timm."""
    L = config.depth
    return [config.drop_path * i / (L - 1) if L > 1 else 0.0 for i in range(L)]


def unsupported_on_cuda(config: ViTConfig, training: bool = True) -> str | None:
    """The first knob of ``config`` the cuda backend cannot run yet, or None.

    training=False: only the knobs that change evaluation. Dropout, stochastic depth and
    patch dropout act in training steps only, so a model trained with them on the CPU
    still evaluates and predicts on the GPU (the shipped default model is one)."""
    if config.classifier != "token":
        return f"classifier={config.classifier!r}"
    if config.pos_embed == "sincos2d":
        return "pos_embed='sincos2d'"
    if not training:
        return None
    if config.dropout:
        return "dropout"
    if config.drop_path:
        return "drop_path"
    if config.patch_keep < 1:
        return "patch_keep"
    return None


def refuse_on_cuda(config: ViTConfig, backend: str, training: bool = True):
    """Raise ConfigError naming the first knob of ``config`` that ``backend`` ("cuda")
    cannot run (see :func:`unsupported_on_cuda`); other backends run them all."""
    knob = unsupported_on_cuda(config, training) if backend == "cuda" else None
    if knob:
        raise ConfigError(f"{knob} is not supported on the cuda backend yet")


# ---------------------------------------------------------------------- initialisation
def _xavier_uniform(rng, fan_in, fan_out, shape):
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


def _lecun_normal(rng, fan_in, shape):
    # Flax's default kernel init: truncated normal (±2σ), variance 1/fan_in. The divisor
    # corrects the standard deviation lost by truncation.
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
    x = rng.standard_normal(size=shape)
    bad = np.abs(x) > 2.0
    while bad.any():                       # resample outside ±2σ (exact truncation)
        x[bad] = rng.standard_normal(size=int(bad.sum()))
        bad = np.abs(x) > 2.0
    return x * std


# Mimetic initialisation (Trockman & Kolter, "Mimetic Initialization of Self-Attention
# Layers", ICML 2023): the (α, β) of the paper's ViT experiments.
MIMETIC_QK = (0.7, 0.7)      # W_q·W_kᵀ ≈ α·Z + β·I: a token attends to similar tokens
MIMETIC_VO = (0.4, -0.4)     # W_v·W_o ≈ α·Z − β·I: trained ViTs' value-output products
                             # have a negative diagonal


def _mimetic_factors(rng, D, alpha, beta):
    """L, R: (D, D) with L @ R = alpha·Z + beta·I exactly, Z uniform with variance 1/D.

    The SVD M = U·S·Vᵀ is split evenly, L = U·√S and R = √S·Vᵀ, so the leading k columns
    of L times the leading k rows of R are the best rank-k approximation of M (the
    Eckart–Young theorem): what one head of width D_h = k can hold."""
    limit = math.sqrt(3.0 / D)                 # uniform(±√(3/D)) has variance 1/D
    M = alpha * rng.uniform(-limit, limit, size=(D, D)) + beta * np.eye(D)
    U, S, Vt = np.linalg.svd(M)
    root = np.sqrt(S)
    return U * root, root[:, None] * Vt


def _mimetic_attention(rng, D, H):
    """qkv: (D, 3D) and proj: (D, D) kernels (stored (in, out), used as x @ W) whose
    products mimic a trained layer's. Head h (columns h·D_h … (h+1)·D_h of q and of k)
    gets its own Z: q_h·k_hᵀ = x_i·(W_q^h·W_k^hᵀ)·x_jᵀ, the rank-D_h part of 0.7·Z_h + 0.7·I.
    One Z for V·O, exactly: Σ_h W_v^h·W_o^h = W_v·W_o = 0.4·Z − 0.4·I."""
    Dh = D // H
    Wq, Wk = np.empty((D, D)), np.empty((D, D))
    for h in range(H):
        L, R = _mimetic_factors(rng, D, *MIMETIC_QK)
        cols = slice(h * Dh, (h + 1) * Dh)
        Wq[:, cols] = L[:, :Dh]
        Wk[:, cols] = R[:Dh, :].T
    Wv, Wo = _mimetic_factors(rng, D, *MIMETIC_VO)
    return np.concatenate([Wq, Wk, Wv], axis=1), Wo


def init_params(config: ViTConfig, seed=0) -> dict[str, np.ndarray]:
    """Official-style initialisation (REFERENCE.md §2), float64 host arrays.

    Position embeddings normal(0.02); class token zeros; patch embedding and pre-logits
    LeCun normal (Flax's default for conv/dense); attention and MLP kernels Xavier-uniform
    (each of q, k, v as its own D×D kernel); MLP biases normal(1e-6); LayerNorm 1/0;
    other biases and the head zero. With ``attn_init="mimetic"`` the attention kernels
    are drawn by :func:`_mimetic_attention` instead (from a second generator, so every
    other parameter is the same as with Xavier).
    """
    rng = np.random.default_rng(seed)
    D = config.dim
    p = {}
    for name, shape in config.param_shapes().items():
        if name == "patch_embed.weight":
            p[name] = _lecun_normal(rng, config.patch_dim, shape)
        elif name.startswith("pos_embed"):
            p[name] = rng.normal(0.0, 0.02, size=shape)
        elif name.endswith("attn.qkv.weight"):
            p[name] = np.concatenate([_xavier_uniform(rng, D, D, (D, D)) for _ in range(3)],
                                     axis=1)
        elif name.endswith("attn.proj.weight") or name.endswith(("fc1.weight", "fc2.weight")):
            p[name] = _xavier_uniform(rng, shape[0], shape[1], shape)
        elif name.endswith(("fc1.bias", "fc2.bias")):
            p[name] = rng.normal(0.0, 1e-6, size=shape)
        elif name == "pre_logits.weight":
            p[name] = _lecun_normal(rng, D, shape)
        elif name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
            p[name] = np.ones(shape)
        else:                               # biases, class token, head
            p[name] = np.zeros(shape)
    if config.attn_init == "mimetic":      # replaces the Xavier draws, after them
        mimetic_rng = np.random.default_rng([seed, 1])
        for i in range(config.depth):
            qkv, proj = _mimetic_attention(mimetic_rng, D, config.heads)
            p[f"blocks.{i}.attn.qkv.weight"], p[f"blocks.{i}.attn.proj.weight"] = qkv, proj
    return p


class ViT:
    """A Vision Transformer with hand-written forward and backward passes.

    config: a :class:`ViTConfig` (or a preset name). seed: initialisation seed.
    dtype: "float32" (training) or "float64" (gradient checks).
    backend: "numpy" (reference), "numba" (CPU JIT) or "cuda" (numba.cuda), or a backend
    object. ``params`` and ``grads`` are dicts of backend arrays with the same names.
    """

    def __init__(self, config, seed=0, dtype="float32", backend="numpy", params=None):
        if isinstance(config, str):
            config = ViTConfig.preset(config)
        if not isinstance(config, ViTConfig):
            raise ConfigError(f"config must be a ViTConfig or a preset name, got {config!r}")
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise ConfigError(f"dtype must be float32 or float64, got {dtype!r}")
        self.config = config
        self.dtype = np.dtype(dtype)
        self.be = get_backend(backend)
        refuse_on_cuda(config, getattr(self.be, "name", ""), training=False)
        self._fixed_pos = None
        if config.pos_embed == "sincos2d":
            # fixed E_pos (no parameters); the class token, if any, gets a zero row, as in
            # big_vision (its class token is concatenated after the sum)
            pos = sincos2d_pos_embed(*config.grid, config.dim)
            if config.classifier == "token":
                pos = np.concatenate([np.zeros((1, config.dim)), pos], axis=0)
            self._fixed_pos = self.be.asarray(pos[None], dtype=self.dtype)
        self._masks: dict = {}
        self.last_masks: dict = {}
        host = init_params(config, seed) if params is None else params
        self.params = {}
        self.load_params(host)
        self.grads: dict = {}
        self._cache: dict = {}
        self.keep_attention = False
        self.last_attention: list = []
        # True turns patch dropout off in training steps: the trainer's last
        # ``full_token_epochs`` train on every patch token (TrainSettings.full_token_epochs)
        self.full_tokens = False

    # ------------------------------------------------------------------ parameters
    def load_params(self, host_params: dict, strict=True):
        """Copy host arrays into the model, checking every name and shape.

        host_params: name → array. Raises ConfigError naming a missing, unexpected,
        mis-shaped, non-float or non-finite (NaN/inf) key.
        """
        shapes = self.config.param_shapes()
        if strict:
            missing = [k for k in shapes if k not in host_params]
            extra = [k for k in host_params if k not in shapes]
            if missing:
                raise ConfigError(f"missing parameter(s): {', '.join(missing)}")
            if extra:
                raise ConfigError(f"unexpected parameter(s): {', '.join(extra)}")
        for name, shape in shapes.items():
            if name not in host_params:
                continue
            a = np.asarray(host_params[name])
            if a.shape != shape:
                raise ConfigError(f"parameter {name} has shape {a.shape}, expected {shape}")
            if a.dtype.kind != "f":
                raise ConfigError(f"parameter {name} has dtype {a.dtype}, expected floats")
            if not np.isfinite(a).all():
                raise ConfigError(f"parameter {name} contains NaN or inf")
            self.params[name] = self.be.asarray(a, dtype=self.dtype)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Host copies of every parameter, in model order."""
        return {k: np.array(self.be.to_host(v)) for k, v in self.params.items()}

    def num_params(self) -> int:
        """Number of scalars actually allocated."""
        return int(sum(int(np.prod(v.shape)) for v in self.params.values()))

    # ------------------------------------------------------------------ input checks
    def check_images(self, images):
        """images: (B, H, W, C) float, already normalised. Returns them as a backend array
        of the model dtype. Raises ValueError naming the shape/dtype problem."""
        c = self.config
        a = images if not isinstance(images, np.ndarray) else images
        shape = getattr(a, "shape", None)
        if shape is None or len(shape) != 4:
            raise ConfigError(f"images must be (B, H, W, C), got shape {shape}")
        B, H, W, C = shape
        if H != c.image_size or W != c.image_size:
            raise ConfigError(f"image size {H}x{W} does not match the config's "
                              f"{c.image_size}x{c.image_size}")
        if C != c.channels:
            raise ConfigError(f"images have {C} channels, the config expects {c.channels}")
        if B < 1:
            raise ConfigError("empty batch: B = 0")
        if isinstance(a, np.ndarray):
            if a.dtype.kind not in "f":
                raise ConfigError(
                    f"images must be normalised floats, got dtype {a.dtype}; use "
                    f"minivit.data.normalize (uint8 pixels are never scaled silently)")
            if not np.isfinite(a).all():
                raise ConfigError("images contain NaN or inf")
        return self.be.asarray(a, dtype=self.dtype)

    # ------------------------------------------------------------------ Eq. 1
    def embed_forward(self, images, patch_transform=None):
        """Eq. 1. images: (B, H, W, C) → z_0: (B, N+1, D).

        patch_transform: optional object with ``forward(e) -> (e', cache)`` and
        ``backward(de', cache) -> de`` applied to the patch embeddings x_pE (B, N, D)
        before the class token and E_pos are added (masked patch prediction uses it).
        """
        be, c, p, cache = self.be, self.config, self.params, self._cache
        x = self.check_images(images)
        patches, cache["patches"] = be.patches_forward(x, c.patch_size, c.S)  # (B, N, P²C)
        e, cache["embed"] = be.linear_forward(patches, p["patch_embed.weight"],
                                              p["patch_embed.bias"])           # x_p E
        if patch_transform is not None:
            e, cache["patch_transform"] = patch_transform.forward(e)
        cache["patch_transform_obj"] = patch_transform
        pos = self._pos_embed_forward()
        if c.classifier == "token":
            z0, cache["tokens"] = be.tokens_forward(e, p["cls_token"], pos)   # + E_pos
        else:                                                              # GAP: no x_class
            z0, cache["tokens"] = be.pos_add_forward(e, pos)
        keep = self._masks.get("keep")
        if keep is not None:                   # patch dropout: after E_pos, so kept tokens
            z0, cache["keep"] = be.keep_tokens_forward(z0, keep)   # know their place
        mask = self._masks.get("embed")
        if mask is not None:                                  # dropout after the sum
            z0, _ = be.dropout_forward(z0, mask)
        return z0

    def _pos_embed_forward(self):
        p, c = self.params, self.config
        if c.pos_embed == "learned-1d":
            return p["pos_embed"]
        if c.pos_embed == "learned-2d":
            pos, self._cache["pos2d"] = self.be.pos2d_forward(
                p.get("pos_embed_cls"), p["pos_embed_row"], p["pos_embed_col"])
            return pos
        return self._fixed_pos                # sincos2d (fixed) or None

    def embed_backward(self, dz0, need_dimages=False):
        """dz0: (B, N+1, D), or (B, K+1, D) after patch dropout. Fills the gradients of
        Eq. 1's parameters; returns dimages (B, H, W, C) when need_dimages, else None."""
        be, cache, g, c = self.be, self._cache, self.grads, self.config
        mask = self._masks.get("embed")
        if mask is not None:
            dz0 = be.dropout_backward(dz0, mask)
        if "keep" in cache:
            dz0 = be.keep_tokens_backward(dz0, cache["keep"])
        if c.classifier == "token":
            de, g["cls_token"], dpos = be.tokens_backward(dz0, cache["tokens"])
        else:
            de, dpos = be.pos_add_backward(dz0, cache["tokens"])
        if c.pos_embed == "learned-1d":
            g["pos_embed"] = dpos
        elif c.pos_embed == "learned-2d":
            dcls, g["pos_embed_row"], g["pos_embed_col"] = be.pos2d_backward(dpos, cache["pos2d"])
            if c.classifier == "token":
                g["pos_embed_cls"] = dcls
        pt = cache["patch_transform_obj"]
        if pt is not None:
            de = pt.backward(de, cache["patch_transform"])
        dpatches, g["patch_embed.weight"], g["patch_embed.bias"] = be.linear_backward(
            de, cache["embed"], need_dx=need_dimages)
        if need_dimages:
            return be.patches_backward(dpatches, cache["patches"])
        return None

    # ------------------------------------------------------------------ Eq. 2–3
    def block_forward(self, i, z):
        """Encoder block i. z: (B, N+1, D) → (B, N+1, D). Pre-norm residual branches.
        In a training step, dropout and the stochastic-depth mask multiply each branch
        before its residual add (masks from :meth:`draw_masks`)."""
        be, c, p = self.be, self.config, self.params
        n = f"blocks.{i}."
        bc = {}
        mk = self._masks
        # Eq. 2: z' = MSA(LN(z)) + z
        h, bc["ln1"] = be.layernorm_forward(z, p[n + "norm1.weight"], p[n + "norm1.bias"],
                                            c.ln_eps)
        qkv, bc["qkv"] = be.linear_forward(h, p[n + "attn.qkv.weight"], p[n + "attn.qkv.bias"])
        a, bc["attn"] = be.mhsa_core_forward(qkv, c.heads)      # softmax(q kᵀ/√D_h) v
        if self.keep_attention:
            self.last_attention.append(be.attention_probs(bc["attn"]))
        o, bc["proj"] = be.linear_forward(a, p[n + "attn.proj.weight"], p[n + "attn.proj.bias"])
        if n + "attn" in mk:                        # dropout · drop path of the MSA branch
            o, _ = be.dropout_forward(o, mk[n + "attn"])
        z = be.add(z, o)
        # Eq. 3: z = MLP(LN(z')) + z',  MLP = fc2(GELU(fc1(·)))
        h, bc["ln2"] = be.layernorm_forward(z, p[n + "norm2.weight"], p[n + "norm2.bias"],
                                            c.ln_eps)
        u, bc["fc1"] = be.linear_gelu_forward(h, p[n + "mlp.fc1.weight"],
                                              p[n + "mlp.fc1.bias"], c.gelu)
        if n + "fc1" in mk:                         # dropout after GELU(fc1)
            u, _ = be.dropout_forward(u, mk[n + "fc1"])
        m, bc["fc2"] = be.linear_forward(u, p[n + "mlp.fc2.weight"], p[n + "mlp.fc2.bias"])
        if n + "mlp" in mk:                         # dropout · drop path of the MLP branch
            m, _ = be.dropout_forward(m, mk[n + "mlp"])
        self._cache[f"block{i}"] = bc
        return be.add(z, m)

    def block_backward(self, i, dz):
        """dz: (B, N+1, D), gradient w.r.t. block i's output. Returns the gradient w.r.t.
        its input and fills the block's parameter gradients. A residual passes its
        gradient through unchanged and adds the branch's."""
        be, g = self.be, self.grads
        n = f"blocks.{i}."
        bc = self._cache[f"block{i}"]
        mk = self._masks
        # Eq. 3 backward
        dm = be.dropout_backward(dz, mk[n + "mlp"]) if n + "mlp" in mk else dz
        du, g[n + "mlp.fc2.weight"], g[n + "mlp.fc2.bias"] = be.linear_backward(dm, bc["fc2"])
        if n + "fc1" in mk:
            du = be.dropout_backward(du, mk[n + "fc1"])
        dh, g[n + "mlp.fc1.weight"], g[n + "mlp.fc1.bias"] = be.linear_gelu_backward(du, bc["fc1"])
        dx, g[n + "norm2.weight"], g[n + "norm2.bias"] = be.layernorm_backward(dh, bc["ln2"])
        dz = be.add(dz, dx)
        # Eq. 2 backward
        do = be.dropout_backward(dz, mk[n + "attn"]) if n + "attn" in mk else dz
        da, g[n + "attn.proj.weight"], g[n + "attn.proj.bias"] = be.linear_backward(do, bc["proj"])
        dqkv = be.mhsa_core_backward(da, bc["attn"])
        dh, g[n + "attn.qkv.weight"], g[n + "attn.qkv.bias"] = be.linear_backward(dqkv, bc["qkv"])
        dx, g[n + "norm1.weight"], g[n + "norm1.bias"] = be.layernorm_backward(dh, bc["ln1"])
        return be.add(dz, dx)

    def encoder_forward(self, z):
        """Eq. 2–3 for ℓ = 1 … L. z: (B, N+1, D) → z_L: (B, N+1, D)."""
        self.last_attention = []
        for i in range(self.config.depth):
            z = self.block_forward(i, z)
        return z

    def encoder_backward(self, dz):
        """dz: (B, N+1, D) w.r.t. z_L → gradient w.r.t. z_0."""
        for i in reversed(range(self.config.depth)):
            dz = self.block_backward(i, dz)
        return dz

    # ------------------------------------------------------------------ Eq. 4 + head
    def head_forward(self, zL):
        """Eq. 4 and the head. zL: (B, N+1, D) → logits: (B, classes)."""
        be, c, p, cache = self.be, self.config, self.params, self._cache
        cache["zL_shape"] = zL.shape
        if c.classifier == "token":
            t = be.take_cls(zL)                                     # z_L⁰
            y, cache["ln_f"] = be.layernorm_forward(t, p["norm.weight"], p["norm.bias"],
                                                    c.ln_eps)
        else:               # GAP: LayerNorm on every token, then their mean (official code)
            t, cache["ln_f"] = be.layernorm_forward(zL, p["norm.weight"], p["norm.bias"],
                                                    c.ln_eps)
            y, cache["gap"] = be.mean_tokens_forward(t)
        if c.head_type == "pre-logits":
            y, cache["pre"] = be.linear_forward(y, p["pre_logits.weight"], p["pre_logits.bias"])
            y, cache["tanh"] = be.tanh_forward(y)
        logits, cache["head"] = be.linear_forward(y, p["head.weight"], p["head.bias"])
        return logits

    def head_backward(self, dlogits):
        """dlogits: (B, classes) → gradient w.r.t. z_L: (B, N+1, D)."""
        be, c, g, cache = self.be, self.config, self.grads, self._cache
        dy, g["head.weight"], g["head.bias"] = be.linear_backward(dlogits, cache["head"])
        if c.head_type == "pre-logits":
            dy = be.tanh_backward(dy, cache["tanh"])
            dy, g["pre_logits.weight"], g["pre_logits.bias"] = be.linear_backward(dy, cache["pre"])
        if c.classifier == "gap":
            dt = be.mean_tokens_backward(dy, cache["gap"])
            dz, g["norm.weight"], g["norm.bias"] = be.layernorm_backward(dt, cache["ln_f"])
            return dz
        dt, g["norm.weight"], g["norm.bias"] = be.layernorm_backward(dy, cache["ln_f"])
        return be.take_cls_backward(dt, cache["zL_shape"])

    # ------------------------------------------------------------------ dropout masks
    def draw_masks(self, rng_key, batch, first_row=0) -> dict:
        """The dropout and stochastic-depth masks of one training step.

        rng_key: tuple of ints, e.g. (seed, step). Image b's masks come from a generator
        seeded by (rng_key, first_row + b), its index in the global batch: they are a
        pure function of the key, the config and that index (never of global random
        state or of how the batch is split), so resume is bit-exact and K MPI ranks,
        each given its shard's ``first_row``, draw exactly the masks of one process.
        batch: B. Returns site → multiplier array in the model dtype (0 or 1/(1−p)):
        ``embed`` (B, T, D); per block ``blocks.i.attn`` (B, T, D) and ``blocks.i.mlp``
        (B, T, D) — dropout times the block's drop-path mask —, and ``blocks.i.fc1``
        (B, T, M); with drop_path alone the branch masks are (B, 1, 1). T = K + 1 tokens
        (K with GAP; K = N without patch dropout). Sites with rate 0 are absent. With
        patch_keep < 1 also ``keep``: host int64 (B, T), the token positions each image
        keeps (:func:`minivit.ops.patch_keep_indices`, from a stream of its own), unless
        ``self.full_tokens`` (then T is every token, as in evaluation).
        """
        c, dt = self.config, self.dtype
        drop_patches = self._drops_patches()
        T, D, M = (c.train_num_tokens if drop_patches else c.num_tokens), c.dim, c.mlp_dim
        sites = []                  # (name, one image's dropout shape or None, path rate)
        if c.dropout:
            sites.append(("embed", (T, D), 0.0))
        for i, rate in enumerate(drop_path_rates(c)):
            for site, width in (("attn", D), ("fc1", M), ("mlp", D)):
                path = rate if site != "fc1" else 0.0       # drop path: whole branches only
                if c.dropout or path:
                    sites.append((f"blocks.{i}.{site}", (T, width) if c.dropout else None,
                                  path))
        masks = {name: np.empty((batch, *(shape or (1, 1))), dt) for name, shape, _ in sites}
        key = [_DROPOUT_STREAM, *(int(k) for k in rng_key)]
        for b in range(batch):
            rng = np.random.default_rng(key + [int(first_row) + b])
            for name, shape, path in sites:
                m = dropout_mask(rng, shape, c.dropout, dt) if shape else np.ones((1, 1), dt)
                if path:
                    m = m * drop_path_mask(rng, 1, path, dt)[0]
                masks[name][b] = m
        if drop_patches:
            token = c.classifier == "token"
            masks["keep"] = np.stack([
                patch_keep_indices(np.random.default_rng(
                    [_PATCH_KEEP_STREAM, *(int(k) for k in rng_key), int(first_row) + b]),
                    c.num_patches, c.train_num_patches, token) for b in range(batch)])
        return masks

    def _drops_patches(self) -> bool:
        """Whether a training step keeps only some patch tokens (patch dropout)."""
        return self.config.patch_keep < 1 and not self.full_tokens

    # ------------------------------------------------------------------ whole model
    def clear_cache(self):
        """Drop the activations kept for a backward pass (after an evaluation, or to free
        memory) and the dropout masks. The only way code outside the model resets its
        state; the next ``backward`` needs a new ``forward``."""
        self._cache = {}
        self._masks = {}

    def begin_forward(self, batch, keep_attention=False, rng_key=None, first_row=0):
        """Reset the state of a forward pass over ``batch`` images (for callers that run
        the stages themselves, e.g. masked patch prediction). rng_key, first_row: see
        :meth:`forward`."""
        self.keep_attention = keep_attention
        self.clear_cache()
        self.last_masks = {}
        c = self.config
        if rng_key is not None and (c.dropout or c.drop_path or self._drops_patches()):
            refuse_on_cuda(c, getattr(self.be, "name", ""))     # trainers refuse up front
            host = self.draw_masks(rng_key, batch, first_row)
            self.last_masks = host
            self._masks = {k: v if k == "keep" else self.be.asarray(v, dtype=self.dtype)
                           for k, v in host.items()}

    def forward(self, images, keep_attention=False, rng_key=None, first_row=0):
        """images: (B, H, W, C) normalised floats → logits: (B, classes) (backend array).

        keep_attention: also store every layer's attention matrices (B, H, N+1, N+1) as
        host arrays in ``self.last_attention`` (for inspection).
        rng_key: None (evaluation: no dropout, no stochastic depth, every patch token) or
        a tuple of ints, e.g. (seed, step), for a training step: the masks of
        :meth:`draw_masks` are used (and kept in ``self.last_masks`` as host arrays) when
        the config has dropout, drop_path or patch_keep < 1. first_row: the index of
        ``images[0]`` in the global batch (an MPI rank's shard), which keys each image's
        masks.
        """
        self.begin_forward(len(images), keep_attention, rng_key, first_row)
        z0 = self.embed_forward(images)
        zL = self.encoder_forward(z0)
        return self.head_forward(zL)

    def backward(self, dlogits, need_dimages=False):
        """dlogits: (B, classes), gradient of the loss w.r.t. the last forward's logits.
        Fills ``self.grads`` (same names as ``self.params``); returns dimages
        (B, H, W, C) when need_dimages, else None."""
        if "head" not in self._cache:
            raise RuntimeError("backward() called before forward()")
        dzL = self.head_backward(self.be.asarray(dlogits, dtype=self.dtype))
        dz0 = self.encoder_backward(dzL)
        return self.embed_backward(dz0, need_dimages)

    def loss_and_grads(self, images, labels, smoothing=0.0, rng_key=None, first_row=0):
        """One forward and backward pass with softmax cross-entropy.

        images: (B, H, W, C); labels: (B,) ints or (B, classes) soft targets.
        rng_key, first_row: see :meth:`forward` (a training step with dropout passes
        (seed, step) and its shard's first row).
        Returns (loss: float, logits: host (B, classes)); gradients land in ``self.grads``.
        """
        logits = self.forward(images, rng_key=rng_key, first_row=first_row)
        loss, dlogits = self.be.softmax_cross_entropy(logits, labels, smoothing)
        self.backward(dlogits)
        return loss, self.be.to_host(logits)

    def predict_proba(self, images, batch_size=256):
        """images: (B, H, W, C) normalised → class probabilities: (B, classes) host float."""
        out = []
        for s in range(0, len(images), batch_size):
            logits = np.asarray(self.be.to_host(self.forward(images[s:s + batch_size])),
                                dtype=np.float64)
            self.clear_cache()
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            out.append(e / e.sum(axis=1, keepdims=True))
        return np.concatenate(out, axis=0)

    # ------------------------------------------------------------------ description
    def parameter_counts(self) -> dict[str, int]:
        """Scalars per part of the model, in the order of the paper's equations:
        ``patch embedding (E)`` (Eq. 1), ``class token``, ``position embeddings
        (E_pos)``, then per block ``block i: attention (MSA)`` (Eq. 2, with its LN),
        ``block i: MLP`` (Eq. 3, with its LN), ``final LayerNorm`` (Eq. 4) and ``head``
        (with the pre-logits layer when there is one). Blocks are numbered from 1.
        The counts add up to :meth:`num_params`."""
        counts: dict[str, int] = {}
        for name, v in self.params.items():
            parts = name.split(".")
            if parts[0] == "patch_embed":
                part = "patch embedding (E)"
            elif parts[0] == "cls_token":
                part = "class token"
            elif parts[0].startswith("pos_embed"):
                part = "position embeddings (E_pos)"
            elif parts[0] == "blocks":
                sub = "attention (MSA)" if parts[2] in ("norm1", "attn") else "MLP"
                part = f"block {int(parts[1]) + 1}: {sub}"
            elif parts[0] == "norm":
                part = "final LayerNorm"
            else:                           # head, pre_logits
                part = "head"
            counts[part] = counts.get(part, 0) + int(np.prod(v.shape))
        return counts

    def summary(self) -> str:
        """A table of the model: its shape (image, P, N, D, depth, heads, MLP width,
        classes), the parameters of every part (:meth:`parameter_counts`), the total,
        dtype and backend. Returns the text."""
        c = self.config
        lines = [f"ViT: {c.image_size}x{c.image_size}x{c.channels} images, "
                 f"P={c.patch_size} (stride {c.S}) -> N={c.num_patches} patches, D={c.dim}, "
                 f"depth {c.depth}, {c.heads} heads (D_h={c.dim // c.heads}), "
                 f"MLP {c.mlp_dim}, {c.num_classes} classes",
                 f"{'part':<32s}{'parameters':>12s}"]
        for part, n in self.parameter_counts().items():
            lines.append(f"{part:<32s}{n:>12,d}")
        lines.append(f"{'total':<32s}{self.num_params():>12,d}")
        lines.append(f"dtype {self.dtype}, backend {getattr(self.be, 'name', type(self.be).__name__)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        c = self.config
        return (f"ViT(image_size={c.image_size}, patch_size={c.patch_size}, dim={c.dim}, "
                f"depth={c.depth}, heads={c.heads}, mlp_dim={c.mlp_dim}, "
                f"num_classes={c.num_classes}, params={self.num_params():,}, "
                f"dtype={self.dtype}, backend={getattr(self.be, 'name', type(self.be).__name__)})")
