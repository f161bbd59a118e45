"""YAMNet, batched: ``[B, 15600]`` windows -> 521 AudioSet scores and a 1024-d embedding per window.

The official model takes one waveform, pads and frames it inside the graph,
and runs MobileNet v1 on 96x64 log-mel patches.  Here framing happens before
the model (``transforms.decoding.windows``), so windows from many files share one
batch; since each frame depends only on its own 15600 samples, the outputs are
those of the official graph (``tests/audio_models/test_yamnet.py`` measures the difference).

The network is plain ``tf.nn`` ops in one ``tf.function`` with a
``[None, 15600]`` signature: traced once, whatever the batch size.  Choices
measured on CPU (``python -m bench.model_throughput``; the numbers are in
docs/performance.md):

- each BatchNorm (center=True, scale=False, epsilon=1e-4, inference
  statistics) is folded into the convolution before it, so a layer is
  conv + bias + ReLU, one fused oneDNN kernel instead of three;
- weights are graph constants, so oneDNN reorders each filter into its
  blocked layout once instead of on every call;
- the frontend is the official one, op for op (``logmel``);
- NHWC, no XLA: ``jit_compile`` made this model many times slower on CPU.

``compute_dtype`` 'float16' or 'bfloat16' runs the convolutions in that type
(the log-mel frontend, the pooling and the classifier stay float32); whether
the outputs stay close enough to float32 is measured by ``bench.gpu``, and the
product runs float32.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

import storage
from audio_models import logmel
from audio_models import yamnet_weights as yw
from audio_models.device import selected_device
from audio_models.spec import EMBEDDING, LOGMEL, SCORES, ModelSpec, predict_windows

NAME = "yamnet"
SAMPLE_RATE = logmel.SAMPLE_RATE
WINDOW_SAMPLES = logmel.WINDOW_SAMPLES  # 15600: 0.975 s
HOP_SAMPLES = logmel.HOP_SAMPLES  # 7680: 0.48 s
BATCHNORM_EPSILON = 1e-4
COMPUTE_DTYPES = ("float32", "float16", "bfloat16")


def yamnet_spec(class_names: tuple[str, ...], fingerprint: str) -> ModelSpec:
    if len(class_names) != yw.NUM_CLASSES:
        raise ValueError(f"YAMNet has {yw.NUM_CLASSES} classes; the class map lists {len(class_names)}")
    return ModelSpec(name=NAME, sample_rate=SAMPLE_RATE, window_samples=WINDOW_SAMPLES,
                     hop_samples=HOP_SAMPLES, class_names=tuple(class_names),
                     embedding_dim=yw.EMBEDDING_DIM, fingerprint=fingerprint)


def _fold_batchnorm(kernel: np.ndarray, bn: dict[str, np.ndarray], depthwise: bool
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``bn(conv(x, kernel))`` as ``conv(x, kernel') + bias`` (computed in float64, stored float32)."""
    scale = bn.get(yw.GAMMA, np.ones_like(bn[yw.BETA])).astype(np.float64) / np.sqrt(
        bn[yw.MOVING_VARIANCE].astype(np.float64) + BATCHNORM_EPSILON)
    # Output channels are the last kernel axis, except for a depthwise kernel [3, 3, C, 1].
    folded = kernel.astype(np.float64) * (scale[:, None] if depthwise else scale)
    bias = bn[yw.BETA].astype(np.float64) - bn[yw.MOVING_MEAN].astype(np.float64) * scale
    return folded.astype(np.float32), bias.astype(np.float32)


class _ConvLayer:
    """conv (full or depthwise, 3x3 or 1x1, 'SAME') + folded BatchNorm + ReLU."""

    def __init__(self, kernel: np.ndarray, bn: dict[str, np.ndarray], stride: int, depthwise: bool):
        self.kernel, self.bias = _fold_batchnorm(kernel, bn, depthwise)
        self.stride = stride
        self.depthwise = depthwise

    def __call__(self, net: tf.Tensor) -> tf.Tensor:
        # Weights enter the graph as constants (not captured tensors): oneDNN then converts each
        # filter to its blocked layout once and caches it, instead of on every call (~8% of the time).
        # In another compute type the cast of a constant is folded into a constant too.
        kernel = tf.cast(tf.constant(self.kernel), net.dtype)
        if self.depthwise:
            net = tf.nn.depthwise_conv2d(net, kernel, [1, self.stride, self.stride, 1], "SAME")
        else:
            net = tf.nn.conv2d(net, kernel, self.stride, "SAME")
        return tf.nn.relu(tf.nn.bias_add(net, tf.cast(tf.constant(self.bias), net.dtype)))


class YamnetModel:
    """YAMNet behind the ``BatchedModel`` interface (``audio_models.spec``)."""

    def __init__(self, weights: yw.YamnetWeights, spec: ModelSpec, device: str | None = None,
                 compute_dtype: str = "float32"):
        """``weights`` as the ``yamnet_weights`` readers return them (checked, float32)."""
        if compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype is one of {', '.join(COMPUTE_DTYPES)}, not {compute_dtype!r}")
        self.spec = spec
        self.device = device or selected_device()
        self.compute_dtype = compute_dtype
        self._layers: list[_ConvLayer] = []
        for layer in yw.LAYER_DEFS:
            for name in yw.conv_layer_names(layer):
                depthwise = name.endswith("/depthwise_conv")
                kernel = weights[name][yw.DEPTHWISE_KERNEL if depthwise else yw.KERNEL]
                stride = 1 if name.endswith("/pointwise_conv") else layer.stride
                self._layers.append(_ConvLayer(kernel, weights[name + "/bn"], stride, depthwise))
        self._dense_kernel = weights[yw.DENSE][yw.KERNEL]
        self._dense_bias = weights[yw.DENSE][yw.BIAS]
        self._forward = tf.function(
            self._graph, input_signature=[tf.TensorSpec([None, WINDOW_SAMPLES], tf.float32)])

    @classmethod
    def from_savedmodel(cls, model_dir: str, class_map: str | None = None,
                        device: str | None = None, compute_dtype: str = "float32") -> YamnetModel:
        """From a TF Hub-format SavedModel directory (local or ``gs://``), without running its graph."""
        weights = yw.read_savedmodel_weights(model_dir)
        class_map = class_map or storage.join(model_dir, "assets", yw.CLASS_MAP_NAME)
        spec = yamnet_spec(yw.read_class_names(class_map),
                           storage.fingerprint(yw.savedmodel_weight_files(model_dir)))
        return cls(weights, spec, device, compute_dtype)

    @classmethod
    def from_h5(cls, path: str, class_map: str, device: str | None = None) -> YamnetModel:
        """From Keras HDF5 weights (the released ``yamnet.h5``) and a class map CSV."""
        spec = yamnet_spec(yw.read_class_names(class_map), storage.fingerprint([path]))
        return cls(yw.read_h5_weights(path), spec, device)

    def _graph(self, windows: tf.Tensor) -> dict[str, tf.Tensor]:
        with tf.device(self.device):
            patches = logmel.log_mel_patches(windows)  # [B, 96, 64]
            net = patches[..., tf.newaxis]  # NHWC: oneDNN's layout; on GPUs grappler converts for cuDNN
            net = tf.cast(net, self.compute_dtype)  # no-op in float32
            for layer in self._layers:
                net = layer(net)
            embedding = tf.reduce_mean(tf.cast(net, tf.float32), axis=[1, 2])
            logits = tf.matmul(embedding, tf.constant(self._dense_kernel)) + tf.constant(self._dense_bias)
            return {SCORES: tf.sigmoid(logits), EMBEDDING: embedding, LOGMEL: patches}

    @property
    def graph_traces(self) -> int:
        """How many times TensorFlow traced the model's graph (once for any batch size)."""
        return self._forward.experimental_get_tracing_count()

    def predict(self, windows: np.ndarray, with_logmel: bool = False) -> dict[str, np.ndarray]:
        """``windows [B, 15600]`` float32 in [-1, 1] at 16 kHz -> scores, embedding (and logmel)."""
        return predict_windows(lambda batch: self._forward(tf.constant(batch)), windows, self.spec,
                               with_logmel)
