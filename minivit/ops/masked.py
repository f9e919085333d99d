"""Masked patch prediction (paper §4.6, Appendix B.1.2): targets, corruption, loss.

The self-supervised task of the paper, in the spirit of BERT's masked language modelling:

1. corrupt 50% of the patch embeddings x_pⁱE of every image — of those, 80% are replaced
   by a learned [mask] embedding, 10% by a random *other* patch embedding, 10% are kept
   as they are (so the model cannot tell a kept patch from an uncorrupted one);
2. predict, from each corrupted patch's final representation, its 3-bit mean colour:
   every RGB channel's mean over the patch is quantised to 8 levels, giving 8³ = 512
   classes (class = r·64 + g·8 + b);
3. cross-entropy on the corrupted patches only.

Here the corruption is an op pair like every other op: ``corruption_forward(e, mask, plan)
-> (e', cache)`` and ``corruption_backward(de', cache) -> (de, dmask)``. The class
:class:`PatchCorruption` wraps it into the ``patch_transform`` hook of
:meth:`minivit.model.ViT.embed_forward`.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import ConfigError
from .patches import patches_forward

COLOR_BITS = 3
LEVELS = 2 ** COLOR_BITS                 # 8 levels per channel
NUM_CLASSES = LEVELS ** 3                # 512 mean-colour classes

KEEP, MASK, RANDOM, KEPT_CORRUPTED = 0, 1, 2, 3   # values of ``kind``


# ---------------------------------------------------------------------- targets
def mean_color_targets(images, P, S=None):
    """The 3-bit mean colour of every patch: the MPP prediction target (paper B.1.2).

    images: (B, H, W, 3), either integer pixels 0..255 (uint8) or floats already scaled
    to [0, 1] (never standardised images: the colour of a patch is a property of its raw
    pixels). P, S: patch size and stride (S = None: S = P), as in the model.

    Returns targets: (B, N) int64 in [0, 512), patches in the model's row-major grid order.
    Each channel's mean m ∈ [0, 1] is quantised to level ⌊8·m⌋ (8 equal-width bins, the
    top one closed: m = 1 → 7), and the class is r·64 + g·8 + b. So an all-black patch is
    0, all-white 511, pure red (255, 0, 0) 7·64 = 448.
    """
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ConfigError(f"mean-colour targets need RGB images (B, H, W, 3), got shape {x.shape}")
    if x.dtype.kind in "iu":
        if x.size and (x.min() < 0 or x.max() > 255):
            raise ConfigError(f"integer pixels must lie in 0..255, got range "
                              f"[{x.min()}, {x.max()}]")
        x = x.astype(np.float64) / 255.0
    elif x.dtype.kind == "f":
        if x.size and (not np.isfinite(x).all() or x.min() < 0.0 or x.max() > 1.0):
            raise ConfigError("float images must be scaled to [0, 1] (raw colours, not "
                              "standardised); pass uint8 pixels instead")
        x = x.astype(np.float64)
    else:
        raise ConfigError(f"images must be uint8 or float in [0, 1], got dtype {x.dtype}")
    patches, _ = patches_forward(x, P, S)                       # (B, N, P·P·3), (h, w, c)
    B, N, _ = patches.shape
    mean = patches.reshape(B, N, -1, 3).mean(axis=2)            # (B, N, 3) in [0, 1]
    # A tiny tolerance so a mean that is exactly k/8 in exact arithmetic is not pushed
    # into the bin below by rounding (e.g. 32 uint8 pixels averaging 0.125 − 1e-17).
    level = np.clip(np.floor(mean * LEVELS + 1e-9), 0, LEVELS - 1).astype(np.int64)
    return level[..., 0] * LEVELS * LEVELS + level[..., 1] * LEVELS + level[..., 2]


# ---------------------------------------------------------------------- corruption plan
class CorruptionPlan(NamedTuple):
    """Which patches are corrupted and how (all (B, N)).

    corrupted: bool, the patches whose colour is predicted (kind ≠ 0).
    kind: int8, 0 uncorrupted, 1 replaced by [mask], 2 replaced by another patch's
          embedding, 3 corrupted but kept unchanged.
    source: int64, for kind 2 the flat index b·N + n of the patch whose embedding is
          copied (any image of the batch, never the patch itself); −1 elsewhere.
    """

    corrupted: np.ndarray
    kind: np.ndarray
    source: np.ndarray


def corruption_plan(B, N, rng, mask_ratio=0.5, p_mask=0.8, p_random=0.1):
    """Draw which patches to corrupt and how (paper B.1.2: 50%; 80/10/10).

    B, N: batch and number of patches. rng: a ``numpy.random.Generator`` (or a seed).
    mask_ratio: fraction of each image's patches to corrupt — exactly round(ratio·N) per
    image, so every image contributes the same number of targets. p_mask, p_random: of
    the corrupted, the probability of [mask] and of a random other patch; the rest
    (1 − p_mask − p_random) are kept unchanged.

    Returns a :class:`CorruptionPlan` (corrupted (B, N) bool, kind (B, N) int8,
    source (B, N) int64).
    """
    if not 0.0 <= mask_ratio <= 1.0:
        raise ConfigError(f"mask_ratio must lie in [0, 1], got {mask_ratio}")
    if p_mask < 0 or p_random < 0 or p_mask + p_random > 1.0 + 1e-12:
        raise ConfigError(f"p_mask={p_mask} and p_random={p_random} must be >= 0 and sum to "
                          f"at most 1")
    if B < 1 or N < 1:
        raise ConfigError(f"need B >= 1 and N >= 1, got B={B}, N={N}")
    rng = np.random.default_rng(rng)
    k = int(round(mask_ratio * N))
    # k corrupted patches per image: the first k of a random permutation of each row.
    order = np.argsort(rng.random((B, N)), axis=1)
    corrupted = np.zeros((B, N), dtype=bool)
    np.put_along_axis(corrupted, order[:, :k], True, axis=1)
    u = rng.random((B, N))
    kind = np.zeros((B, N), dtype=np.int8)
    kind[corrupted & (u < p_mask)] = MASK
    kind[corrupted & (u >= p_mask) & (u < p_mask + p_random)] = RANDOM
    kind[corrupted & (u >= p_mask + p_random)] = KEPT_CORRUPTED
    source = np.full((B, N), -1, dtype=np.int64)
    idx = np.flatnonzero(kind == RANDOM)
    if idx.size:
        if B * N == 1:                     # no other patch exists: keep it instead
            kind.reshape(-1)[idx] = KEPT_CORRUPTED
        else:
            # Uniform over the B·N − 1 other patches: draw in [0, BN−1) and skip oneself.
            src = rng.integers(0, B * N - 1, size=idx.size)
            src += src >= idx
            source.reshape(-1)[idx] = src
    return CorruptionPlan(corrupted, kind, source)


# ---------------------------------------------------------------------- corruption op
def corruption_forward(e, mask_token, plan):
    """Apply a corruption plan to patch embeddings.

    e: (B, N, D) patch embeddings x_pⁱE; mask_token: (D,) the learned [mask] embedding;
    plan: a :class:`CorruptionPlan` for (B, N). Returns e': (B, N, D) and the cache.
    Kind 2 copies the *uncorrupted* embedding of its source patch.
    """
    B, N, D = e.shape
    kind = np.asarray(plan.kind)
    if kind.shape != (B, N):
        raise ConfigError(f"corruption plan is for {kind.shape}, embeddings are {(B, N)}")
    if np.shape(mask_token) != (D,):
        raise ConfigError(f"mask token must have shape ({D},), got {np.shape(mask_token)}")
    out = e.copy()
    is_mask = kind == MASK
    is_rand = kind == RANDOM
    out[is_mask] = mask_token
    out[is_rand] = e.reshape(B * N, D)[plan.source[is_rand]]
    return out, (is_mask, is_rand, plan.source[is_rand])


def corruption_backward(dout, cache):
    """dout: (B, N, D) gradient w.r.t. e'. Returns de: (B, N, D) and dmask: (D,).

    A replaced position passes nothing back to its own embedding; [mask] positions sum
    into dmask; a copied embedding receives the gradient of every position it was copied
    to (a scatter-add: one source can be drawn several times).
    """
    is_mask, is_rand, src = cache
    B, N, D = dout.shape
    de = dout.copy()
    de[is_mask] = 0.0
    de[is_rand] = 0.0
    np.add.at(de.reshape(B * N, D), src, dout[is_rand])
    dmask = dout[is_mask].sum(axis=0)
    return de, dmask


class PatchCorruption:
    """The corruption op as the model's ``patch_transform`` hook.

    mask_token: (D,) array, the learned [mask] embedding. The object keeps a reference to
    it (optimizer updates in place are seen at the next forward) and accumulates its
    gradient in ``self.grad`` (D,) at every backward (call :meth:`zero_grad` per step).

    Set the plan with :meth:`set_plan` (or :meth:`new_plan`) before each forward.
    ``forward(e) -> (e', cache)``; ``backward(de', cache) -> de`` — the single return the
    model's ``embed_backward`` expects; the (de, dmask) pair of the op itself is
    :func:`corruption_backward`.
    """

    def __init__(self, mask_token, rng=None, mask_ratio=0.5, p_mask=0.8, p_random=0.1,
                 backend=None):
        # backend: the model's backend object (its corruption_forward/backward run on
        # its arrays, e.g. on the GPU); None: these NumPy functions.
        self.be = backend
        self.mask_token = mask_token
        self.zero_grad()
        self.rng = np.random.default_rng(rng)
        self.mask_ratio, self.p_mask, self.p_random = mask_ratio, p_mask, p_random
        self.plan: CorruptionPlan | None = None

    def new_plan(self, B, N) -> CorruptionPlan:
        """Draw a fresh plan for (B, N) from this object's generator and use it."""
        self.plan = corruption_plan(B, N, self.rng, self.mask_ratio, self.p_mask,
                                    self.p_random)
        return self.plan

    def set_plan(self, plan: CorruptionPlan):
        self.plan = plan

    def zero_grad(self):
        self.grad = (self.be.zeros_like(self.mask_token) if self.be is not None
                     else np.zeros_like(np.asarray(self.mask_token)))

    def forward(self, e):
        """e: (B, N, D) → e': (B, N, D), cache."""
        if self.plan is None:
            raise RuntimeError("PatchCorruption.forward: no plan (call new_plan or set_plan)")
        f = corruption_forward if self.be is None else self.be.corruption_forward
        return f(e, self.mask_token, self.plan)

    def backward(self, dout, cache):
        """dout: (B, N, D) → de: (B, N, D); adds the [mask] gradient to ``self.grad``."""
        if self.be is None:
            de, dmask = corruption_backward(dout, cache)
            self.grad = self.grad + dmask
        else:
            de, dmask = self.be.corruption_backward(dout, cache)
            self.grad = self.be.add(self.grad, dmask)
        return de


# ---------------------------------------------------------------------- loss
def masked_patch_loss(logits, targets, corrupted):
    """Cross-entropy over the corrupted patches only (paper B.1.2).

    logits: (B, N, 512) mean-colour scores per patch; targets: (B, N) ints in [0, 512);
    corrupted: (B, N) bool. Returns (loss: float, the mean over the M corrupted patches of
    −log softmax(logits)[target], and dlogits: (B, N, 512) = (p − onehot)/M on corrupted
    patches, 0 elsewhere). With no corrupted patch the loss is 0 and dlogits 0.
    """
    B, N, K = logits.shape
    targets = np.asarray(targets)
    corrupted = np.asarray(corrupted, dtype=bool)
    if targets.shape != (B, N) or corrupted.shape != (B, N):
        raise ConfigError(f"targets {targets.shape} and corrupted {corrupted.shape} must "
                          f"both be {(B, N)}")
    if targets.dtype.kind not in "iu":
        raise ConfigError(f"targets must be integers, got dtype {targets.dtype}")
    dlogits = np.zeros_like(logits)
    M = int(corrupted.sum())
    if M == 0:
        return 0.0, dlogits
    z = logits[corrupted]                                   # (M, K)
    t = targets[corrupted]
    if t.min() < 0 or t.max() >= K:
        raise ConfigError(f"targets must lie in [0, {K - 1}], got [{t.min()}, {t.max()}]")
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = float(-logp[np.arange(M), t].sum() / M)
    g = np.exp(logp)
    g[np.arange(M), t] -= 1.0
    dlogits[corrupted] = g / M
    return loss, dlogits
