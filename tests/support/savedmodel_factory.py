"""Tiny waveform SavedModels made on the spot, shaped like the encoders users bring.

Each is a real ``tf.Module`` saved with ``tf.saved_model.save`` and seeded
random weights, so loading and calling it exercises exactly what a user's
export does:

- ``save_batched_encoder``: ``serving_default(waveform [B, 16000]) -> {embedding [B, 8], scores [B, 3]}``,
  a dense layer over 25 ms frames, averaged; ``assets/labels.txt`` and ``assets/model_spec.json``.
- ``save_single_waveform_encoder``: ``__call__(samples [N]) -> [1, 8]`` (one waveform, as TF Hub models take).
- ``save_sequence_encoder``: ``serve(audio [B, N]) -> {last_hidden_state [B, T, 16], extract_features
  [B, T, 4]}`` with T = 1 + (N - 400) // 320, like wav2vec2's 25 ms field and 20 ms stride.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

BATCHED_LABELS = ("dog", "cat", "bird")
BATCHED_HOP_SAMPLES = 8000  # what its model_spec.json says
EMBEDDING_DIM = 8
SEQUENCE_DIM = 16
SEQUENCE_FRAME, SEQUENCE_STEP = 400, 320


def _weights(seed: int, *shape: int, scale: float = 0.05) -> tf.Variable:
    rng = np.random.default_rng(seed)
    return tf.Variable(rng.normal(0.0, scale, shape).astype(np.float32), trainable=False)


class BatchedEncoder(tf.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        self.frame_kernel = _weights(seed, 400, EMBEDDING_DIM)
        self.score_kernel = _weights(seed + 1, EMBEDDING_DIM, len(BATCHED_LABELS), scale=1.0)

    @tf.function(input_signature=[tf.TensorSpec([None, 16000], tf.float32, name="waveform")])
    def serve(self, waveform):
        frames = tf.reshape(waveform, [-1, 40, 400])
        embedding = tf.reduce_mean(tf.tanh(frames @ self.frame_kernel), axis=1)
        return {"embedding": embedding, "scores": tf.sigmoid(embedding @ self.score_kernel)}


class SingleWaveformEncoder(tf.Module):
    def __init__(self, seed: int = 2):
        super().__init__()
        self.kernel = _weights(seed, 400, EMBEDDING_DIM)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="samples")])
    def __call__(self, samples):
        frames = tf.signal.frame(samples, 400, 400)
        return tf.reduce_mean(tf.tanh(frames @ self.kernel), axis=0, keepdims=True)


class SequenceEncoder(tf.Module):
    def __init__(self, seed: int = 3):
        super().__init__()
        self.kernel = _weights(seed, SEQUENCE_FRAME, SEQUENCE_DIM)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="audio")])
    def serve(self, audio):
        frames = tf.signal.frame(audio, SEQUENCE_FRAME, SEQUENCE_STEP)
        return {"last_hidden_state": tf.nn.gelu(frames @ self.kernel), "extract_features": frames[..., :4]}


def save_batched_encoder(export_dir: Path, spec_document: dict | None = None) -> Path:
    """With ``assets/labels.txt`` and ``assets/model_spec.json`` (default: sample rate and hop only)."""
    module = BatchedEncoder()
    document = spec_document if spec_document is not None else {
        "sample_rate": 16000, "hop_samples": BATCHED_HOP_SAMPLES}
    with tempfile.TemporaryDirectory() as staging:
        labels = Path(staging) / "labels.txt"
        labels.write_text("".join(f"{label}\n" for label in BATCHED_LABELS))
        spec = Path(staging) / "model_spec.json"
        spec.write_text(json.dumps(document))
        module.labels_asset = tf.saved_model.Asset(str(labels))
        module.spec_asset = tf.saved_model.Asset(str(spec))
        tf.saved_model.save(module, str(export_dir), signatures={"serving_default": module.serve})
    return export_dir


def save_single_waveform_encoder(export_dir: Path) -> Path:
    tf.saved_model.save(SingleWaveformEncoder(), str(export_dir))  # serving_default comes from __call__
    return export_dir


def save_sequence_encoder(export_dir: Path) -> Path:
    module = SequenceEncoder()
    tf.saved_model.save(module, str(export_dir), signatures={"serving_default": module.serve})
    return export_dir


def call_signature(export_dir: Path, **inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Calls the saved model's serving signature directly (the reference the job is compared with)."""
    loaded = tf.saved_model.load(str(export_dir))
    outputs = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in inputs.items()})
    return {name: value.numpy() for name, value in outputs.items()}
