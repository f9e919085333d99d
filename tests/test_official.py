"""Official ViT checkpoints (REFERENCE.md §5): layout, key numberings, logits."""
import math

import numpy as np
import pytest

from minivit.errors import CheckpointError
from minivit.official import load_official, params_to_official, save_official

from conftest import perturbed_model, tiny_config

OLD = ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3")
NEW = ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0")


# ---------------------------------------------------------------------- an independent oracle
def official_arrays(rng, P=16, D=192, heads=3, mlp=768, depth=2, classes=10, grid=14,
                    pre_logits=True, names=OLD, classifier="token", layout="vit_jax"):
    """Random parameters with the official key names and shapes (a ViT-Ti/16 layout at
    224 px with `depth` blocks), written by this test, not by minivit.

    classifier "gap": no ``cls``, N position embeddings. layout "big_vision": the position
    embedding at the top level, ``pos_embedding`` (1, N, D), class token or not."""
    Dh = D // heads
    n = lambda *s: (rng.standard_normal(s) * 0.2).astype(np.float32)   # noqa: E731
    ln1, att, ln2, mlpb = names
    a = {"embedding/kernel": n(P, P, 3, D) * 0.3, "embedding/bias": n(D),
         "Transformer/encoder_norm/scale": 1 + n(D), "Transformer/encoder_norm/bias": n(D),
         "head/kernel": n(D, classes), "head/bias": n(classes)}
    if classifier == "token":
        a["cls"] = n(1, 1, D)
    if layout == "big_vision":
        a["pos_embedding"] = n(1, grid * grid, D)
    else:
        rows = grid * grid + (1 if classifier == "token" else 0)
        a["Transformer/posembed_input/pos_embedding"] = n(1, rows, D)
    if pre_logits:
        a["pre_logits/kernel"] = n(D, D) * 0.5
        a["pre_logits/bias"] = n(D)
    for i in range(depth):
        b = f"Transformer/encoderblock_{i}/"
        a[b + ln1 + "/scale"], a[b + ln1 + "/bias"] = 1 + n(D), n(D)
        a[b + ln2 + "/scale"], a[b + ln2 + "/bias"] = 1 + n(D), n(D)
        for t in ("query", "key", "value"):
            a[f"{b}{att}/{t}/kernel"] = n(D, heads, Dh) * 0.5
            a[f"{b}{att}/{t}/bias"] = n(heads, Dh)
        a[f"{b}{att}/out/kernel"] = n(heads, Dh, D) * 0.5
        a[f"{b}{att}/out/bias"] = n(D)
        a[f"{b}{mlpb}/Dense_0/kernel"], a[f"{b}{mlpb}/Dense_0/bias"] = n(D, mlp) * 0.5, n(mlp)
        a[f"{b}{mlpb}/Dense_1/kernel"], a[f"{b}{mlpb}/Dense_1/bias"] = n(mlp, D) * 0.3, n(D)
    return a


def flax_reference_logits(a, x, depth, names=OLD):
    """The official model's forward (models_vit.py) written directly on the official
    arrays in float64: conv with stride P, cls, pos, pre-norm blocks with per-head
    einsums, tanh GELU, LN ε 1e-6, encoder_norm, pre-logits tanh, head.

    Without ``cls`` (classifier='gap'): no class token, and the head reads the mean over
    the tokens of encoder_norm's output. With big_vision's top-level ``pos_embedding``,
    E_pos is added to the patch embeddings before the class token is concatenated
    (big_vision/models/vit.py)."""
    a = {k: v.astype(np.float64) for k, v in a.items()}
    ln1, att, ln2, mlpb = names
    K = a["embedding/kernel"]
    P, D = K.shape[0], K.shape[3]
    B, H, W, C = x.shape
    g = H // P
    # conv (VALID, stride P): out[b,i,j,d] = Σ_{h,w,c} x[b, iP+h, jP+w, c] K[h,w,c,d]
    xp = x.reshape(B, g, P, g, P, C)
    e = np.einsum("bihjwc,hwcd->bijd", xp, K) + a["embedding/bias"]
    z = e.reshape(B, g * g, D)
    if "pos_embedding" in a:                           # big_vision: before the class token
        z = z + a["pos_embedding"]
    if "cls" in a:
        z = np.concatenate([np.broadcast_to(a["cls"], (B, 1, D)), z], 1)
    if "Transformer/posembed_input/pos_embedding" in a:
        z = z + a["Transformer/posembed_input/pos_embedding"]

    def ln(v, pre):
        mu = v.mean(-1, keepdims=True)
        var = ((v - mu) ** 2).mean(-1, keepdims=True)
        return (v - mu) / np.sqrt(var + 1e-6) * a[pre + "/scale"] + a[pre + "/bias"]

    def gelu(u):
        return 0.5 * u * (1 + np.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u ** 3)))

    for i in range(depth):
        b = f"Transformer/encoderblock_{i}/"
        h = ln(z, b + ln1)
        q, k, v = (np.einsum("bnd,dhk->bhnk", h, a[f"{b}{att}/{t}/kernel"])
                   + a[f"{b}{att}/{t}/bias"][None, :, None, :] for t in ("query", "key", "value"))
        s = np.einsum("bhqk,bhnk->bhqn", q, k) / math.sqrt(q.shape[-1])
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = np.einsum("bhqn,bhnk->bhqk", s, v)
        z = z + np.einsum("bhqk,hkd->bqd", o, a[f"{b}{att}/out/kernel"]) + a[f"{b}{att}/out/bias"]
        h = ln(z, b + ln2)
        u = gelu(h @ a[f"{b}{mlpb}/Dense_0/kernel"] + a[f"{b}{mlpb}/Dense_0/bias"])
        z = z + u @ a[f"{b}{mlpb}/Dense_1/kernel"] + a[f"{b}{mlpb}/Dense_1/bias"]
    if "cls" in a:
        y = ln(z[:, 0], "Transformer/encoder_norm")
    else:                                               # gap: mean of the normed tokens
        y = ln(z, "Transformer/encoder_norm").mean(axis=1)
    if "pre_logits/kernel" in a:
        y = np.tanh(y @ a["pre_logits/kernel"] + a["pre_logits/bias"])
    return y @ a["head/kernel"] + a["head/bias"]


@pytest.fixture(scope="module")
def ti16_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    a = official_arrays(rng)
    path = tmp_path_factory.mktemp("official") / "ViT-Ti_16-depth2.npz"
    np.savez(path, **a)
    x = rng.standard_normal((1, 224, 224, 3))
    return path, a, x, flax_reference_logits(a, x, depth=2)


# ---------------------------------------------------------------------- tests
def test_ti16_layout_loads_and_matches_reference_logits(ti16_file):
    path, a, x, ref = ti16_file
    m = load_official(path, dtype="float64")
    c = m.config
    assert (c.image_size, c.patch_size, c.dim, c.depth, c.heads, c.mlp_dim, c.num_classes) \
        == (224, 16, 192, 2, 3, 768, 10)
    assert c.head_type == "pre-logits" and c.gelu == "tanh" and c.ln_eps == 1e-6
    logits = m.forward(x)
    np.testing.assert_allclose(logits, ref, rtol=1e-9, atol=1e-9)


def test_newer_numbering_and_params_prefix(tmp_path, ti16_file):
    _, a, x, ref = ti16_file
    renamed = {}
    for k, v in a.items():
        for o, nw in zip(OLD[1:], NEW[1:]):
            k = k.replace(o, nw)
        renamed["params/" + k] = v
    path = tmp_path / "new.npz"
    np.savez(path, **renamed)
    m = load_official(path, dtype="float64")
    np.testing.assert_allclose(m.forward(x), ref, rtol=1e-9, atol=1e-9)


def test_round_trip_save_load_identical(tmp_path, rng):
    cfg = tiny_config(head_type="pre-logits")
    m = perturbed_model(cfg)
    save_official(m, tmp_path / "o.npz")
    m2 = load_official(tmp_path / "o.npz", dtype="float64")
    assert m2.config == cfg.replace(ln_eps=1e-6)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(m2.state_dict()[k], v, err_msg=k)
    x = rng.standard_normal((2, 8, 8, 3))
    np.testing.assert_array_equal(m2.forward(x), m.forward(x))
    # the file uses the original numbering and no prefix
    keys = set(np.load(tmp_path / "o.npz").files)
    assert "Transformer/encoderblock_1/MultiHeadDotProductAttention_1/query/kernel" in keys
    assert "Transformer/encoderblock_0/MlpBlock_3/Dense_1/bias" in keys
    assert "pre_logits/kernel" in keys


def test_official_pieces_reference_logits_small(tmp_path, rng):
    """The small path too (P = 4, 8 px, linear head) against the same oracle."""
    a = official_arrays(rng, P=4, D=8, heads=2, mlp=16, depth=2, classes=3, grid=2,
                        pre_logits=False)
    np.savez(tmp_path / "s.npz", **a)
    x = rng.standard_normal((2, 8, 8, 3))
    m = load_official(tmp_path / "s.npz", dtype="float64")
    assert m.config.head_type == "linear"
    np.testing.assert_allclose(m.forward(x), flax_reference_logits(a, x, 2), atol=1e-12)
    # and writing it back gives the same arrays
    back = params_to_official(m.state_dict(), m.config)
    assert set(back) == set(a)
    for k in a:
        np.testing.assert_array_equal(back[k], a[k].astype(np.float64), err_msg=k)


def test_resample_new_head_drop_pre_logits(tmp_path, rng):
    a = official_arrays(rng, P=4, D=8, heads=2, mlp=16, depth=1, classes=3, grid=2)
    np.savez(tmp_path / "s.npz", **a)
    m = load_official(tmp_path / "s.npz", image_size=12, num_classes=5, drop_pre_logits=True)
    assert m.config.grid == (3, 3) and m.config.num_classes == 5
    assert m.config.head_type == "linear" and "pre_logits.weight" not in m.params
    assert m.params["pos_embed"].shape == (1, 10, 8)
    np.testing.assert_allclose(m.params["pos_embed"][0, 0],
                               a["Transformer/posembed_input/pos_embedding"][0, 0])
    assert not m.params["head.weight"].any()


@pytest.mark.parametrize("key", [
    "Transformer/encoderblock_1/MlpBlock_3/Dense_1/bias",
    "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/value/kernel",
    "Transformer/encoder_norm/scale",
    "cls",
])
def test_missing_key_is_named(tmp_path, rng, key):
    a = official_arrays(rng, P=4, D=8, heads=2, mlp=16, depth=2, classes=3, grid=2)
    del a[key]
    np.savez(tmp_path / "m.npz", **a)
    with pytest.raises(CheckpointError, match=key):
        load_official(tmp_path / "m.npz")


@pytest.mark.parametrize("key,shape", [
    ("Transformer/encoderblock_0/LayerNorm_2/scale", (9,)),
    ("Transformer/encoderblock_1/MultiHeadDotProductAttention_1/out/kernel", (2, 4, 9)),
    ("embedding/bias", (1, 8)),
])
def test_misshaped_key_is_named(tmp_path, rng, key, shape):
    a = official_arrays(rng, P=4, D=8, heads=2, mlp=16, depth=2, classes=3, grid=2)
    a[key] = np.zeros(shape, np.float32)
    np.savez(tmp_path / "m.npz", **a)
    with pytest.raises(CheckpointError, match=key):
        load_official(tmp_path / "m.npz")


def test_not_an_official_file(tmp_path):
    np.savez(tmp_path / "x.npz", foo=np.zeros(3))
    with pytest.raises(CheckpointError, match="MultiHeadDotProductAttention"):
        load_official(tmp_path / "x.npz")
    with pytest.raises(CheckpointError):
        load_official(tmp_path / "missing.npz")


# ---------------------------------------------------------------------- GAP and big_vision
def _big_vision_keys(a):
    """The big_vision spelling: newer numbering, every key under ``params/``."""
    out = {}
    for k, v in a.items():
        for o, nw in zip(OLD[1:], NEW[1:]):
            k = k.replace(o, nw)
        out["params/" + k] = v
    return out


@pytest.mark.parametrize("classifier,layout", [("gap", "vit_jax"), ("gap", "big_vision"),
                                               ("token", "big_vision")])
def test_gap_and_big_vision_layouts_load_and_match_reference(tmp_path, rng, classifier, layout):
    """Issue 15: these were refused with a message about a non-square grid."""
    a = official_arrays(rng, P=4, D=8, heads=2, mlp=16, depth=2, classes=3, grid=3,
                        pre_logits=False, classifier=classifier, layout=layout)
    x = rng.standard_normal((2, 12, 12, 3))
    ref = flax_reference_logits(a, x, 2)
    files = {"plain": a}
    if layout == "big_vision":
        files["prefixed"] = _big_vision_keys(a)
    for name, arrays in files.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        m = load_official(tmp_path / f"{name}.npz", dtype="float64")
        c = m.config
        assert (c.image_size, c.patch_size, c.dim, c.depth, c.heads, c.mlp_dim,
                c.num_classes, c.classifier) == (12, 4, 8, 2, 2, 16, 3, classifier)
        if classifier == "gap":
            assert "cls_token" not in m.params and m.params["pos_embed"].shape == (1, 9, 8)
        else:        # big_vision's class token has no position embedding: a zero row
            assert m.params["pos_embed"].shape == (1, 10, 8)
            assert not m.params["pos_embed"][0, 0].any()
        np.testing.assert_allclose(m.forward(x), ref, rtol=1e-10, atol=1e-12)


def test_gap_round_trip_and_resample(tmp_path, rng):
    cfg = tiny_config(classifier="gap")
    m = perturbed_model(cfg)
    save_official(m, tmp_path / "g.npz")
    keys = set(np.load(tmp_path / "g.npz").files)
    assert "cls" not in keys
    m2 = load_official(tmp_path / "g.npz", dtype="float64")
    assert m2.config == cfg
    x = rng.standard_normal((2, 8, 8, 3))
    np.testing.assert_array_equal(m2.forward(x), m.forward(x))
    # fine-tune resolution: the N-row table (no class-token row) is resampled 2x2 → 3x3
    m3 = load_official(tmp_path / "g.npz", image_size=12)
    assert m3.params["pos_embed"].shape == (1, 9, 8)
    mean_old = m.state_dict()["pos_embed"][0].mean(axis=0)
    np.testing.assert_allclose(m3.params["pos_embed"][0].mean(axis=0), mean_old, atol=1e-5)


def test_map_head_and_missing_pos_are_named(tmp_path, rng):
    a = official_arrays(rng, P=4, D=8, heads=2, mlp=16, depth=1, classes=3, grid=2,
                        classifier="gap", layout="big_vision")
    b = dict(a, **{"MAPHead_0/probe": np.zeros((1, 1, 8), np.float32)})
    np.savez(tmp_path / "map.npz", **b)
    with pytest.raises(CheckpointError, match="MAPHead"):
        load_official(tmp_path / "map.npz")
    del a["pos_embedding"]
    np.savez(tmp_path / "nopos.npz", **a)
    with pytest.raises(CheckpointError, match="missing key .*pos_embedding.*sine-cosine"):
        load_official(tmp_path / "nopos.npz")
    # a genuinely non-square grid is still named as such, with the class token counted
    a = official_arrays(rng, P=4, D=8, heads=2, mlp=16, depth=1, classes=3, grid=2)
    a["Transformer/posembed_input/pos_embedding"] = np.zeros((1, 4, 8), np.float32)
    np.savez(tmp_path / "ns.npz", **a)
    with pytest.raises(CheckpointError, match="N=3 patch embeddings .with a class token"):
        load_official(tmp_path / "ns.npz")
