"""Inspection (paper §4.5, Fig. 6–7, D.7–D.8) against answers known in closed form."""
import argparse
import json
import math

import numpy as np
import pytest

from minivit import ViT, ViTConfig
from minivit.checkpoint import save_checkpoint
from minivit.inspect import (attention_maps, attention_rollout, cls_rollout_map,
                             embedding_filters_pca, mean_attention_distance, patch_centres,
                             pos_embed_similarity)

from conftest import perturbed_model, tiny_config


def _random_attention(rng, B, H, T):
    a = rng.random((B, H, T, T)) + 0.05
    return a / a.sum(-1, keepdims=True)


# ---------------------------------------------------------------------- attention maps
def test_attention_maps_shapes_and_rows(rng):
    cfg = tiny_config(image_size=12, depth=3)                  # N = 9, T = 10
    m = perturbed_model(cfg)
    x = rng.standard_normal((3, 12, 12, 3))
    atts = attention_maps(m, x, batch_size=2)                  # two chunks, concatenated
    assert len(atts) == 3
    for a in atts:
        assert a.shape == (3, 2, 10, 10)
        np.testing.assert_allclose(a.sum(-1), 1.0)
    # the chunked result is the per-image one
    one = attention_maps(m, x[2:3])
    np.testing.assert_allclose(atts[1][2], one[1][0], atol=1e-12)


# ---------------------------------------------------------------------- rollout
def test_identity_attention_rollout_is_identity():
    T = 5
    eye = np.broadcast_to(np.eye(T), (2, 3, T, T)).copy()
    for add_residual in (True, False):
        R = attention_rollout([eye, eye, eye], add_residual=add_residual)
        np.testing.assert_allclose(R, np.broadcast_to(np.eye(T), (2, T, T)))


def test_one_layer_rollout_is_normalised_mean_plus_identity(rng):
    A = _random_attention(rng, 2, 4, 6)
    ref = A.mean(1) + np.eye(6)
    ref /= ref.sum(-1, keepdims=True)
    np.testing.assert_allclose(attention_rollout([A]), ref, atol=1e-14)
    np.testing.assert_allclose(attention_rollout([A], add_residual=False), A.mean(1))


def test_rollout_multiplies_later_layers_on_the_left(rng):
    A1, A2 = _random_attention(rng, 1, 2, 5), _random_attention(rng, 1, 2, 5)
    n = lambda A: (lambda a: a / a.sum(-1, keepdims=True))(A.mean(1) + np.eye(5))  # noqa: E731
    np.testing.assert_allclose(attention_rollout([A1, A2]), n(A2) @ n(A1), atol=1e-14)
    R = attention_rollout([A1, A2])
    np.testing.assert_allclose(R.sum(-1), 1.0)                 # still row-stochastic
    maps = cls_rollout_map([A1, A2], grid=(2, 2))
    np.testing.assert_allclose(maps[0].ravel(), R[0, 0, 1:])
    assert cls_rollout_map(R).shape == (1, 2, 2)               # accepts a rollout too


# ---------------------------------------------------------------------- distances
def test_self_attention_has_zero_distance():
    grid, T = (3, 4), 13
    eye = np.broadcast_to(np.eye(T), (2, 3, T, T)).copy()
    d = mean_attention_distance([eye, eye], grid, patch_size=4)
    assert d.shape == (2, 3)
    np.testing.assert_array_equal(d, 0.0)


def _uniform_distance_by_hand(gh, gw, P, S, T_norm):
    """Mean over query patches of Σ_j w·‖c_i − c_j‖ with w = 1/T_norm, by explicit loops
    over grid coordinates (independent of patch_centres)."""
    total = 0.0
    for r1 in range(gh):
        for c1 in range(gw):
            s = 0.0
            for r2 in range(gh):
                for c2 in range(gw):
                    s += math.hypot((r1 - r2) * S, (c1 - c2) * S) / T_norm
            total += s
    return total / (gh * gw)


@pytest.mark.parametrize("P,S", [(4, 4), (4, 2)])
def test_uniform_attention_distance_is_analytic(P, S):
    gh, gw = 3, 3
    N = gh * gw
    A = np.full((2, 2, N + 1, N + 1), 1.0 / (N + 1))
    d = mean_attention_distance([A], (gh, gw), P, S)                    # renormalised
    np.testing.assert_allclose(d, _uniform_distance_by_hand(gh, gw, P, S, N), rtol=1e-12)
    d_raw = mean_attention_distance([A], (gh, gw), P, S, renormalize=False)
    np.testing.assert_allclose(d_raw, _uniform_distance_by_hand(gh, gw, P, S, N + 1),
                               rtol=1e-12)
    # a 2×1 grid with P = 4: the two patches are 4 px apart, uniform weights ½ → 2 px
    A2 = np.full((1, 1, 3, 3), 1 / 3)
    assert mean_attention_distance([A2], (2, 1), 4)[0, 0] == pytest.approx(2.0)


def test_patch_centres():
    c = patch_centres((2, 3), 4, 2)
    np.testing.assert_array_equal(c[0], [2, 2])
    np.testing.assert_array_equal(c[5], [4, 6])


# ---------------------------------------------------------------------- embeddings
@pytest.mark.parametrize("pos", ["learned-1d", "learned-2d"])
def test_pos_embed_similarity_diagonal_is_one(pos):
    m = ViT(tiny_config(image_size=16, pos_embed=pos), seed=3, dtype="float64")
    S = pos_embed_similarity(m)
    assert S.shape == (4, 4, 4, 4)
    flat = S.reshape(16, 16)
    np.testing.assert_allclose(np.diag(flat), 1.0)
    np.testing.assert_allclose(flat, flat.T)
    assert (np.abs(flat) <= 1 + 1e-12).all()


def test_pca_of_rank_one_embedding_recovers_direction(rng):
    cfg = tiny_config()                                       # P = 4, C = 3: 48 × 8
    m = ViT(cfg, dtype="float64")
    u = rng.standard_normal(48)
    v = rng.standard_normal(8)
    p = m.state_dict()
    p["patch_embed.weight"] = np.outer(u, v)
    m.load_params(p)
    comps, ratio = embedding_filters_pca(m, k=28)
    assert comps.shape == (8, 4, 4, 3)                       # k clipped to min(D, P²C)
    first = comps[0].ravel()
    assert abs(abs(first @ u) / np.linalg.norm(u) - 1.0) < 1e-10
    assert ratio[0] == pytest.approx(1.0)
    np.testing.assert_allclose(np.linalg.norm(comps.reshape(8, -1), axis=1)[:1], 1.0)


# ---------------------------------------------------------------------- figures and CLI
def test_plots_return_figures_and_write_pngs(tmp_path, rng):
    from matplotlib.figure import Figure
    from minivit import plots_inspect as pi
    img = rng.integers(0, 256, (2, 16, 16, 3)).astype(np.uint8)
    A = _random_attention(rng, 2, 2, 17)
    figs = [
        pi.plot_attention_heads(img[0], A[0], (4, 4), path=tmp_path / "a.png"),
        pi.plot_rollout(img, cls_rollout_map([A, A]), path=tmp_path / "r.png"),
        pi.plot_mean_distance(rng.random((3, 2)) * 10, path=tmp_path / "d.png", image_size=16),
        pi.plot_pos_embed_similarity(rng.random((3, 3, 3, 3)), path=tmp_path / "p.png"),
        pi.plot_embedding_filters(rng.standard_normal((5, 4, 4, 3)), np.full(5, 0.2),
                                  path=tmp_path / "f.png"),
    ]
    assert all(isinstance(f, Figure) for f in figs)
    # Without a class token (T = N = 16) the panels show the mean of the rows.
    gap = pi.plot_attention_heads(img[0], _random_attention(rng, 1, 2, 16)[0], (4, 4))
    assert "averaged (GAP head)" in gap._suptitle.get_text()
    for name in "arpdf":
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


@pytest.mark.parametrize("classifier", ["token", "gap"])
def test_inspect_cli_writes_everything(tmp_path, classifier):
    # GAP (Appendix D.3): no class token, so T = N everywhere (attention, rollout, E_pos).
    from minivit import inspect as mod
    cfg = ViTConfig(image_size=32, patch_size=8, dim=16, depth=2, heads=2, mlp_dim=32,
                    classifier=classifier)
    save_checkpoint(tmp_path / "ck.npz", ViT(cfg, seed=1))
    p = argparse.ArgumentParser()
    mod.configure_parser(p)
    out = tmp_path / "out"
    args = p.parse_args([str(tmp_path / "ck.npz"), "--out", str(out), "--images", "2",
                         "--data-dir", str(tmp_path / "no-data-here")])
    assert mod.cli_run(args) == 0
    for name in ("attention_layer1.png", "attention_layer2.png", "rollout.png",
                 "mean_attention_distance.png", "pos_embed_similarity.png",
                 "embedding_filters.png"):
        assert (out / name).is_file(), name
    info = json.loads((out / "mean_attention_distance.json").read_text())
    assert info["source"] == "synthetic" and info["units"] == "pixels"
    d = np.array(info["mean_attention_distance"])
    assert d.shape == (2, 2) and (d >= 0).all() and (d < 32 * math.sqrt(2)).all()
