"""Reading YAMNet's weights and class map from the formats it ships in.

Two formats, one in-memory layout (``YamnetWeights``: Keras layer name ->
weight name -> array, the names of the official ``yamnet.py``):

- the TF Hub SavedModel (``google/yamnet/1``): read straight from its
  checkpoint, ``variables/variables``, without executing the graph;
- the released Keras weights ``yamnet.h5`` (``Model.save_weights`` in HDF5).

Files are read through ``storage``, so ``gs://`` paths work too.
"""

from __future__ import annotations

import csv
import dataclasses
import io

import numpy as np
import tensorflow as tf

import storage

CLASS_MAP_NAME = "yamnet_class_map.csv"
NUM_CLASSES = 521
EMBEDDING_DIM = 1024


@dataclasses.dataclass(frozen=True)
class LayerDef:
    """One MobileNet-v1 layer of YAMNet (official ``_YAMNET_LAYER_DEFS``)."""

    index: int  # 1-based, as in the Keras names 'layerN/...'
    separable: bool  # False: a full 3x3 conv (layer 1 only); True: depthwise 3x3 + pointwise 1x1
    stride: int
    filters: int


LAYER_DEFS: tuple[LayerDef, ...] = tuple(
    LayerDef(i + 1, i > 0, stride, filters)
    for i, (stride, filters) in enumerate([
        (2, 32), (1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
        (1, 512), (1, 512), (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024)]))

DENSE = "dense"
KERNEL, DEPTHWISE_KERNEL, BIAS = "kernel", "depthwise_kernel", "bias"
BETA, MOVING_MEAN, MOVING_VARIANCE, GAMMA = "beta", "moving_mean", "moving_variance", "gamma"
BATCHNORM_WEIGHTS = (BETA, MOVING_MEAN, MOVING_VARIANCE)

# Keras layer name -> weight name -> array.
YamnetWeights = dict[str, dict[str, np.ndarray]]


def conv_layer_names(layer: LayerDef) -> list[str]:
    """Names of the convolutions of ``layer``, in network order; each has a BatchNorm at ``name + '/bn'``."""
    if not layer.separable:
        return [f"layer{layer.index}/conv"]
    return [f"layer{layer.index}/depthwise_conv", f"layer{layer.index}/pointwise_conv"]


def expected_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
    """Every weight YAMNet has, with its shape (BatchNorm: center=True, scale=False)."""
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    channels = 1
    for layer in LAYER_DEFS:
        if layer.separable:
            depthwise, pointwise = conv_layer_names(layer)
            shapes[depthwise] = {DEPTHWISE_KERNEL: (3, 3, channels, 1)}
            shapes[depthwise + "/bn"] = {name: (channels,) for name in BATCHNORM_WEIGHTS}
            shapes[pointwise] = {KERNEL: (1, 1, channels, layer.filters)}
            shapes[pointwise + "/bn"] = {name: (layer.filters,) for name in BATCHNORM_WEIGHTS}
        else:
            (conv,) = conv_layer_names(layer)
            shapes[conv] = {KERNEL: (3, 3, channels, layer.filters)}
            shapes[conv + "/bn"] = {name: (layer.filters,) for name in BATCHNORM_WEIGHTS}
        channels = layer.filters
    shapes[DENSE] = {KERNEL: (EMBEDDING_DIM, NUM_CLASSES), BIAS: (NUM_CLASSES,)}
    return shapes


def validate(weights: YamnetWeights, origin: str) -> YamnetWeights:
    """Checks that ``weights`` has every YAMNet weight with the right shape; returns it as float32."""
    checked: YamnetWeights = {}
    for layer, names in expected_shapes().items():
        if layer not in weights:
            raise ValueError(f"{origin}: no weights for YAMNet layer {layer!r}")
        checked[layer] = {}
        for name, shape in names.items():
            value = weights[layer].get(name)
            if value is None:
                raise ValueError(f"{origin}: layer {layer!r} has no {name!r}")
            if tuple(value.shape) != shape:
                raise ValueError(f"{origin}: {layer}/{name} has shape {tuple(value.shape)}, expected {shape}")
            checked[layer][name] = np.asarray(value, np.float32)
        if GAMMA in weights[layer]:  # not in YAMNet (scale=False), but harmless to honour
            checked[layer][GAMMA] = np.asarray(weights[layer][GAMMA], np.float32)
    return checked


# --- TF Hub SavedModel --------------------------------------------------------------------------

def _checkpoint_layer_names() -> list[str]:
    """Keras layer names in checkpoint order: ``_yamnet/layer_with_weights-K`` is the K-th."""
    names = []
    for layer in LAYER_DEFS:
        for conv in conv_layer_names(layer):
            names += [conv, conv + "/bn"]
    return names + [DENSE]


def savedmodel_checkpoint_prefix(model_dir: str) -> str:
    return storage.join(model_dir, "variables", "variables")


def read_savedmodel_weights(model_dir: str) -> YamnetWeights:
    """YAMNet's weights from a TF Hub-format SavedModel directory (local or ``gs://``)."""
    # TensorFlow reads a local copy: its own gs:// client ignores the storage endpoint settings.
    variables = storage.local_copy(storage.join(model_dir, "variables"))
    reader = tf.train.load_checkpoint(storage.join(variables, "variables"))
    available = reader.get_variable_to_shape_map()
    weights: YamnetWeights = {}
    for k, layer in enumerate(_checkpoint_layer_names()):
        prefix = f"_yamnet/layer_with_weights-{k}/"
        weights[layer] = {
            key[len(prefix):].split("/", 1)[0]: reader.get_tensor(key)
            for key in available if key.startswith(prefix)}
    return validate(weights, model_dir)


def savedmodel_weight_files(model_dir: str) -> list[str]:
    """The checkpoint files of a SavedModel (index and data shards), in name order."""
    variables_dir = storage.join(model_dir, "variables")
    return [storage.join(variables_dir, name) for name in storage.list_names(variables_dir)
            if name.startswith("variables.")]


# --- Keras HDF5 weights (yamnet.h5) -------------------------------------------------------------

def read_h5_weights(path: str) -> YamnetWeights:
    """YAMNet's weights from a Keras ``save_weights`` HDF5 file, e.g. the released ``yamnet.h5``.

    The layout is Keras 2's: root attribute ``layer_names``; per layer a group
    (its name may contain '/', i.e. nested groups) with attribute
    ``weight_names`` ('layer1/conv/kernel:0', ...) naming datasets in that group.
    """
    import h5py  # only the .h5 path needs it

    data = io.BytesIO(storage.read_bytes(path))  # h5py cannot read gs:// itself; the file is ~15 MB
    weights: YamnetWeights = {}
    with h5py.File(data, "r") as h5:
        root = h5.get("model_weights", h5)  # a whole-model save also works
        if "layer_names" not in root.attrs:
            raise ValueError(f"{path}: not a Keras HDF5 weights file (no 'layer_names' attribute; "
                             "Keras 3 '.weights.h5' files are not supported)")
        for layer in _h5_names(root.attrs, "layer_names"):
            group = root[layer]
            values = {}
            for weight_name in _h5_names(group.attrs, "weight_names"):
                short = weight_name.rsplit("/", 1)[-1].split(":", 1)[0]  # 'layer1/conv/kernel:0' -> 'kernel'
                values[short] = np.asarray(group[weight_name])
            if values:
                weights[layer] = values
    return validate(weights, path)


def _h5_names(attrs, name: str) -> list[str]:
    """A list-of-names attribute; Keras splits long ones into ``name0``, ``name1``, ..."""
    if name in attrs:
        chunks = [attrs[name]]
    else:
        chunks, i = [], 0
        while f"{name}{i}" in attrs:
            chunks.append(attrs[f"{name}{i}"])
            i += 1
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for chunk in chunks for n in chunk]


# --- class map and fingerprint ------------------------------------------------------------------

def read_class_names(class_map_path: str) -> tuple[str, ...]:
    """``display_name`` column of a YAMNet class map CSV (columns index, mid, display_name)."""
    rows = list(csv.DictReader(storage.read_text(class_map_path).splitlines()))
    if not rows or "display_name" not in rows[0]:
        raise ValueError(f"{class_map_path}: not a YAMNet class map (no display_name column)")
    return tuple(row["display_name"] for row in rows)
