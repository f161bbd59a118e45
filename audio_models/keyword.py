"""The keyword-spotting CNN: TensorFlow's "simple audio recognition" recipe, exported and reloaded.

Recipe: |STFT| (frame 255, step 128) of a one-second 16 kHz waveform ->
resize to 32x32 -> normalise (mean/variance of the training set) ->
Conv2D 32 -> Conv2D 64 -> MaxPool -> Dropout 0.25 -> Flatten -> Dense 128 ->
Dropout 0.5 -> Dense(labels).

Training uses the Keras model from ``build_classifier``.  The export is a
plain ``tf.Module`` that re-states the same forward pass with ``tf.nn`` ops
over the trained weights, so the SavedModel needs no Keras to load and its
serving signature is exactly ours:

    serving_default(waveform: float32 [B, 16000]) ->
        scores [B, L] (softmax), class_ids [B] int32, class_names [B] string,
        embedding [B, 128] (the ReLU output of the Dense(128) layer)

The STFT frontend is inside the export.  The spec travels with the weights as
``assets/model_spec.json`` and ``assets/labels.txt``; ``load_keyword_spec``
reads only those (plus the variables, for the fingerprint), so a driver can
plan a job without loading TensorFlow's graph.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from audio_models import model_assets
from audio_models.loading import ModelSource, read_errors_as_unavailable, register_kind
from audio_models.spec import EMBEDDING, SCORES, ModelSpec, checked_windows
from transforms import storage

KIND = "keyword"
SAMPLE_RATE = 16000
WINDOW_SAMPLES = 16000
DEFAULT_HOP_SAMPLES = 8000
FRAME_LENGTH = 255
FRAME_STEP = 128
IMAGE_SIZE = (32, 32)
EMBEDDING_DIM = 128
SPEC_ASSET = model_assets.SPEC_ASSET  # assets/model_spec.json
LABELS_ASSET = model_assets.LABELS_ASSET  # assets/labels.txt
SIGNATURE = "serving_default"
# Serving-signature names besides SCORES and EMBEDDING.
WAVEFORM_INPUT = "waveform"
CLASS_IDS = "class_ids"
CLASS_NAMES = "class_names"

# Keras layer names; the export reads the trained weights by these names.
_CONV1, _CONV2, _EMBEDDING_DENSE, _LOGITS = "conv1", "conv2", "embedding", "logits"
_NORMALIZATION = "normalization"


# --- frontend -----------------------------------------------------------------------------------

def spectrogram(waveforms):
    """``[B, 16000]`` -> STFT magnitude ``[B, 124, 129, 1]`` (the recipe's frontend)."""
    stft = tf.signal.stft(waveforms, frame_length=FRAME_LENGTH, frame_step=FRAME_STEP)
    return tf.abs(stft)[..., tf.newaxis]


def spectrogram_shape() -> tuple[int, int, int]:
    frames = 1 + (WINDOW_SAMPLES - FRAME_LENGTH) // FRAME_STEP
    bins = 2 ** int(np.ceil(np.log2(FRAME_LENGTH))) // 2 + 1
    return frames, bins, 1


def resized_spectrogram(waveforms):
    """What the Normalization layer sees: the 32x32 resized spectrogram."""
    return tf.image.resize(spectrogram(waveforms), IMAGE_SIZE)


# --- the Keras model used for training ----------------------------------------------------------

def build_classifier(num_labels: int, mean: float, variance: float, seed: int = 0):
    """The recipe's CNN on spectrograms ``[B, 124, 129, 1]``, returning logits ``[B, num_labels]``.

    ``mean``/``variance`` are the Normalization statistics adapted on the
    training set (see ``normalization_stats``).
    """
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=spectrogram_shape(), name="spectrogram")
    x = layers.Resizing(*IMAGE_SIZE)(inputs)
    x = layers.Normalization(mean=mean, variance=variance, name=_NORMALIZATION)(x)
    x = layers.Conv2D(32, 3, activation="relu", name=_CONV1)(x)
    x = layers.Conv2D(64, 3, activation="relu", name=_CONV2)(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Dropout(0.25)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(EMBEDDING_DIM, activation="relu", name=_EMBEDDING_DENSE)(x)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(num_labels, name=_LOGITS)(x)
    return keras.Model(inputs, outputs, name="keyword_cnn")


def normalization_stats(waveforms: np.ndarray, batch_size: int = 256) -> tuple[float, float]:
    """Mean and variance of the resized spectrograms of ``waveforms`` (the Normalization adapt step)."""
    total, total_sq, count = 0.0, 0.0, 0
    for start in range(0, len(waveforms), batch_size):
        images = resized_spectrogram(waveforms[start:start + batch_size]).numpy().astype(np.float64)
        total += images.sum()
        total_sq += np.square(images).sum()
        count += images.size
    mean = total / count
    return float(mean), float(max(total_sq / count - mean * mean, 0.0))


# --- export -------------------------------------------------------------------------------------

class KeywordServingModule(tf.Module):
    """The exported model: the recipe's forward pass in ``tf.nn`` ops over trained Keras weights."""

    def __init__(self, classifier, labels: Sequence[str], weights_dtype: str = "float32"):
        super().__init__(name="keyword_cnn")
        norm = classifier.get_layer(_NORMALIZATION)
        # Keras keeps mean/variance broadcastable to the input; ours are per-channel scalars.
        self.norm_mean = tf.Variable(np.asarray(norm.mean, np.float32).reshape(-1)[:1],
                                     trainable=False, name="norm_mean")
        self.norm_variance = tf.Variable(np.asarray(norm.variance, np.float32).reshape(-1)[:1],
                                         trainable=False, name="norm_variance")
        self.kernels, self.biases = {}, {}
        for name in (_CONV1, _CONV2, _EMBEDDING_DENSE, _LOGITS):
            kernel, bias = classifier.get_layer(name).get_weights()
            # float16 storage halves the export; the forward pass casts back to float32.
            self.kernels[name] = tf.Variable(kernel.astype(weights_dtype), trainable=False,
                                             name=f"{name}_kernel")
            self.biases[name] = tf.Variable(bias.astype(np.float32), trainable=False, name=f"{name}_bias")
        self.labels = tf.constant(list(labels), tf.string)

    def _weights(self, name: str):
        return tf.cast(self.kernels[name], tf.float32), self.biases[name]

    # autograph=False: the graph is plain ops with no Python control flow to convert.
    @tf.function(input_signature=[tf.TensorSpec([None, WINDOW_SAMPLES], tf.float32, name=WAVEFORM_INPUT)],
                 autograph=False)
    def serve(self, waveform):
        x = resized_spectrogram(waveform)
        # Keras' Normalization: (x - mean) / max(sqrt(var), epsilon).
        x = (x - self.norm_mean) / tf.maximum(tf.sqrt(self.norm_variance), 1e-7)
        for name in (_CONV1, _CONV2):
            kernel, bias = self._weights(name)
            x = tf.nn.relu(tf.nn.conv2d(x, kernel, strides=1, padding="VALID") + bias)
        x = tf.nn.max_pool2d(x, ksize=2, strides=2, padding="VALID")
        x = tf.reshape(x, [tf.shape(x)[0], -1])  # Keras' Flatten of channels-last maps
        kernel, bias = self._weights(_EMBEDDING_DENSE)
        embedding = tf.nn.relu(tf.matmul(x, kernel) + bias)
        kernel, bias = self._weights(_LOGITS)
        scores = tf.nn.softmax(tf.matmul(embedding, kernel) + bias)
        class_ids = tf.argmax(scores, axis=-1, output_type=tf.int32)
        return {
            SCORES: scores,
            CLASS_IDS: class_ids,
            CLASS_NAMES: tf.gather(self.labels, class_ids),
            EMBEDDING: embedding,
        }


def spec_document(labels: Sequence[str], hop_samples: int = DEFAULT_HOP_SAMPLES) -> dict:
    """The JSON stored as ``assets/model_spec.json``."""
    return {
        "kind": KIND,
        "sample_rate": SAMPLE_RATE,
        "window_samples": WINDOW_SAMPLES,
        "hop_samples": hop_samples,
        "labels": list(labels),
        "signature": SIGNATURE,
        "input": WAVEFORM_INPUT,
        "scores_output": SCORES,
        "embedding_output": EMBEDDING,
        "embedding_dim": EMBEDDING_DIM,
        "frontend": {"stft_frame_length": FRAME_LENGTH, "stft_frame_step": FRAME_STEP,
                     "image_size": list(IMAGE_SIZE)},
    }


def export_keyword_model(classifier, labels: Sequence[str], export_dir: str,
                         weights_dtype: str = "float32",
                         hop_samples: int = DEFAULT_HOP_SAMPLES) -> ModelSpec:
    """Writes a SavedModel with the serving signature above plus its spec assets; returns the spec.

    ``weights_dtype='float16'`` stores the kernels at half size (biases and
    normalisation stay float32); they are cast to float32 when the model runs.
    """
    if weights_dtype not in ("float32", "float16"):
        raise ValueError(f"weights_dtype must be float32 or float16, not {weights_dtype!r}")
    module = KeywordServingModule(classifier, labels, weights_dtype)
    with tempfile.TemporaryDirectory() as staging:
        # Tracked assets are copied into <export_dir>/assets/ under their base names.
        spec_path = os.path.join(staging, SPEC_ASSET)
        labels_path = os.path.join(staging, LABELS_ASSET)
        with open(spec_path, "w") as f:
            json.dump(spec_document(labels, hop_samples), f, indent=2)
        with open(labels_path, "w") as f:
            f.write("".join(f"{label}\n" for label in labels))
        module.spec_asset = tf.saved_model.Asset(spec_path)
        module.labels_asset = tf.saved_model.Asset(labels_path)
        tf.saved_model.save(module, export_dir, signatures={SIGNATURE: module.serve})
    return load_keyword_spec(export_dir, hop_samples)


# --- loading ------------------------------------------------------------------------------------

def weights_fingerprint(path: str) -> str:
    """SHA-256 over the SavedModel's variables files (names and bytes, in name order)."""
    variables_dir = storage.join(path, "variables")
    return storage.fingerprint([storage.join(variables_dir, n) for n in storage.list_names(variables_dir)],
                               with_names=True)


def read_spec_document(path: str) -> dict:
    """``assets/model_spec.json`` of a keyword export; raises if missing or of another kind."""
    document = model_assets.read_spec_document(path)
    if document is None:
        raise FileNotFoundError(f"{path} is not an exported keyword model (no assets/{SPEC_ASSET})")
    if document.get("kind") != KIND:
        raise ValueError(f"{path} holds a {document.get('kind')!r} model, not a {KIND!r} one")
    return document


def load_keyword_spec(path: str, hop_samples: int | None = None) -> ModelSpec:
    """The spec of the exported model at ``path`` (local or ``gs://``); hop defaults to the stored one."""
    document = read_spec_document(path)
    hop = int(hop_samples) if hop_samples is not None else int(document["hop_samples"])
    if hop <= 0:
        raise ValueError(f"hop_samples must be positive, not {hop}")
    return ModelSpec(
        name=KIND,
        sample_rate=int(document["sample_rate"]),
        window_samples=int(document["window_samples"]),
        hop_samples=hop,
        class_names=tuple(document["labels"]),
        embedding_dim=int(document.get("embedding_dim", 0)),
        fingerprint=weights_fingerprint(path),
    )


class KeywordModel:
    """An exported keyword model behind the ``BatchedModel`` interface."""

    def __init__(self, spec: ModelSpec, loaded, signature: str = SIGNATURE,
                 input_name: str = WAVEFORM_INPUT):
        self.spec = spec
        self._loaded = loaded  # owns the restored variables the signature function reads
        self._serve = loaded.signatures[signature]
        self._input_name = input_name

    def predict(self, windows: np.ndarray, with_logmel: bool = False) -> dict[str, np.ndarray]:
        """``windows [B, 16000]`` -> ``scores [B, L]`` and ``embedding [B, 128]``.

        The frontend is an STFT, not a log-mel: ``with_logmel`` is accepted and
        ignored (no ``logmel`` output), as the protocol allows.
        """
        windows = checked_windows(windows, self.spec)
        if windows.shape[0] == 0:
            return {SCORES: np.zeros((0, self.spec.num_classes), np.float32),
                    EMBEDDING: np.zeros((0, self.spec.embedding_dim), np.float32)}
        outputs = self._serve(**{self._input_name: tf.constant(windows)})
        return {SCORES: outputs[SCORES].numpy(), EMBEDDING: outputs[EMBEDDING].numpy()}


def load_keyword_model(path: str, hop_samples: int | None = None) -> KeywordModel:
    """Loads the exported model at ``path`` (local or ``gs://``) as a ``BatchedModel``."""
    spec = load_keyword_spec(path, hop_samples)
    document = read_spec_document(path)
    loaded = tf.saved_model.load(storage.local_copy(path))
    return KeywordModel(spec, loaded, document.get("signature", SIGNATURE),
                        document.get("input", WAVEFORM_INPUT))


# --- registration with tag_audio's model loading ------------------------------------------------

def _hop_samples(source: ModelSource) -> int | None:
    return None if source.hop_s is None else int(round(source.hop_s * SAMPLE_RATE))


_EXPORT_HINT = " (export one with python -m beam_jobs.train_keyword)"


def _spec_for(source: ModelSource) -> ModelSpec:
    with read_errors_as_unavailable(f"read a keyword model from {source.path}", _EXPORT_HINT):
        return load_keyword_spec(source.local_path(), _hop_samples(source))


def _model_for(source: ModelSource) -> KeywordModel:
    with read_errors_as_unavailable(f"read a keyword model from {source.path}", _EXPORT_HINT):
        return load_keyword_model(source.local_path(), _hop_samples(source))


register_kind(KIND, _spec_for, _model_for,
              path_hint="/path/to/model (a directory written by python -m beam_jobs.train_keyword)")
