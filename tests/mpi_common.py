"""The tiny model and data shared by tests/test_mpi.py and the ranks it launches."""
from minivit import ViTConfig
from minivit.data.synthetic import make_synthetic

CFG = ViTConfig(image_size=8, patch_size=4, dim=16, depth=2, heads=2, mlp_dim=32, num_classes=4)
DATA = make_synthetic(n_train=64, n_test=24, image_size=8, num_classes=4, seed=0)
# 4 steps per epoch at batch 16; soft targets (mixup, label smoothing) and clipping on,
# so the shard-mean weighting and the global clipping norm are both exercised
FAST = dict(batch_size=16, warmup_epochs=0.5, backend="numpy", lr=2e-3, crop_padding=1,
            mixup=0.2, label_smoothing=0.1, clip_norm=0.5)
