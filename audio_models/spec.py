"""What every model the jobs run looks like from the outside.

A model is a spec (sample rate, window, hop, labels, output names) plus a
batched function ``[B, window_samples] float32 -> {output name: array}``.
The pipeline only ever talks to this interface, so YAMNet, the keyword CNN,
exported heads and user SavedModels are interchangeable.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from schemas.model_spec import ModelSpec

__all__ = ["EMBEDDING", "LOGMEL", "SCORES", "BatchedModel", "ModelSpec", "checked_windows",
           "predict_windows"]

# Output names a model may return from ``predict``.
SCORES = "scores"  # [B, num_classes] float32
EMBEDDING = "embedding"  # [B, embedding_dim] float32
LOGMEL = "logmel"  # [B, patch_frames, mel_bands] float32 (on request)


class BatchedModel(Protocol):
    """A loaded model: a spec and a batched predict function."""

    spec: ModelSpec

    def predict(self, windows: np.ndarray, with_logmel: bool = False) -> dict[str, np.ndarray]:
        """Runs the model on ``windows`` of shape ``[B, spec.window_samples]`` float32.

        Returns at least ``SCORES`` (``[B, num_classes]``) and, when
        ``spec.embedding_dim`` > 0, ``EMBEDDING``; ``LOGMEL`` when asked and supported.
        """
        ...


def checked_windows(windows: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """``windows`` as float32 ``[B, spec.window_samples]``; ValueError for any other shape."""
    windows = np.asarray(windows, dtype=np.float32)
    if windows.ndim != 2 or windows.shape[1] != spec.window_samples:
        raise ValueError(f"expected windows [B, {spec.window_samples}], got {windows.shape}")
    return windows


def predict_windows(forward, windows: np.ndarray, spec: ModelSpec, with_logmel: bool
                    ) -> dict[str, np.ndarray]:
    """``predict`` of a YAMNet-based model whose graph is ``forward(windows) -> {name: tensor}``: scores,
    embedding, and the log-mel patches on request; an empty batch is answered without the graph."""
    windows = checked_windows(windows, spec)
    names = [SCORES, EMBEDDING] + ([LOGMEL] if with_logmel else [])
    if windows.shape[0] == 0:
        from audio_models.logmel import MEL_BANDS, PATCH_FRAMES

        shapes = {SCORES: (0, spec.num_classes), EMBEDDING: (0, spec.embedding_dim),
                  LOGMEL: (0, PATCH_FRAMES, MEL_BANDS)}
        return {name: np.zeros(shapes[name], np.float32) for name in names}
    outputs = forward(windows)
    return {name: outputs[name].numpy() for name in names}
