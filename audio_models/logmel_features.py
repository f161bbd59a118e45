"""Per-patch log-mel statistics: each band's mean over the patch's frames, then each band's std.

One formula, two implementations side by side: NumPy for the frames table that tag_audio writes
(``logmel_stats``), TensorFlow for an exported head that computes the same features in its graph
from the patches YAMNet sees. Training on one and serving with the other only works while they agree.
"""

from __future__ import annotations

import numpy as np


def logmel_statistics(logmel: np.ndarray) -> np.ndarray:
    """[B, patch_frames, bands] -> [B, 2 * bands]: per-band mean, then per-band (population) std."""
    return np.concatenate([logmel.mean(axis=1), logmel.std(axis=1)], axis=1).astype(np.float32)


def logmel_statistics_tf(logmel_patches):
    """``logmel_statistics`` as TensorFlow ops, for graphs that are saved and served."""
    import tensorflow as tf  # only graphs need it; the frames table stays NumPy

    return tf.concat([tf.reduce_mean(logmel_patches, axis=1), tf.math.reduce_std(logmel_patches, axis=1)],
                     axis=1)
