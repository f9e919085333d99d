"""An independent ViT in PyTorch (test oracle only), driven by minivit's parameter dict.

Written from the paper with torch's own ops (unfold for patches, F.layer_norm, F.gelu,
explicit softmax attention), so agreement with minivit is evidence, not tautology.
"""
import math

import torch
import torch.nn.functional as F


def torch_sincos2d(gh, gw, D, dtype=torch.float64):
    """big_vision's posemb_sincos_2d, written again in torch: (G_h·G_w, D)."""
    q = D // 4
    omega = 1.0 / 10000.0 ** (torch.arange(q, dtype=dtype) / (q - 1))
    ys, xs = torch.meshgrid(torch.arange(gh, dtype=dtype), torch.arange(gw, dtype=dtype),
                            indexing="ij")
    y = ys.reshape(-1)[:, None] * omega[None]
    x = xs.reshape(-1)[:, None] * omega[None]
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1)


def torch_forward(params, cfg, images, masks=None):
    """params: name → torch tensor (requires_grad); images: (B, H, W, C) tensor.
    masks: None, or minivit's ``last_masks`` as torch tensors (dropout after the
    embedding sum, after the attention projection and after each MLP dense; stochastic
    depth folded into the branch masks ``attn`` and ``mlp``; ``keep``: the token positions
    patch dropout keeps). Returns logits (B, classes)."""
    masks = masks or {}
    mask = lambda x, key: x * masks[key] if key in masks else x     # noqa: E731
    token = getattr(cfg, "classifier", "token") == "token"
    B, H, W, C = images.shape
    P, S, D, Hh = cfg.patch_size, cfg.S, cfg.dim, cfg.heads
    # patches in (h, w, c) order: unfold works on (B, C, H, W) and yields (c, h, w) order
    cols = F.unfold(images.permute(0, 3, 1, 2), kernel_size=P, stride=S)  # (B, C·P·P, N)
    N = cols.shape[-1]
    patches = cols.view(B, C, P, P, N).permute(0, 4, 2, 3, 1).reshape(B, N, P * P * C)
    e = patches @ params["patch_embed.weight"] + params["patch_embed.bias"]
    z = torch.cat([params["cls_token"].expand(B, 1, D), e], dim=1) if token else e
    T = z.shape[1]
    if cfg.pos_embed == "learned-1d":
        z = z + params["pos_embed"]
    elif cfg.pos_embed == "learned-2d":
        gh, gw = cfg.grid
        row, col = params["pos_embed_row"], params["pos_embed_col"]
        grid = torch.cat([row[:, None, :].expand(gh, gw, D // 2),
                          col[None, :, :].expand(gh, gw, D // 2)], dim=-1).reshape(gh * gw, D)
        z = z + (torch.cat([params["pos_embed_cls"], grid], dim=0) if token else grid)[None]
    elif cfg.pos_embed == "sincos2d":            # fixed; the class token gets none
        pe = torch_sincos2d(*cfg.grid, D, z.dtype)
        z = torch.cat([z[:, :1], z[:, 1:] + pe], dim=1) if token else z + pe
    if "keep" in masks:                          # patch dropout: torch.gather, after E_pos
        idx = masks["keep"].long()
        z = torch.gather(z, 1, idx[:, :, None].expand(B, idx.shape[1], D))
        T = z.shape[1]
    z = mask(z, "embed")
    approx = "tanh" if cfg.gelu == "tanh" else "none"
    for i in range(cfg.depth):
        p = lambda n: params[f"blocks.{i}.{n}"]
        h = F.layer_norm(z, (D,), p("norm1.weight"), p("norm1.bias"), cfg.ln_eps)
        qkv = (h @ p("attn.qkv.weight") + p("attn.qkv.bias")).view(B, T, 3, Hh, D // Hh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        A = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // Hh), dim=-1)
        a = (A @ v).transpose(1, 2).reshape(B, T, D)
        z = z + mask(a @ p("attn.proj.weight") + p("attn.proj.bias"), f"blocks.{i}.attn")
        h = F.layer_norm(z, (D,), p("norm2.weight"), p("norm2.bias"), cfg.ln_eps)
        u = F.gelu(h @ p("mlp.fc1.weight") + p("mlp.fc1.bias"), approximate=approx)
        u = mask(u, f"blocks.{i}.fc1")
        z = z + mask(u @ p("mlp.fc2.weight") + p("mlp.fc2.bias"), f"blocks.{i}.mlp")
    if token:
        y = F.layer_norm(z[:, 0], (D,), params["norm.weight"], params["norm.bias"], cfg.ln_eps)
    else:                                        # GAP: LN every token, then average
        y = F.layer_norm(z, (D,), params["norm.weight"], params["norm.bias"],
                         cfg.ln_eps).mean(dim=1)
    if cfg.head_type == "pre-logits":
        y = torch.tanh(y @ params["pre_logits.weight"] + params["pre_logits.bias"])
    return y @ params["head.weight"] + params["head.bias"]
