"""The NumPy reference ops: one concept per module, each a forward/backward pair.

Contract (cs231n / llm.c style): ``*_forward(...) -> (out, cache)`` and
``*_backward(dout, cache) -> grads``. The cache holds exactly what backward needs. Every op
runs in float32 and float64 (the dtype of the inputs is kept), so gradient checks in
float64 are meaningful. These functions are the specification the Numba and CUDA backends
are tested against.
"""
from .activations import gelu_backward, gelu_forward, tanh_backward, tanh_forward
from .attention import (attention_backward, attention_forward, mhsa_core_backward,
                        mhsa_core_forward, mhsa_backward, mhsa_forward)
from .dropout import (dropout_backward, dropout_forward, dropout_mask, drop_path_mask,
                      keep_tokens_backward, keep_tokens_forward, patch_keep_indices)
from .embedding import (pos2d_backward, pos2d_forward, pos_add_backward, pos_add_forward,
                        sincos2d_pos_embed, tokens_backward, tokens_forward)
from .layernorm import layernorm_backward, layernorm_forward
from .linear import linear_backward, linear_forward
from .losses import cross_entropy_backward, cross_entropy_forward, softmax_cross_entropy
from .patches import patch_grid, patches_backward, patches_forward
from .pooling import mean_tokens_backward, mean_tokens_forward
from .softmax import softmax_backward, softmax_forward

__all__ = [n for n in dir() if not n.startswith("_")]
