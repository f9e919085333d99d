"""Independent PyTorch versions of minivit's ResNet trunk and head (test oracle only),
built from nn.Conv2d / nn.BatchNorm2d / nn.Linear in NCHW, with explicit weight
transposes from minivit's HWIO / (in, out) layouts, so agreement is evidence."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class TorchBlock(nn.Module):
    def __init__(self, cin, cout, stride, eps, momentum):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = nn.BatchNorm2d(cout, eps=eps, momentum=momentum)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(cout, eps=eps, momentum=momentum)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential()
            self.shortcut.conv = nn.Conv2d(cin, cout, 1, stride, 0, bias=False)
            self.shortcut.norm = nn.BatchNorm2d(cout, eps=eps, momentum=momentum)

    def forward(self, x):
        h = F.relu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        s = x if self.shortcut is None else self.shortcut.norm(self.shortcut.conv(x))
        return F.relu(h + s)


class TorchPoolUnit(nn.Module):
    """conv3×3 → (max-pool 2 →) BN → ReLU (a unit of trunk="pool")."""

    def __init__(self, cin, cout, pooled, eps, momentum):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.norm = nn.BatchNorm2d(cout, eps=eps, momentum=momentum)
        self.pooled = pooled

    def forward(self, x):
        h = self.conv(x)
        return F.relu(self.norm(F.max_pool2d(h, 2) if self.pooled else h))


class TorchTrunk(nn.Module):
    """stem conv → BN → ReLU, then basic blocks or pool units; input (B, C, H, W)."""

    def __init__(self, cfg):
        super().__init__()
        self.stem = nn.Sequential()
        self.stem.conv = nn.Conv2d(cfg.channels, cfg.stem_width, 3, 1, 1, bias=False)
        self.stem.norm = nn.BatchNorm2d(cfg.stem_width, eps=cfg.bn_eps, momentum=cfg.bn_momentum)
        self.layers = nn.ModuleList(nn.ModuleList() for _ in cfg.widths)
        for n, cin, w, stride in cfg.blocks():           # "layers.{s}.{j}."
            self.layers[int(n.split(".")[1])].append(
                TorchBlock(cin, w, stride, cfg.bn_eps, cfg.bn_momentum))
        for n, cin, w, pooled in cfg.pool_units():       # "layers.{s}.{j}."
            self.layers[int(n.split(".")[1])].append(
                TorchPoolUnit(cin, w, pooled, cfg.bn_eps, cfg.bn_momentum))

    def forward(self, x):
        h = F.relu(self.stem.norm(self.stem.conv(x)))
        for stage in self.layers:
            for blk in stage:
                h = blk(h)
        return h


class TorchResNet(TorchTrunk):
    """The trunk, global average pooling, a linear head; input (B, C, H, W)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.head = nn.Linear(cfg.feature_dim, cfg.num_classes)

    def forward(self, x):
        return self.head(super().forward(x).mean(dim=(2, 3)))


def to_torch(name, a):
    """minivit array → torch tensor in torch's layout (HWIO → OIHW, (in, out) → (out, in))."""
    t = torch.tensor(a)
    if t.ndim == 4:
        return t.permute(3, 2, 0, 1).contiguous()
    if name.endswith("head.weight"):
        return t.T.contiguous()
    return t


def from_torch(name, t):
    """Inverse of :func:`to_torch` (for gradients)."""
    if t.ndim == 4:
        return t.permute(2, 3, 1, 0).numpy()
    if name.endswith("head.weight"):
        return t.T.numpy()
    return t.numpy()


def load_into(module, state, prefix=""):
    """Copy minivit's state dict (params + running stats) into ``module`` (float64)."""
    module.double()
    sd = module.state_dict()
    for k in list(sd):
        if k.endswith("num_batches_tracked"):
            continue
        sd[k] = to_torch(k, state[prefix + k])
    module.load_state_dict(sd)
    return module
