"""A classifier head on YAMNet features, and its end-to-end export that tag_audio runs as ``--model head``.

Training (``beam_jobs.train_head``) uses the Keras model of ``build_head``:
the YAMNet transfer-learning recipe's two dense layers (ReLU hidden layer,
then logits) over the training set's z-scored ``features`` vector.

The export is one SavedModel that goes from audio to the head's classes::

    serving_default(waveform: float32 [B, 15600]) ->
        scores [B, C] (softmax), class_ids [B] int32, class_names [B] string,
        embedding [B, 1024] (YAMNet's), logmel [B, 96, 64] (YAMNet's log-mel patch)
    from_features(<raw feature name>: float32 [B, dim], ...) -> the same scores, class_ids, class_names

``serving_default`` runs the project's batched YAMNet graph (``audio_models.yamnet``),
builds the training set's raw features from
each window (a pooled layout treats a window as a clip of one frame), applies
the tf.Transform graph (``TFTransformOutput.transform_features_layer``) and
the head.  ``from_features`` starts from raw features, e.g. the embeddings of
an existing frames table.  The spec travels as ``assets/model_spec.json`` and
``assets/labels.txt``; the fingerprint is the SHA-256 of the variables files, which
hold the head, the transform and YAMNet's own fingerprint (its weights are graph
constants, as in ``audio_models.yamnet``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

import storage
from audio_models import model_assets
from audio_models import yamnet_weights as yw
from audio_models.loading import ModelSource, ModelUnavailableError, read_errors_as_unavailable, register_kind
from audio_models.spec import EMBEDDING, LOGMEL, SCORES, ModelSpec, predict_windows
from audio_models.yamnet import HOP_SAMPLES, SAMPLE_RATE, WINDOW_SAMPLES, YamnetModel
from schemas import training as ts

KIND = "head"
SPEC_ASSET = model_assets.SPEC_ASSET
LABELS_ASSET = model_assets.LABELS_ASSET
SIGNATURE = model_assets.SIGNATURE
FEATURES_SIGNATURE = "from_features"
WAVEFORM_INPUT = model_assets.WAVEFORM_INPUT
CLASS_IDS = "class_ids"
CLASS_NAMES = "class_names"
EXPORT_DIR = "export"  # HEAD_DIR/export

# Keras layer names; the export reads the trained weights by these names.
HIDDEN, LOGITS = "hidden", "logits"


# --- the Keras model used for training ----------------------------------------------------------

def build_head(input_dim: int, num_classes: int, hidden_units: int = 512, dropout: float = 0.0,
               seed: int = 0):
    """Dense(hidden_units, relu) -> [Dropout] -> Dense(num_classes): logits over z-scored features."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(input_dim,), name=ts.FEATURES)
    x = layers.Dense(hidden_units, activation="relu", name=HIDDEN)(inputs)
    if dropout > 0:
        x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(num_classes, name=LOGITS)(x)
    return keras.Model(inputs, outputs, name="yamnet_head")


# --- export -------------------------------------------------------------------------------------

def frame_raw_features(layout: ts.FeatureLayout, embedding, logmel_patches) -> dict:
    """The raw features of single frames, as build_training_set makes them (pooled: a clip of one frame)."""
    from audio_models.logmel import MEL_BANDS
    from audio_models.logmel_features import logmel_statistics_tf

    columns = {}
    if ts.EMBEDDING in layout.columns:
        columns[ts.EMBEDDING] = embedding
    if ts.LOGMEL_STATS in layout.columns:
        stats = logmel_statistics_tf(logmel_patches)  # as the frames table's logmel_stats column
        tf.debugging.assert_equal(tf.shape(stats)[1], 2 * MEL_BANDS)
        columns[ts.LOGMEL_STATS] = stats
    return {name: columns[column] for name, column, _, _ in layout.raw_features()}


class HeadExportModule(tf.Module):
    """YAMNet -> raw features -> tf.Transform -> head, as one module to save."""

    def __init__(self, yamnet: YamnetModel, transform_output, classifier, labels: Sequence[str],
                 layout: ts.FeatureLayout):
        super().__init__(name="yamnet_head")
        # YAMNet's graph exactly as the project runs it, weights as graph constants (its choice: oneDNN
        # caches constant filters), with no device pinned so the export runs wherever it is loaded.
        self._yamnet = copy.copy(yamnet)
        self._yamnet.device = None
        # The variables files hold the head and the transform; this makes their hash cover YAMNet too.
        self.yamnet_fingerprint = tf.Variable(yamnet.spec.fingerprint, trainable=False, dtype=tf.string)
        self.tft_layer = transform_output.transform_features_layer()  # tracks the transform's graph
        self._layout = layout
        self.kernels, self.biases = {}, {}
        for name in (HIDDEN, LOGITS):
            kernel, bias = classifier.get_layer(name).get_weights()
            self.kernels[name] = tf.Variable(kernel.astype(np.float32), trainable=False,
                                             name=f"{name}_kernel")
            self.biases[name] = tf.Variable(bias.astype(np.float32), trainable=False, name=f"{name}_bias")
        self.labels = tf.constant(list(labels), tf.string)

    def classify(self, raw_features: dict) -> dict:
        features = self.tft_layer(raw_features)[ts.FEATURES]
        hidden = tf.nn.relu(tf.matmul(features, self.kernels[HIDDEN]) + self.biases[HIDDEN])
        scores = tf.nn.softmax(tf.matmul(hidden, self.kernels[LOGITS]) + self.biases[LOGITS])
        class_ids = tf.argmax(scores, axis=-1, output_type=tf.int32)
        return {SCORES: scores, CLASS_IDS: class_ids, CLASS_NAMES: tf.gather(self.labels, class_ids)}

    @tf.function(input_signature=[tf.TensorSpec([None, WINDOW_SAMPLES], tf.float32, name=WAVEFORM_INPUT)])
    def serve(self, waveform):
        outputs = self._yamnet._graph(waveform)
        raw = frame_raw_features(self._layout, outputs[EMBEDDING], outputs[LOGMEL])
        return {**self.classify(raw), EMBEDDING: outputs[EMBEDDING], LOGMEL: outputs[LOGMEL]}

    def features_function(self):
        """``from_features``: keyword inputs named after the raw features."""
        specs = {name: tf.TensorSpec([None, dim], tf.float32, name=name)
                 for name, _, _, dim in self._layout.raw_features()}
        return tf.function(lambda **raw: self.classify(raw)).get_concrete_function(**specs)


def spec_document(labels: Sequence[str], layout: ts.FeatureLayout, base_model: dict, head: dict) -> dict:
    """The JSON stored as ``assets/model_spec.json`` (model_assets' keys, plus what made the head)."""
    return model_assets.waveform_spec_document(
        KIND, SAMPLE_RATE, WINDOW_SAMPLES, HOP_SAMPLES, labels, yw.EMBEDDING_DIM,
        features_signature=FEATURES_SIGNATURE, layout=layout.to_document(), base_model=base_model, head=head)


def export_head(yamnet: YamnetModel, transform_output, classifier, labels: Sequence[str],
                layout: ts.FeatureLayout, export_dir: str, base_model: dict | None = None,
                head: dict | None = None) -> ModelSpec:
    """Writes the end-to-end SavedModel (local or ``gs://``) with its spec assets; returns its spec."""
    module = HeadExportModule(yamnet, transform_output, classifier, labels, layout)
    document = spec_document(labels, layout, base_model or {}, head or {})
    with model_assets.spec_assets(module, document, labels):
        signatures = {SIGNATURE: module.serve.get_concrete_function(),
                      FEATURES_SIGNATURE: module.features_function()}
        with storage.local_output_dir(export_dir) as local:  # TensorFlow writes local files only
            tf.saved_model.save(module, local, signatures=signatures)
    return load_head_spec(export_dir)


# --- loading ------------------------------------------------------------------------------------

def _path(source: ModelSource | str) -> str:
    return source if isinstance(source, str) else source.local_path()


def read_spec_document(path: str) -> dict:
    spec_path = storage.join(path, "assets", SPEC_ASSET)
    if not storage.exists(spec_path):
        raise ModelUnavailableError(f"{path} is not a train_head export (no assets/{SPEC_ASSET}): pass "
                                    f"--model_path HEAD_DIR/{EXPORT_DIR}")
    document = storage.read_json(spec_path)
    if document.get("kind") != KIND:
        raise ModelUnavailableError(f"{spec_path} describes a {document.get('kind')!r} model, not a head: "
                                    f"use --model {document.get('kind')}")
    return document


def _check_hop(source: ModelSource | str) -> None:
    hop_s = None if isinstance(source, str) else source.hop_s
    if hop_s is not None and round(hop_s * SAMPLE_RATE) != HOP_SAMPLES:
        raise ModelUnavailableError(f"a head runs on YAMNet frames, whose hop is fixed at "
                                    f"{HOP_SAMPLES / SAMPLE_RATE} s (got --hop_s {hop_s})")


def load_head_spec(source: ModelSource | str) -> ModelSpec:
    """The spec of the export at ``source`` (local or ``gs://``), without loading its graph."""
    _check_hop(source)
    path = _path(source)
    document = read_spec_document(path)
    return model_assets.spec_of_document(document, storage.fingerprint(yw.savedmodel_weight_files(path)))


def read_head_layout(source: ModelSource | str) -> ts.FeatureLayout:
    """Which frame columns the head at ``source`` reads (``embedding``, ``logmel_stats``)."""
    return ts.FeatureLayout.from_document(read_spec_document(_path(source))["layout"])


def read_base_model(source: ModelSource | str) -> dict:
    """What made the frames the head was trained on (kind, identity, fingerprint, config id); may be {}."""
    return dict(read_spec_document(_path(source)).get("base_model") or {})


class HeadModel:
    """An exported head behind the ``BatchedModel`` interface."""

    def __init__(self, spec: ModelSpec, loaded, layout: ts.FeatureLayout | None = None):
        self.spec = spec
        self.layout = layout
        self._loaded = loaded  # keeps the restored variables alive as long as the functions
        self._serve = loaded.signatures[SIGNATURE]
        self._from_features = loaded.signatures[FEATURES_SIGNATURE]

    def predict(self, windows: np.ndarray, with_logmel: bool = False) -> dict[str, np.ndarray]:
        """``windows [B, 15600]`` -> scores ``[B, C]``, YAMNet's embedding (and its log-mel patches)."""
        return predict_windows(lambda batch: self._serve(**{WAVEFORM_INPUT: tf.constant(batch)}), windows,
                               self.spec, with_logmel)

    def predict_features(self, raw_features: dict[str, np.ndarray]) -> np.ndarray:
        """Scores ``[B, C]`` from raw training-set features (e.g. a frames table's embeddings)."""
        outputs = self._from_features(**{k: tf.constant(np.asarray(v, np.float32))
                                         for k, v in raw_features.items()})
        return outputs[SCORES].numpy()

    def score_frames(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        """Scores ``[B, C]`` from frame columns (``embedding [B, 1024]``, ``logmel_stats [B, 128]`` as the
        layout needs): a window is a clip of one frame, as the export's waveform path treats it."""
        count = len(next(iter(columns.values())))
        if count == 0:
            return np.zeros((0, self.spec.num_classes), np.float32)
        raw = {name: columns[column] for name, column, _, _ in self.layout.raw_features()}
        return self.predict_features(raw)


def load_head_model(source: ModelSource | str) -> HeadModel:
    """Loads the export at ``source`` (local or ``gs://``) as a ``BatchedModel``."""
    spec = load_head_spec(source)
    path = _path(source)
    with read_errors_as_unavailable(f"load the head export {path}"):
        loaded = tf.saved_model.load(storage.local_copy(path))
    return HeadModel(spec, loaded, read_head_layout(path))


register_kind(KIND, load_head_spec, load_head_model,
              path_hint=f"HEAD_DIR/{EXPORT_DIR} (a train_head export, local or gs://)", needs_graph=True)
