"""minivit: a Vision Transformer (Dosovitskiy et al., ICLR 2021) from scratch in NumPy and
Numba, with every backward pass written by hand.

``minivit.load("default")`` gives the bundled CIFAR-10 model (or any checkpoint: a run
folder or a .npz path); ``print(model.summary())`` shows its parts and parameters."""
import os as _os

# On a few cores, NumPy's BLAS and Numba's thread pool take turns dozens of times per
# training step; if idle workers busy-wait they steal the other pool's cores (measured
# 30-40% slower on 2 cores). These only take effect if set before NumPy/Numba start their
# pools, and never override a user's choice.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from .config import PRESETS, ViTConfig
from .errors import (CheckpointError, ConfigError, DataError, MinivitError, TrainingError)
from .hub import load
from .model import ViT, init_params

__version__ = "0.1.0"
__all__ = ["ViT", "ViTConfig", "PRESETS", "init_params", "load", "MinivitError", "ConfigError",
           "DataError", "CheckpointError", "TrainingError", "__version__"]
