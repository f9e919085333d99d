"""Import and export of the official ViT checkpoints (google-research/vision_transformer).

The official ``.npz`` files (REFERENCE.md §5) store Flax parameters under
slash-separated names, kernels (in, out), attention kernels with a head axis:

    embedding/kernel            (P, P, C, D)  HWIO conv kernel → E: (P·P·C, D), rows (h, w, c)
    cls                         (1, 1, D)
    Transformer/posembed_input/pos_embedding   (1, 1 + N, D)
    Transformer/encoderblock_i/LayerNorm_0           → blocks.i.norm1
    Transformer/encoderblock_i/MultiHeadDotProductAttention_1/{query,key,value}
        kernel (D, H, D_h), bias (H, D_h)            → blocks.i.attn.qkv, columns [q|k|v]
    Transformer/encoderblock_i/MultiHeadDotProductAttention_1/out
        kernel (H, D_h, D), bias (D,)                → blocks.i.attn.proj
    Transformer/encoderblock_i/LayerNorm_2           → blocks.i.norm2
    Transformer/encoderblock_i/MlpBlock_3/Dense_{0,1} → blocks.i.mlp.fc{1,2}
    Transformer/encoder_norm    → norm
    pre_logits/{kernel,bias}    (only in some checkpoints) → pre_logits
    head/{kernel,bias}          → head

Newer files number the sub-modules ``MultiHeadDotProductAttention_0``, ``LayerNorm_1``,
``MlpBlock_0`` and/or prefix every key with ``params/``; both are accepted.

Models with ``classifier='gap'`` (global average pooling, paper Appendix D.3) have no
``cls`` key and N (not 1 + N) position embeddings; they load as ``classifier="gap"``.
The big_vision layout (``big_vision/models/vit.py``) keeps the position embedding at the
top level, ``pos_embedding`` (1, N, D), and adds it *before* the class token (if any) is
concatenated: the class token then gets no position embedding, i.e. a zero row of
minivit's (1, 1 + N, D) table. The flattening
of the conv kernel in (h, w, c) order is exactly minivit's patch flattening, so E needs a
reshape and no permutation. Loading such a file and getting the same logits as the
original model is the strongest end-to-end check of Eq. 1–4 (the nanoGPT lesson).
"""
from __future__ import annotations

import numpy as np

from minivit.checkpoint import atomic_write_npz, read_npz
from minivit.config import ViTConfig
from minivit.errors import CheckpointError, ConfigError

# sub-module names of one encoder block: (ln1, attention, ln2, mlp)
NUMBERINGS = {
    "old": ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"),
    "new": ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0"),
}
POS_KEY = "Transformer/posembed_input/pos_embedding"
BV_POS_KEY = "pos_embedding"             # big_vision: top level, N rows, no class token row


def _strip_prefix(arrays: dict) -> dict:
    """Drop a leading ``params/`` from every key that has it (newer checkpoints)."""
    return {(k[len("params/"):] if k.startswith("params/") else k): v for k, v in arrays.items()}


def _numbering(arrays: dict, path) -> tuple[str, ...]:
    blk = "Transformer/encoderblock_0/"
    for names in NUMBERINGS.values():
        if blk + names[1] + "/query/kernel" in arrays and blk + names[3] + "/Dense_0/kernel" in arrays:
            return names
    raise CheckpointError(
        f"{path}: missing key {blk}MultiHeadDotProductAttention_1/query/kernel (or the newer "
        f"{blk}MultiHeadDotProductAttention_0/query/kernel): not an official ViT checkpoint?")


def _pos_layout(arrays: dict, path) -> str:
    """Which key holds E_pos: ``POS_KEY`` (vit_jax) or ``BV_POS_KEY`` (big_vision)."""
    for k in (POS_KEY, BV_POS_KEY):
        if k in arrays:
            return k
    raise CheckpointError(f"{path}: missing key {POS_KEY} (or big_vision's top-level "
                          f"{BV_POS_KEY}); models with fixed sine-cosine position "
                          f"embeddings, which store none, cannot be imported yet")


def infer_config(arrays: dict, path="checkpoint") -> ViTConfig:
    """Infer the architecture from the shapes of an official checkpoint's arrays
    (keys without the ``params/`` prefix). P from the embedding kernel, D, the depth from
    the number of encoder blocks, the heads from the (D, H, D_h) query kernel, the MLP
    width, the classes, the head type (pre-logits when ``pre_logits/kernel`` is present);
    GELU "tanh" and LayerNorm ε 1e-6 as in the official model. The image size is the one
    the position embeddings were trained for (grid · P)."""
    names = _numbering(arrays, path)
    if any(k.startswith("MAPHead") for k in arrays):
        raise CheckpointError(f"{path}: has an attention-pooling head (MAPHead, "
                              f"pool_type='map'); only the class token and GAP are supported")
    for k in ("embedding/kernel", "head/kernel"):
        if k not in arrays:
            raise CheckpointError(f"{path}: missing key {k}")
    pos_key = _pos_layout(arrays, path)
    token = "cls" in arrays                  # no class token: a GAP model
    kern = arrays["embedding/kernel"]
    if kern.ndim != 4 or kern.shape[0] != kern.shape[1]:
        raise CheckpointError(f"{path}: embedding/kernel has shape {kern.shape}, expected "
                              f"(P, P, C, D)")
    P, _, C, D = kern.shape
    depth = 0
    while f"Transformer/encoderblock_{depth}/{names[1]}/query/kernel" in arrays:
        depth += 1
    q = arrays[f"Transformer/encoderblock_0/{names[1]}/query/kernel"]
    if q.ndim != 3 or q.shape[0] != D:
        raise CheckpointError(f"{path}: Transformer/encoderblock_0/{names[1]}/query/kernel has "
                              f"shape {q.shape}, expected ({D}, heads, D_h)")
    heads = q.shape[1]
    fc1 = arrays[f"Transformer/encoderblock_0/{names[3]}/Dense_0/kernel"]
    if fc1.ndim != 2 or fc1.shape[0] != D:
        raise CheckpointError(f"{path}: Transformer/encoderblock_0/{names[3]}/Dense_0/kernel has "
                              f"shape {fc1.shape}, expected ({D}, mlp_dim)")
    head = arrays["head/kernel"]
    if head.ndim != 2 or head.shape[0] != D:
        raise CheckpointError(f"{path}: head/kernel has shape {head.shape}, expected ({D}, classes)")
    pos = arrays[pos_key]
    # rows of E_pos: 1 + N in vit_jax with a class token; N with GAP or in big_vision
    with_cls_row = token and pos_key == POS_KEY
    rows = "1 + N" if with_cls_row else "N"
    if pos.ndim != 3 or pos.shape[0] != 1 or pos.shape[2] != D:
        raise CheckpointError(f"{path}: {pos_key} has shape {pos.shape}, expected (1, {rows}, {D})")
    N = pos.shape[1] - int(with_cls_row)
    g = int(round(np.sqrt(N)))
    if N < 1 or g * g != N:
        raise CheckpointError(f"{path}: {pos_key} holds N={N} patch embeddings "
                              f"({'with' if token else 'without'} a class token), not a "
                              f"square grid")
    try:
        return ViTConfig(image_size=g * P, channels=C, patch_size=P, dim=D, depth=depth,
                         heads=heads, mlp_dim=fc1.shape[1], num_classes=head.shape[1],
                         head_type="pre-logits" if "pre_logits/kernel" in arrays else "linear",
                         gelu="tanh", ln_eps=1e-6, pos_embed="learned-1d",
                         classifier="token" if token else "gap")
    except ConfigError as e:
        raise CheckpointError(f"{path}: inferred an invalid config: {e}") from None


def official_to_params(arrays: dict, config: ViTConfig, path="checkpoint") -> dict:
    """Map official arrays (no ``params/`` prefix) to minivit parameter names, checking
    every key's presence and shape against ``config``. Returns name → float array in
    ``config.param_shapes()`` order. Raises CheckpointError naming the key."""
    names = _numbering(arrays, path)
    D, H, Dh, M = config.dim, config.heads, config.head_dim, config.mlp_dim
    P, C = config.patch_size, config.channels

    def get(key, shape):
        if key not in arrays:
            raise CheckpointError(f"{path}: missing key {key}")
        a = arrays[key]
        if a.shape != tuple(shape):
            raise CheckpointError(f"{path}: {key} has shape {a.shape}, expected {tuple(shape)}")
        if a.dtype.kind != "f":
            raise CheckpointError(f"{path}: {key} has dtype {a.dtype}, expected floats")
        return a

    p = {
        # HWIO (P, P, C, D) → (P·P·C, D): row-major flattening = (h, w, c) patch order.
        "patch_embed.weight": get("embedding/kernel", (P, P, C, D)).reshape(P * P * C, D),
        "patch_embed.bias": get("embedding/bias", (D,)),
    }
    token = config.classifier == "token"
    if token:
        p["cls_token"] = get("cls", (1, 1, D))
    if BV_POS_KEY in arrays and POS_KEY not in arrays:
        pos = get(BV_POS_KEY, (1, config.num_patches, D))
        if token:        # big_vision adds E_pos before the class token joins: a zero row
            pos = np.concatenate([np.zeros((1, 1, D), pos.dtype), pos], axis=1)
        p["pos_embed"] = pos
    else:
        p["pos_embed"] = get(POS_KEY, (1, config.num_tokens, D))
    ln1, att, ln2, mlp = names
    for i in range(config.depth):
        b = f"Transformer/encoderblock_{i}/"
        n = f"blocks.{i}."
        p[n + "norm1.weight"] = get(b + ln1 + "/scale", (D,))
        p[n + "norm1.bias"] = get(b + ln1 + "/bias", (D,))
        # Fused qkv: columns [q | k | v], each (D, H·D_h) with heads contiguous — the
        # layout split_heads expects.
        p[n + "attn.qkv.weight"] = np.concatenate(
            [get(f"{b}{att}/{t}/kernel", (D, H, Dh)).reshape(D, H * Dh)
             for t in ("query", "key", "value")], axis=1)
        p[n + "attn.qkv.bias"] = np.concatenate(
            [get(f"{b}{att}/{t}/bias", (H, Dh)).reshape(H * Dh) for t in ("query", "key", "value")])
        p[n + "attn.proj.weight"] = get(f"{b}{att}/out/kernel", (H, Dh, D)).reshape(H * Dh, D)
        p[n + "attn.proj.bias"] = get(f"{b}{att}/out/bias", (D,))
        p[n + "norm2.weight"] = get(b + ln2 + "/scale", (D,))
        p[n + "norm2.bias"] = get(b + ln2 + "/bias", (D,))
        p[n + "mlp.fc1.weight"] = get(f"{b}{mlp}/Dense_0/kernel", (D, M))
        p[n + "mlp.fc1.bias"] = get(f"{b}{mlp}/Dense_0/bias", (M,))
        p[n + "mlp.fc2.weight"] = get(f"{b}{mlp}/Dense_1/kernel", (M, D))
        p[n + "mlp.fc2.bias"] = get(f"{b}{mlp}/Dense_1/bias", (D,))
    p["norm.weight"] = get("Transformer/encoder_norm/scale", (D,))
    p["norm.bias"] = get("Transformer/encoder_norm/bias", (D,))
    if config.head_type == "pre-logits":
        p["pre_logits.weight"] = get("pre_logits/kernel", (D, D))
        p["pre_logits.bias"] = get("pre_logits/bias", (D,))
    K = config.num_classes
    p["head.weight"] = get("head/kernel", (D, K))
    p["head.bias"] = get("head/bias", (K,))
    for k, a in p.items():
        if not np.isfinite(a).all():
            raise CheckpointError(f"{path}: parameter {k} contains NaN or inf")
    return {k: p[k] for k in config.param_shapes()}


def load_official(path, backend="numpy", dtype="float32", image_size=None, num_classes=None,
                  drop_pre_logits=False):
    """Build a :class:`~minivit.model.ViT` from an official ViT ``.npz`` checkpoint.

    path: the .npz (read with ``allow_pickle=False``). The config is inferred from the
    shapes (:func:`infer_config`). image_size: fine-tune resolution; when it differs from
    the checkpoint's, the position embeddings are resampled bilinearly (paper §3.2,
    :func:`minivit.ops.embedding.resample_pos_embed`). num_classes: a different number of
    classes replaces the head with a zero-initialised linear layer. drop_pre_logits: drop
    the tanh pre-logits layer (head_type "linear"; the head is then reset to zero too,
    since the old head read the pre-logits' output).

    Returns the model (``model.config`` holds the inferred/adapted config).
    Raises CheckpointError naming a missing or mis-shaped key.
    """
    from minivit.model import ViT
    arrays = _strip_prefix(read_npz(path))
    config = infer_config(arrays, path)
    params = official_to_params(arrays, config, path)
    new = config
    if image_size is not None:
        new = new.replace(image_size=int(image_size))
    if num_classes is not None:
        new = new.replace(num_classes=int(num_classes))
    if drop_pre_logits:
        new = new.replace(head_type="linear")
    if new != config:
        from minivit.finetune import adapt_params
        params = adapt_params(params, config, new)
    return ViT(new, dtype=dtype, backend=backend, params=params)


def params_to_official(params: dict, config: ViTConfig) -> dict:
    """Inverse of :func:`official_to_params`: minivit names → official keys (the original
    ``_1/_0/_2/_3`` numbering, no prefix). Only the official architecture can be written:
    learned 1-D position embeddings, non-overlapping patches (class token or GAP: a GAP
    model is written without ``cls`` and with N position embeddings)."""
    if config.pos_embed != "learned-1d":
        raise ConfigError(f"the official layout has learned 1-D position embeddings; "
                          f"cannot write pos_embed={config.pos_embed!r}")
    if config.S != config.patch_size:
        raise ConfigError(f"the official layout has non-overlapping patches; cannot write "
                          f"stride {config.S} != P={config.patch_size}")
    D, H, Dh, P, C = config.dim, config.heads, config.head_dim, config.patch_size, config.channels
    ln1, att, ln2, mlp = NUMBERINGS["old"]
    a = lambda k: np.asarray(params[k])            # noqa: E731
    out = {
        "embedding/kernel": a("patch_embed.weight").reshape(P, P, C, D),
        "embedding/bias": a("patch_embed.bias"),
        POS_KEY: a("pos_embed"),
    }
    if config.classifier == "token":
        out["cls"] = a("cls_token")
    for i in range(config.depth):
        b, n = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        out[b + ln1 + "/scale"] = a(n + "norm1.weight")
        out[b + ln1 + "/bias"] = a(n + "norm1.bias")
        W, bias = a(n + "attn.qkv.weight"), a(n + "attn.qkv.bias")
        for j, t in enumerate(("query", "key", "value")):
            out[f"{b}{att}/{t}/kernel"] = W[:, j * D:(j + 1) * D].reshape(D, H, Dh)
            out[f"{b}{att}/{t}/bias"] = bias[j * D:(j + 1) * D].reshape(H, Dh)
        out[f"{b}{att}/out/kernel"] = a(n + "attn.proj.weight").reshape(H, Dh, D)
        out[f"{b}{att}/out/bias"] = a(n + "attn.proj.bias")
        out[b + ln2 + "/scale"] = a(n + "norm2.weight")
        out[b + ln2 + "/bias"] = a(n + "norm2.bias")
        out[f"{b}{mlp}/Dense_0/kernel"] = a(n + "mlp.fc1.weight")
        out[f"{b}{mlp}/Dense_0/bias"] = a(n + "mlp.fc1.bias")
        out[f"{b}{mlp}/Dense_1/kernel"] = a(n + "mlp.fc2.weight")
        out[f"{b}{mlp}/Dense_1/bias"] = a(n + "mlp.fc2.bias")
    out["Transformer/encoder_norm/scale"] = a("norm.weight")
    out["Transformer/encoder_norm/bias"] = a("norm.bias")
    if config.head_type == "pre-logits":
        out["pre_logits/kernel"] = a("pre_logits.weight")
        out["pre_logits/bias"] = a("pre_logits.bias")
    out["head/kernel"] = a("head.weight")
    out["head/bias"] = a("head.bias")
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def save_official(model, path):
    """Write a model in the official ``.npz`` layout (original ``_1/_0/_2/_3`` numbering),
    atomically. The file loads back with :func:`load_official` (and, layout-wise, with the
    official code). Only the model's parameters are written: GELU form and LayerNorm ε are
    not part of the layout (the official model uses tanh GELU and ε = 1e-6)."""
    return atomic_write_npz(path, params_to_official(model.state_dict(), model.config))
