"""2-D convolution as im2col + one GEMM (the conv stem of the hybrid, paper §3.1, and the
ResNet baseline), and its adjoint col2im.

Layout: images and feature maps are (B, H, W, C) (channels last, like the rest of
minivit), kernels are HWIO (k, k, C_in, C_out) — the official checkpoints' layout. A
receptive field is flattened in (h, w, c) order, the same order as a ViT patch, so a conv
with k = stride = P and no padding *is* the patch embedding of Eq. 1.

    y[b, i, j, f] = Σ_{u,v,c} x_pad[b, i·s + u, j·s + v, c] · W[u, v, c, f] + b[f]

im2col gathers every receptive field into a row of ``cols`` (B·H_o·W_o, k·k·C_in), so the
whole layer is ``cols @ W.reshape(k·k·C_in, C_out)`` — one BLAS sgemm. Backward is two
more GEMMs (dW = colsᵀ dy, dcols = dy Wᵀ) and col2im, the scatter-add of dcols back onto
the pixels each field came from (a pixel in several fields sums their gradients).
"""
import numpy as np

from ..errors import ConfigError


def conv_output_size(n, k, stride=1, padding=0):
    """Output side of a convolution or pooling window: ⌊(n + 2·padding − k)/stride⌋ + 1.

    Raises ConfigError naming the numbers when the window does not fit or an argument is
    not a positive (padding: non-negative) integer.
    """
    for name, v, lo in (("kernel size", k, 1), ("stride", stride, 1), ("padding", padding, 0)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
            raise ConfigError(f"{name} must be an integer >= {lo}, got {v!r}")
    if n + 2 * padding < k:
        raise ConfigError(f"kernel size k={k} is larger than the padded input "
                          f"({n} + 2·{padding} = {n + 2 * padding})")
    return (n + 2 * padding - k) // stride + 1


def conv_shapes(xshape, wshape, stride, padding):
    """(H_o, W_o) of a conv of x: (B, H, W, C) with kernels (k, k, C, C_out). Raises
    ConfigError naming the problem (non-square kernel, channel mismatch, bad numbers)."""
    k, k2, Cin, _ = wshape
    if k != k2:
        raise ConfigError(f"conv kernels must be square, got {k}x{k2}")
    if Cin != xshape[3]:
        raise ConfigError(f"input has {xshape[3]} channels, the conv kernel expects {Cin}")
    return (conv_output_size(xshape[1], k, stride, padding),
            conv_output_size(xshape[2], k, stride, padding))


def im2col(x, k, stride=1, padding=0):
    """x: (B, H, W, C) → cols: (B·H_o·W_o, k·k·C), each row one receptive field in
    (h, w, c) order; zero padding of ``padding`` pixels on every side."""
    B, H, W, C = x.shape
    Ho, Wo = conv_output_size(H, k, stride, padding), conv_output_size(W, k, stride, padding)
    if padding:
        x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    if k == 1:                                  # 1×1 conv (projection shortcut): no copy of fields
        return np.ascontiguousarray(x[:, ::stride, ::stride][:, :Ho, :Wo]).reshape(-1, C)
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))  # (B, ., ., C, k, k)
    win = win[:, ::stride, ::stride][:, :Ho, :Wo]
    return np.ascontiguousarray(win.transpose(0, 1, 2, 4, 5, 3)).reshape(B * Ho * Wo, k * k * C)


def col2im(dcols, xshape, k, stride=1, padding=0):
    """Adjoint of :func:`im2col`. dcols: (B·H_o·W_o, k·k·C) → dx: (B, H, W, C), the
    gradients of all fields that saw a pixel summed (⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩)."""
    B, H, W, C = xshape
    Ho, Wo = conv_output_size(H, k, stride, padding), conv_output_size(W, k, stride, padding)
    d = dcols.reshape(B, Ho, Wo, k, k, C)
    dxp = np.zeros((B, H + 2 * padding, W + 2 * padding, C), dtype=dcols.dtype)
    # One vectorised add per kernel offset (u, v): k² adds, not H_o·W_o.
    for u in range(k):
        for v in range(k):
            dxp[:, u:u + stride * (Ho - 1) + 1:stride,
                v:v + stride * (Wo - 1) + 1:stride, :] += d[:, :, :, u, v, :]
    return dxp[:, padding:padding + H, padding:padding + W, :]


def conv2d_forward(x, W, b=None, stride=1, padding=0):
    """x: (B, H, W, C_in); W: (k, k, C_in, C_out); b: (C_out,) or None.

    Returns y: (B, H_o, W_o, C_out) with H_o = ⌊(H + 2·padding − k)/stride⌋ + 1, and the
    cache. Raises ConfigError when the channels of x and W disagree.
    """
    B, _, _, C = x.shape
    k, _, _, F = W.shape
    Ho, Wo = conv_shapes(x.shape, W.shape, stride, padding)
    cols = im2col(x, k, stride, padding)
    y = cols @ W.reshape(k * k * C, F)                    # the one GEMM
    if b is not None:
        y += b
    return y.reshape(B, Ho, Wo, F), (cols, W, b is not None, x.shape, stride, padding)


def conv2d_backward(dy, cache, need_dx=True):
    """dy: (B, H_o, W_o, C_out). Returns dx: (B, H, W, C_in) (None unless need_dx),
    dW: (k, k, C_in, C_out), db: (C_out,) (None when the layer has no bias)."""
    cols, W, has_b, xshape, stride, padding = cache
    k, _, Cin, F = W.shape
    dy2 = dy.reshape(-1, F)
    dW = (cols.T @ dy2).reshape(W.shape)                  # Σ over every output pixel
    db = dy2.sum(axis=0) if has_b else None
    dx = col2im(dy2 @ W.reshape(-1, F).T, xshape, k, stride, padding) if need_dx else None
    return dx, dW, db
