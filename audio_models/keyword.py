"""The keyword-spotting model: two recipes, their export for serving, and reloading.

``ds_cnn`` (the default): a log-mel frontend with per-utterance normalisation
(40 mel bands of 30 ms frames every 10 ms, ``log(mel + 1e-6)``, minus the
clip's mean, over its standard deviation) feeding a depthwise-separable CNN:
a 10x4 convolution (strides 2 in time, 4 in frequency), then blocks of 3x3 depthwise + 1x1 pointwise
convolutions (batch norm and ReLU after each, optionally with skip
connections), global average pooling, Dense 128 (the embedding) and
Dense(labels).  With ``members`` > 1 the export holds that many such
networks (trained with different seeds) and scores with the mean of their
softmax outputs.

``seed``: TensorFlow's "simple audio recognition" recipe, kept for
comparison: |STFT| (frame 255, step 128) -> resize to 32x32 -> normalise
(mean/variance of the training set) -> Conv2D 32 -> Conv2D 64 -> MaxPool ->
Dropout 0.25 -> Flatten -> Dense 128 -> Dropout 0.5 -> Dense(labels).

Training uses Keras models on the frontend's features (``features``).  The
export is a plain ``tf.Module`` that re-states the forward pass, frontend
included, with ``tf.nn`` ops over the trained weights (batch norm folded into
the convolutions), so the SavedModel needs no Keras to load and its serving
signature is exactly ours:

    serving_default(waveform: float32 [B, 16000]) ->
        scores [B, L] (softmax), class_ids [B] int32, class_names [B] string,
        embedding [B, 128] (the ReLU output of the Dense(128) layer)

The spec travels with the weights as ``assets/model_spec.json`` and
``assets/labels.txt``; ``load_keyword_spec`` reads only those (plus the
variables, for the fingerprint), so a driver can plan a job without loading
TensorFlow's graph.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

import storage
from audio_models import model_assets
from audio_models.loading import ModelSource, read_errors_as_unavailable, register_kind
from audio_models.spec import EMBEDDING, SCORES, ModelSpec, checked_windows

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
SIGNATURE = model_assets.SIGNATURE
# Serving-signature names besides SCORES and EMBEDDING.
WAVEFORM_INPUT = model_assets.WAVEFORM_INPUT
CLASS_IDS = "class_ids"
CLASS_NAMES = "class_names"

SEED, DS_CNN = "seed", "ds_cnn"
RECIPES = (DS_CNN, SEED)

# The ds_cnn frontend: log-mel of 30 ms frames every 10 ms -> [B, 98, 40].
MEL_FRAME_LENGTH = 480
MEL_FRAME_STEP = 160
MEL_FFT_LENGTH = 512
MEL_BANDS = 40
MEL_LOWER_HZ = 20.0
MEL_UPPER_HZ = 7600.0
LOG_OFFSET = 1e-6
# Per-utterance normalisation divides by max(std, this): a near-constant input (digital silence, a
# faint noise floor) stays near zero instead of being blown up to unit variance.
MIN_UTTERANCE_STD = 0.5

# Keras layer names; the export reads the trained weights by these names.
_CONV1, _CONV2, _EMBEDDING_DENSE, _LOGITS = "conv1", "conv2", "embedding", "logits"
_NORMALIZATION = "normalization"
_STEM = "stem"


# --- frontend -----------------------------------------------------------------------------------

def spectrogram(waveforms, warp=None):
    """``[B, 16000]`` -> STFT magnitude ``[B, 124, 129, 1]`` (the recipe's frontend).

    ``warp`` (training only): per-clip frequency scale factors ``[B]`` (see ``warp_frequencies``).
    """
    stft = tf.signal.stft(waveforms, frame_length=FRAME_LENGTH, frame_step=FRAME_STEP)
    magnitude = tf.abs(stft)
    if warp is not None:
        magnitude = warp_frequencies(magnitude, warp)
    return magnitude[..., tf.newaxis]


def warp_frequencies(spectrum, factors):
    """``spectrum [B, T, K]`` (linear-frequency bins) with each clip's frequencies scaled by its factor.

    Bin ``k`` of clip ``b`` takes the value at bin ``k / factors[b]`` (linear interpolation; past the
    top bin the top bin's value): a factor above 1 moves formants and harmonics up, as a shorter vocal
    tract and a higher voice would, without changing the tempo.
    """
    bins = tf.shape(spectrum)[-1]
    source = tf.cast(tf.range(bins), tf.float32)[tf.newaxis, :] / tf.cast(factors, tf.float32)[:, tf.newaxis]
    source = tf.minimum(source, tf.cast(bins - 1, tf.float32))
    lower = tf.minimum(tf.cast(tf.floor(source), tf.int32), bins - 2)
    fraction = (source - tf.cast(lower, tf.float32))[:, tf.newaxis, :]
    left = tf.gather(spectrum, lower, axis=2, batch_dims=1)
    right = tf.gather(spectrum, lower + 1, axis=2, batch_dims=1)
    return left * (1.0 - fraction) + right * fraction


def spectrogram_shape() -> tuple[int, int, int]:
    frames = 1 + (WINDOW_SAMPLES - FRAME_LENGTH) // FRAME_STEP
    bins = 2 ** int(np.ceil(np.log2(FRAME_LENGTH))) // 2 + 1
    return frames, bins, 1


def resized_spectrogram(waveforms):
    """What the Normalization layer sees: the 32x32 resized spectrogram."""
    return tf.image.resize(spectrogram(waveforms), IMAGE_SIZE)


def log_mel(waveforms, mfcc: int = 0, warp=None):
    """``[B, 16000]`` -> per-utterance normalised log-mel ``[B, 98, 40]`` (or its first ``mfcc`` MFCCs).

    ``warp`` (training only): per-clip frequency scale factors ``[B]`` (see ``warp_frequencies``).
    """
    stft = tf.signal.stft(waveforms, frame_length=MEL_FRAME_LENGTH, frame_step=MEL_FRAME_STEP,
                          fft_length=MEL_FFT_LENGTH)
    power = tf.square(tf.abs(stft))
    if warp is not None:
        power = warp_frequencies(power, warp)
    matrix = tf.signal.linear_to_mel_weight_matrix(MEL_BANDS, MEL_FFT_LENGTH // 2 + 1, SAMPLE_RATE,
                                                   MEL_LOWER_HZ, MEL_UPPER_HZ)
    features = tf.math.log(tf.matmul(power, matrix) + LOG_OFFSET)
    if mfcc > 0:
        features = tf.signal.mfccs_from_log_mel_spectrograms(features)[..., :mfcc]
    mean, variance = tf.nn.moments(features, axes=[1, 2], keepdims=True)
    return (features - mean) / tf.maximum(tf.sqrt(variance), MIN_UTTERANCE_STD)


def log_mel_shape(mfcc: int = 0) -> tuple[int, int]:
    return 1 + (WINDOW_SAMPLES - MEL_FRAME_LENGTH) // MEL_FRAME_STEP, mfcc or MEL_BANDS


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What a keyword model is made of: the recipe and, for ``ds_cnn``, its frontend and size."""

    recipe: str = DS_CNN
    mfcc: int = 0  # > 0: that many MFCCs instead of the log-mel bands
    width: int = 64  # channels of every convolution
    frequency_stride: int = 4  # of the first convolution (its time stride is 2)
    blocks: int = 4  # depthwise-separable blocks
    residual: bool = False  # skip connections around the blocks
    dropout: float = 0.2
    members: int = 1  # > 1: an ensemble of that many networks (seeds seed .. seed + members - 1)

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {RECIPES}, not {self.recipe!r}")
        if self.members < 1:
            raise ValueError(f"members must be at least 1, not {self.members}")

    def features(self, waveforms, warp=None):
        """What the Keras classifier takes: the frontend's output for ``[B, 16000]`` waveforms
        (``warp``: per-clip frequency scale factors, a training augmentation)."""
        if self.recipe == SEED:
            return spectrogram(waveforms, warp)
        return log_mel(waveforms, self.mfcc, warp)

    def frontend_document(self) -> dict:
        if self.recipe == SEED:
            return {"type": "stft_resized", "stft_frame_length": FRAME_LENGTH, "stft_frame_step": FRAME_STEP,
                    "image_size": list(IMAGE_SIZE)}
        return {"type": "mfcc" if self.mfcc else "log_mel", "frame_length": MEL_FRAME_LENGTH,
                "frame_step": MEL_FRAME_STEP, "fft_length": MEL_FFT_LENGTH, "mel_bands": MEL_BANDS,
                "mel_hz": [MEL_LOWER_HZ, MEL_UPPER_HZ], "log_offset": LOG_OFFSET,
                "mfcc": self.mfcc, "normalisation": "per utterance: (x - mean) / max(std, "
                                                    f"{MIN_UTTERANCE_STD})"}

    def document(self) -> dict:
        if self.recipe == SEED:
            return {"recipe": SEED} if self.members == 1 else {"recipe": SEED, "members": self.members}
        return dataclasses.asdict(self)


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


def build_ds_cnn(num_labels: int, architecture: Architecture, seed: int = 0):
    """The depthwise-separable CNN on features ``[B, T, F]``, returning logits ``[B, num_labels]``."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    width = architecture.width
    inputs = keras.Input(shape=log_mel_shape(architecture.mfcc), name="features")
    x = layers.Reshape((*log_mel_shape(architecture.mfcc), 1))(inputs)
    x = layers.Conv2D(width, (10, 4), strides=(2, architecture.frequency_stride), padding="same",
                      use_bias=False, name=_STEM)(x)
    x = layers.ReLU()(layers.BatchNormalization(name=f"{_STEM}_bn")(x))
    for block in range(architecture.blocks):
        y = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"dw{block}")(x)
        y = layers.ReLU()(layers.BatchNormalization(name=f"dw{block}_bn")(y))
        y = layers.Conv2D(width, 1, use_bias=False, name=f"pw{block}")(y)
        y = layers.ReLU()(layers.BatchNormalization(name=f"pw{block}_bn")(y))
        x = layers.Add()([x, y]) if architecture.residual else y
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(architecture.dropout)(x)
    x = layers.Dense(EMBEDDING_DIM, activation="relu", name=_EMBEDDING_DENSE)(x)
    x = layers.Dropout(architecture.dropout)(x)
    outputs = layers.Dense(num_labels, name=_LOGITS)(x)
    return keras.Model(inputs, outputs, name="keyword_ds_cnn")


def embedding_model(classifier):
    """The classifier cut at its embedding: features -> ``[B, 128]``."""
    import keras

    return keras.Model(classifier.inputs, classifier.get_layer(_EMBEDDING_DENSE).output)


# --- export -------------------------------------------------------------------------------------

def layer_names(architecture: Architecture) -> list[str]:
    """The layers whose (kernel, bias) the export stores, in forward order."""
    if architecture.recipe == SEED:
        return [_CONV1, _CONV2, _EMBEDDING_DENSE, _LOGITS]
    names = [_STEM]
    for block in range(architecture.blocks):
        names += [f"dw{block}", f"pw{block}"]
    return names + [_EMBEDDING_DENSE, _LOGITS]


def trained_weights(classifier, architecture: Architecture) -> dict[str, np.ndarray]:
    """What the export stores, from a trained Keras classifier: per layer ``<name>_kernel`` and
    ``<name>_bias`` (batch norm folded into the convolution before it), plus the seed recipe's
    normalisation ``norm_mean`` and ``norm_variance``."""
    weights = {}
    for name in layer_names(architecture):
        layer = classifier.get_layer(name)
        if architecture.recipe == SEED or name in (_EMBEDDING_DENSE, _LOGITS):
            kernel, bias = layer.get_weights()
        else:
            kernel, bias = _folded(layer, classifier.get_layer(f"{name}_bn"), depthwise=name.startswith("dw"))
        weights[f"{name}_kernel"], weights[f"{name}_bias"] = kernel, bias
    if architecture.recipe == SEED:
        norm = classifier.get_layer(_NORMALIZATION)
        # Keras keeps mean/variance broadcastable to the input; ours are per-channel scalars.
        weights["norm_mean"] = np.asarray(norm.mean, np.float32).reshape(-1)[:1]
        weights["norm_variance"] = np.asarray(norm.variance, np.float32).reshape(-1)[:1]
    return weights


def _folded(conv_layer, bn_layer, depthwise: bool) -> tuple[np.ndarray, np.ndarray]:
    """A bias-free convolution followed by batch norm, as one kernel and bias (inference statistics)."""
    kernel = conv_layer.get_weights()[0]
    gamma, beta, mean, variance = bn_layer.get_weights()
    scale = gamma / np.sqrt(variance + bn_layer.epsilon)
    if depthwise:  # [kh, kw, channels, 1]: the scale is per input channel
        kernel = kernel * scale[np.newaxis, np.newaxis, :, np.newaxis]
    else:  # [kh, kw, in, out]
        kernel = kernel * scale
    return kernel, beta - mean * scale


class KeywordNetwork(tf.Module):
    """One trained network: frontend and forward pass in ``tf.nn`` ops over its weights."""

    def __init__(self, weights: dict[str, np.ndarray], architecture: Architecture,
                 weights_dtype: str = "float32", name: str | None = None):
        super().__init__(name=name or ("keyword_cnn" if architecture.recipe == SEED else "keyword_ds_cnn"))
        self.architecture = architecture
        names = layer_names(architecture)
        # float16 storage halves the export (kernels only); the forward pass casts back to float32.
        self.kernels = [tf.Variable(np.asarray(weights[f"{name}_kernel"]).astype(weights_dtype),
                                    trainable=False, name=f"{name}_kernel") for name in names]
        self.biases = [tf.Variable(np.asarray(weights[f"{name}_bias"], np.float32), trainable=False,
                                   name=f"{name}_bias") for name in names]
        if architecture.recipe == SEED:
            self.norm_mean = tf.Variable(weights["norm_mean"], trainable=False, name="norm_mean")
            self.norm_variance = tf.Variable(weights["norm_variance"], trainable=False, name="norm_variance")

    def _weights(self, index: int):
        return tf.cast(self.kernels[index], tf.float32), self.biases[index]

    def forward(self, waveform):
        """``[B, 16000]`` -> ``(softmax scores [B, L], embedding [B, 128])``."""
        if self.architecture.recipe == SEED:
            x = self._seed_body(waveform)
        else:
            x = self._ds_cnn_body(waveform)
        kernel, bias = self._weights(-2)
        embedding = tf.nn.relu(tf.matmul(x, kernel) + bias)
        kernel, bias = self._weights(-1)
        return tf.nn.softmax(tf.matmul(embedding, kernel) + bias), embedding

    def _seed_body(self, waveform):
        x = resized_spectrogram(waveform)
        # Keras' Normalization: (x - mean) / max(sqrt(var), epsilon).
        x = (x - self.norm_mean) / tf.maximum(tf.sqrt(self.norm_variance), 1e-7)
        for index in (0, 1):
            kernel, bias = self._weights(index)
            x = tf.nn.relu(tf.nn.conv2d(x, kernel, strides=1, padding="VALID") + bias)
        x = tf.nn.max_pool2d(x, ksize=2, strides=2, padding="VALID")
        return tf.reshape(x, [tf.shape(x)[0], -1])  # Keras' Flatten of channels-last maps

    def _ds_cnn_body(self, waveform):
        architecture = self.architecture
        x = log_mel(waveform, architecture.mfcc)[..., tf.newaxis]
        kernel, bias = self._weights(0)
        x = tf.nn.relu(tf.nn.conv2d(x, kernel, strides=[1, 2, architecture.frequency_stride, 1],
                                    padding="SAME") + bias)
        for block in range(architecture.blocks):
            kernel, bias = self._weights(1 + 2 * block)
            y = tf.nn.relu(tf.nn.depthwise_conv2d(x, kernel, strides=[1, 1, 1, 1], padding="SAME") + bias)
            kernel, bias = self._weights(2 + 2 * block)
            y = tf.nn.relu(tf.nn.conv2d(y, kernel, strides=1, padding="SAME") + bias)
            x = x + y if architecture.residual else y
        return tf.reduce_mean(x, axis=[1, 2])


_SERVING_SIGNATURE = [tf.TensorSpec([None, WINDOW_SAMPLES], tf.float32, name=WAVEFORM_INPUT)]


class KeywordServingModule(KeywordNetwork):
    """The exported model: one network and the serving signature."""

    def __init__(self, weights: dict[str, np.ndarray], labels: Sequence[str], architecture: Architecture,
                 weights_dtype: str = "float32"):
        super().__init__(weights, architecture, weights_dtype)
        self.labels = tf.constant(list(labels), tf.string)

    # autograph=False: the graph is plain ops; the Python branches are resolved when tracing.
    @tf.function(input_signature=_SERVING_SIGNATURE, autograph=False)
    def serve(self, waveform):
        return _outputs(*self.forward(waveform), self.labels)


class KeywordEnsembleModule(tf.Module):
    """The exported ensemble: networks of one architecture trained with different seeds.

    The scores are the mean of the members' softmax outputs; the embedding is the
    first member's (the members' embeddings are not aligned with each other, so
    their mean would mix unrelated units).
    """

    def __init__(self, members_weights: Sequence[dict[str, np.ndarray]], labels: Sequence[str],
                 architecture: Architecture, weights_dtype: str = "float32"):
        super().__init__(name="keyword_ensemble")
        self.architecture = architecture
        member = dataclasses.replace(architecture, members=1)
        self.members = [KeywordNetwork(weights, member, weights_dtype, name=f"member{i}")
                        for i, weights in enumerate(members_weights)]
        self.labels = tf.constant(list(labels), tf.string)

    @tf.function(input_signature=_SERVING_SIGNATURE, autograph=False)
    def serve(self, waveform):
        outputs = [member.forward(waveform) for member in self.members]
        scores = tf.add_n([scores for scores, _ in outputs]) / float(len(outputs))
        return _outputs(scores, outputs[0][1], self.labels)


def _outputs(scores, embedding, labels) -> dict:
    class_ids = tf.argmax(scores, axis=-1, output_type=tf.int32)
    return {SCORES: scores, CLASS_IDS: class_ids, CLASS_NAMES: tf.gather(labels, class_ids),
            EMBEDDING: embedding}


def spec_document(labels: Sequence[str], hop_samples: int = DEFAULT_HOP_SAMPLES,
                  architecture: Architecture = Architecture()) -> dict:
    """The JSON stored as ``assets/model_spec.json``."""
    return model_assets.waveform_spec_document(
        KIND, SAMPLE_RATE, WINDOW_SAMPLES, hop_samples, labels, EMBEDDING_DIM,
        frontend=architecture.frontend_document(), architecture=architecture.document())


def export_keyword_model(classifier, labels: Sequence[str], export_dir: str,
                         weights_dtype: str = "float32",
                         hop_samples: int = DEFAULT_HOP_SAMPLES,
                         architecture: Architecture = Architecture()) -> ModelSpec:
    """Writes a SavedModel with the serving signature above plus its spec assets; returns the spec.

    ``classifier`` is one trained Keras classifier, or a list of
    ``architecture.members`` of them for an ensemble.
    ``weights_dtype='float16'`` stores the kernels at half size (biases and
    normalisation stay float32); they are cast to float32 when the model runs.
    """
    classifiers = classifier if isinstance(classifier, (list, tuple)) else [classifier]
    if len(classifiers) != architecture.members:
        raise ValueError(f"{len(classifiers)} classifiers for {architecture.members} members")
    member = dataclasses.replace(architecture, members=1)
    weights = [trained_weights(c, member) for c in classifiers]
    return write_export(weights[0] if architecture.members == 1 else weights, labels, export_dir,
                        architecture, weights_dtype, hop_samples)


def convert_keyword_model(source: str, export_dir: str, weights_dtype: str) -> ModelSpec:
    """Writes the exported model at ``source`` again with its kernels stored as ``weights_dtype``."""
    document = read_spec_document(source)
    loaded = tf.saved_model.load(storage.local_copy(source))
    architecture = architecture_of(document)
    return write_export(stored_weights(loaded, architecture), document["labels"], export_dir, architecture,
                        weights_dtype, int(document["hop_samples"]))


def stored_weights(module, architecture: Architecture) -> dict[str, np.ndarray] | list[dict[str, np.ndarray]]:
    """The weights a serving module (live or restored from a SavedModel) stores, named as
    ``trained_weights`` names them; kernels in their stored dtype.  An ensemble's: one dict per member."""
    if architecture.members > 1:
        member = dataclasses.replace(architecture, members=1)
        return [stored_weights(network, member) for network in module.members]
    weights = {}
    for index, name in enumerate(layer_names(architecture)):
        # Exports written before the ds_cnn recipe keyed their seed-recipe variables by layer name.
        key = name if hasattr(module.kernels, "keys") else index
        weights[f"{name}_kernel"] = module.kernels[key].numpy()
        weights[f"{name}_bias"] = module.biases[key].numpy()
    if architecture.recipe == SEED:
        weights["norm_mean"] = module.norm_mean.numpy()
        weights["norm_variance"] = module.norm_variance.numpy()
    return weights


def architecture_of(document: dict) -> Architecture:
    """The architecture a spec document records (exports without one are the seed recipe's)."""
    return Architecture(**document.get("architecture", {"recipe": SEED}))


def write_export(weights: dict[str, np.ndarray] | Sequence[dict[str, np.ndarray]], labels: Sequence[str],
                 export_dir: str, architecture: Architecture, weights_dtype: str = "float32",
                 hop_samples: int = DEFAULT_HOP_SAMPLES) -> ModelSpec:
    """``weights``: one network's (``trained_weights``), or a list of the members' for an ensemble."""
    if weights_dtype not in ("float32", "float16"):
        raise ValueError(f"weights_dtype must be float32 or float16, not {weights_dtype!r}")
    if architecture.members > 1:
        module = KeywordEnsembleModule(weights, labels, architecture, weights_dtype)
    else:
        module = KeywordServingModule(weights, labels, architecture, weights_dtype)
    with (model_assets.spec_assets(module, spec_document(labels, hop_samples, architecture), labels),
          storage.local_output_dir(export_dir) as local):  # TensorFlow writes local files only
        tf.saved_model.save(module, local, signatures={SIGNATURE: module.serve})
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
    return model_assets.spec_of_document(document, weights_fingerprint(path), hop)


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

        The frontend is inside the export and not an output: ``with_logmel`` is
        accepted and ignored (no ``logmel`` output), as the protocol allows.
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
              path_hint="/path/to/model (a directory written by python -m beam_jobs.train_keyword)",
              needs_graph=True)
