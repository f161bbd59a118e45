"""The per-patch log-mel statistics: the NumPy twin (frames tables) and the TensorFlow twin (exported
heads) give the same features, so a head trained on one serves with the other."""

from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from audio_models.logmel_features import logmel_statistics, logmel_statistics_tf  # noqa: E402


def test_numpy_and_tensorflow_statistics_agree():
    patches = np.random.default_rng(5).normal(-4.0, 2.0, (7, 96, 64)).astype(np.float32)
    numpy_stats = logmel_statistics(patches)
    assert numpy_stats.shape == (7, 128) and numpy_stats.dtype == np.float32
    np.testing.assert_allclose(numpy_stats[:, :64], patches.mean(axis=1), atol=1e-5)
    np.testing.assert_allclose(numpy_stats[:, 64:], patches.std(axis=1), atol=1e-5)  # population std
    np.testing.assert_allclose(np.asarray(logmel_statistics_tf(patches)), numpy_stats, atol=1e-4)
