"""The benchmark peer: the same ViT as minivit's, written in PyTorch (benchmarks only).

Pre-norm blocks, fused qkv, class token, learned 1-D position embeddings, GELU of the
config's form, LayerNorm eps of the config, linear head — the same architecture and
parameter count as ``minivit.ViT(cfg)``, so images/s compare like with like.
"""


def build_torch_vit(torch, cfg, attention="explicit"):
    """Return an ``nn.Module`` taking images (B, H, W, C) float32 → logits (B, classes).

    attention: "explicit" (softmax(q kᵀ/√D_h) v with plain ops — 7–10% faster than SDPA
    on this 2-core CPU) or "sdpa" (``F.scaled_dot_product_attention``, fastest on GPUs).
    """
    nn = torch.nn
    F = torch.nn.functional
    D, H, M = cfg.dim, cfg.heads, cfg.mlp_dim
    Dh = D // H
    approx = "tanh" if cfg.gelu == "tanh" else "none"

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1 = nn.LayerNorm(D, eps=cfg.ln_eps)
            self.qkv = nn.Linear(D, 3 * D)
            self.proj = nn.Linear(D, D)
            self.norm2 = nn.LayerNorm(D, eps=cfg.ln_eps)
            self.fc1 = nn.Linear(D, M)
            self.fc2 = nn.Linear(M, D)

        def forward(self, z):
            B, N, _ = z.shape
            q, k, v = self.qkv(self.norm1(z)).view(B, N, 3, H, Dh).permute(2, 0, 3, 1, 4)
            if attention == "sdpa":
                a = F.scaled_dot_product_attention(q, k, v)
            else:
                a = ((q @ k.transpose(-2, -1)) * (Dh ** -0.5)).softmax(dim=-1) @ v
            z = z + self.proj(a.transpose(1, 2).reshape(B, N, D))
            return z + self.fc2(F.gelu(self.fc1(self.norm2(z)), approximate=approx))

    class TorchViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(cfg.patch_dim, D)
            self.cls = nn.Parameter(torch.zeros(1, 1, D))
            self.pos = nn.Parameter(0.02 * torch.randn(1, cfg.num_patches + 1, D))
            self.blocks = nn.ModuleList(Block() for _ in range(cfg.depth))
            self.norm = nn.LayerNorm(D, eps=cfg.ln_eps)
            self.head = nn.Linear(D, cfg.num_classes)

        def forward(self, x):                             # x: (B, H, W, C)
            B = x.shape[0]
            P, S = cfg.patch_size, cfg.S
            p = x.unfold(1, P, S).unfold(2, P, S)         # (B, G_h, G_w, C, P, P)
            p = p.permute(0, 1, 2, 4, 5, 3).reshape(B, -1, cfg.patch_dim)   # (h, w, c) order
            z = torch.cat([self.cls.expand(B, -1, -1), self.embed(p)], 1) + self.pos
            for blk in self.blocks:
                z = blk(z)
            return self.head(self.norm(z[:, 0]))

    return TorchViT()
