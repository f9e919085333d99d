"""Pooling. Over k × k windows every ``stride`` pixels (no padding), and global average
pooling (the ResNet's last step before its linear classifier), x: (B, H, W, C); and the
ViT's global average pooling over the tokens (the ``gap`` classifier, paper Appendix D.3):

    y = (1/N) Σ_n LN(z_L)_n

With ``classifier="gap"`` there is no class token: the official code (vit_jax
``models_vit.py`` and big_vision ``vit.py``) applies the final LayerNorm to every token
and then averages them, and the head reads that mean.
"""
import numpy as np

from .conv import conv_output_size


def _windows(x, k, stride):
    # (B, H_o, W_o, C, k·k) view/copy of every window, values in (u, v) order.
    B, H, W, C = x.shape
    Ho, Wo = conv_output_size(H, k, stride), conv_output_size(W, k, stride)
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))
    return win[:, ::stride, ::stride][:, :Ho, :Wo].reshape(B, Ho, Wo, C, k * k), Ho, Wo


def _scatter(dwin, xshape, k, stride, Ho, Wo):
    # Adjoint of _windows: dwin (B, H_o, W_o, C, k·k) summed back onto the pixels.
    dx = np.zeros(xshape, dtype=dwin.dtype)
    for u in range(k):
        for v in range(k):
            dx[:, u:u + stride * (Ho - 1) + 1:stride,
               v:v + stride * (Wo - 1) + 1:stride, :] += dwin[..., u * k + v]
    return dx


def maxpool2d_forward(x, k=2, stride=None):
    """x: (B, H, W, C) → y: (B, H_o, W_o, C), the max of each k × k window (stride
    defaults to k), and the cache (the argmax of each window)."""
    stride = k if stride is None else stride
    win, Ho, Wo = _windows(x, k, stride)
    arg = win.argmax(axis=-1)                  # first maximum on ties, as torch on CPU
    y = np.take_along_axis(win, arg[..., None], axis=-1)[..., 0]
    return y, (arg, x.shape, k, stride)


def maxpool2d_backward(dy, cache):
    """dy: (B, H_o, W_o, C) → dx: (B, H, W, C): each window's gradient goes to its argmax
    (summed where overlapping windows share one)."""
    arg, xshape, k, stride = cache
    B, Ho, Wo, C = dy.shape
    dwin = np.zeros((B, Ho, Wo, C, k * k), dtype=dy.dtype)
    np.put_along_axis(dwin, arg[..., None], dy[..., None], axis=-1)
    return _scatter(dwin, xshape, k, stride, Ho, Wo)


def avgpool2d_forward(x, k=2, stride=None):
    """x: (B, H, W, C) → y: (B, H_o, W_o, C), the mean of each k × k window, and cache."""
    stride = k if stride is None else stride
    win, Ho, Wo = _windows(x, k, stride)
    return win.mean(axis=-1), (x.shape, k, stride)


def avgpool2d_backward(dy, cache):
    """dy: (B, H_o, W_o, C) → dx: (B, H, W, C), dy/k² spread over each window."""
    xshape, k, stride = cache
    B, Ho, Wo, C = dy.shape
    dwin = np.broadcast_to((dy / (k * k))[..., None], (B, Ho, Wo, C, k * k))
    return _scatter(dwin, xshape, k, stride, Ho, Wo)


def global_avgpool_forward(x):
    """x: (B, H, W, C) → y: (B, C), the mean over all H·W positions, and the cache."""
    return x.mean(axis=(1, 2)), x.shape


def global_avgpool_backward(dy, cache):
    """dy: (B, C) → dx: (B, H, W, C) = dy/(H·W) at every position."""
    B, H, W, C = cache
    return np.broadcast_to((dy / (H * W))[:, None, None, :], cache).copy()


def mean_tokens_forward(z):
    """z: (B, N, D) → y: (B, D), the mean over the N tokens, and the cache (z's shape)."""
    return z.mean(axis=1), z.shape


def mean_tokens_backward(dy, cache):
    """dy: (B, D) → dz: (B, N, D) = dy / N broadcast to every token."""
    B, N, D = cache
    dz = np.empty((B, N, D), dtype=dy.dtype)
    dz[...] = (dy / dy.dtype.type(N))[:, None, :]
    return dz
