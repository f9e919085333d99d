"""minivit: a Vision Transformer (Dosovitskiy et al., ICLR 2021) from scratch in NumPy and
Numba, with every backward pass written by hand."""
from .config import PRESETS, ViTConfig
from .errors import (CheckpointError, ConfigError, DataError, MinivitError, TrainingError)
from .model import ViT, init_params

__version__ = "0.1.0"
__all__ = ["ViT", "ViTConfig", "PRESETS", "init_params", "MinivitError", "ConfigError",
           "DataError", "CheckpointError", "TrainingError", "__version__"]
