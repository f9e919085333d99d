"""Logits and every parameter gradient against torch autograd on identical weights
(float64, 1e-6). Skipped with a reason only when torch (the `oracle` extra) is absent."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed: pip install -e '.[oracle]'")

from minivit.ops import softmax_cross_entropy  # noqa: E402

from conftest import perturbed_model, tiny_config  # noqa: E402
from torch_vit import torch_forward  # noqa: E402

VARIANTS = [
    dict(),
    dict(head_type="pre-logits", gelu="erf"),
    dict(pos_embed="learned-2d", heads=4),
    dict(image_size=12, patch_size=4, stride=2, depth=3),     # overlapping patches
    dict(pos_embed="none", heads=1),
    # the recipe-search knobs (issue 15): GAP, fixed sine-cosine, dropout + drop path
    dict(classifier="gap"),
    dict(classifier="gap", pos_embed="learned-2d", head_type="pre-logits"),
    dict(classifier="gap", pos_embed="none"),
    dict(pos_embed="sincos2d"),
    dict(pos_embed="sincos2d", classifier="gap", depth=3),
    dict(dropout=0.3, drop_path=0.4, depth=3),
    dict(dropout=0.2, drop_path=0.5, classifier="gap", pos_embed="sincos2d", depth=3),
    dict(drop_path=0.6, depth=3),
    dict(patch_keep=0.5, depth=3),                            # patch dropout
    dict(patch_keep=0.25, dropout=0.2, classifier="gap", pos_embed="learned-2d", depth=2),
]


@pytest.mark.parametrize("kw", VARIANTS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_logits_and_all_grads_match_torch(kw, smoothing):
    cfg = tiny_config(**kw)
    m = perturbed_model(cfg, seed=7)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, cfg.image_size, cfg.image_size, 3))
    y = np.array([0, 1, 2])

    # a training step (rng_key given): the dropout / drop-path masks it drew go to torch
    logits = m.forward(x, rng_key=(3, 11))
    loss, dlogits = softmax_cross_entropy(logits, y, smoothing)
    m.backward(dlogits)
    masks = {k: torch.tensor(v) for k, v in m.last_masks.items()}
    if cfg.dropout or cfg.drop_path:         # the masks really drop something
        assert masks and all((v == 0).any() for k, v in masks.items()
                             if k not in ("embed", "keep"))
    if cfg.patch_keep < 1:                   # the encoder saw K of the N patch tokens
        assert masks["keep"].shape == (3, cfg.train_num_tokens) < (3, cfg.num_tokens)

    tp = {k: torch.tensor(v, requires_grad=True) for k, v in m.state_dict().items()}
    tlogits = torch_forward(tp, cfg, torch.tensor(x), masks)
    tloss = torch.nn.functional.cross_entropy(tlogits, torch.tensor(y), label_smoothing=smoothing)
    tloss.backward()

    np.testing.assert_allclose(logits, tlogits.detach().numpy(), rtol=1e-6, atol=1e-9)
    assert abs(loss - tloss.item()) < 1e-9
    for n in m.params:
        np.testing.assert_allclose(m.grads[n], tp[n].grad.numpy(), rtol=1e-6, atol=1e-9,
                                   err_msg=n)
