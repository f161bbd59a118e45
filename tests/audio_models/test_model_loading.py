"""Resolving and loading models: SavedModel directories, the Keras yamnet.h5, hub handles, errors."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from audio_models import loading  # noqa: E402
from audio_models.loading import (  # noqa: E402
    ModelSource,
    ModelUnavailableError,
    UnknownModelKindError,
    load_model,
    load_spec,
    register_kind,
    resolve_source,
)
from audio_models.spec import EMBEDDING, SCORES  # noqa: E402

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
FIXTURE = SHARED / "fixtures" / "yamnet-hub-random"
APPROX = SHARED / "models" / "yamnet-approx"
CLASS_MAP = "yamnet_class_map.csv"

needs_fixture = pytest.mark.skipif(
    not (FIXTURE / "saved_model.pb").exists(),
    reason=f"the YAMNet fixture is not at {FIXTURE} (../shared next to the repository)")


def write_released_h5(weights_dir: Path, h5_path: Path, names_as_bytes: bool = True) -> None:
    """Writes ``weights_dir``'s weights as the released yamnet.h5 is laid out.

    The body is the official yamnet.py's, layer for layer and name for name
    (tf.keras, HDF5 ``save_weights``); the weights come from the SavedModel's
    checkpoint, independently of the reader under test.
    """
    import tensorflow as tf
    import tf_keras
    from tf_keras import layers

    reader = tf.train.load_checkpoint(str(weights_dir / "variables" / "variables"))

    def var(k: int, name: str) -> np.ndarray:
        return reader.get_tensor(f"_yamnet/layer_with_weights-{k}/{name}/.ATTRIBUTES/VARIABLE_VALUE")

    def bn(name: str, k: int):
        layer = layers.BatchNormalization(name=name, center=True, scale=False, epsilon=1e-4)
        return layer, [var(k, "beta"), var(k, "moving_mean"), var(k, "moving_variance")]

    strides = [2, 1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    filters = [32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
    features = layers.Input(shape=(96, 64))
    net = layers.Reshape((96, 64, 1))(features)
    assignments = []
    k = 0
    for i, (stride, n) in enumerate(zip(strides, filters), start=1):
        if i == 1:
            conv = layers.Conv2D(n, (3, 3), strides=stride, padding="same", use_bias=False,
                                 name="layer1/conv")
            norm, norm_weights = bn("layer1/conv/bn", 1)
            net = layers.ReLU(name="layer1/relu")(norm(conv(net)))
            assignments += [(conv, [var(0, "kernel")]), (norm, norm_weights)]
            k = 2
            continue
        depthwise = layers.DepthwiseConv2D((3, 3), strides=stride, depth_multiplier=1, padding="same",
                                           use_bias=False, name=f"layer{i}/depthwise_conv")
        depthwise_bn, depthwise_bn_weights = bn(f"layer{i}/depthwise_conv/bn", k + 1)
        net = layers.ReLU(name=f"layer{i}/depthwise_conv/relu")(depthwise_bn(depthwise(net)))
        pointwise = layers.Conv2D(n, (1, 1), strides=1, padding="same", use_bias=False,
                                  name=f"layer{i}/pointwise_conv")
        pointwise_bn, pointwise_bn_weights = bn(f"layer{i}/pointwise_conv/bn", k + 3)
        net = layers.ReLU(name=f"layer{i}/pointwise_conv/relu")(pointwise_bn(pointwise(net)))
        assignments += [(depthwise, [var(k, "depthwise_kernel")]), (depthwise_bn, depthwise_bn_weights),
                        (pointwise, [var(k + 2, "kernel")]), (pointwise_bn, pointwise_bn_weights)]
        k += 4
    embeddings = layers.GlobalAveragePooling2D()(net)
    dense = layers.Dense(521, use_bias=True, name="dense")  # the official code leaves Keras to name it
    predictions = layers.Activation("sigmoid")(dense(embeddings))
    assignments.append((dense, [var(54, "kernel"), var(54, "bias")]))
    model = tf_keras.Model(inputs=features, outputs=[predictions, embeddings], name="yamnet")
    for layer, values in assignments:
        layer.set_weights(values)
    model.save_weights(str(h5_path))
    if names_as_bytes:
        _names_as_bytes(h5_path)


def _names_as_bytes(h5_path: Path) -> None:
    """Stores the name lists as fixed-length byte strings, as the Keras of the 2019 release wrote
    them (``[name.encode('utf8') ...]``); today's tf_keras writes variable-length str."""
    import h5py

    def as_bytes(values) -> np.ndarray:
        return np.array([v.encode("utf-8") if isinstance(v, str) else v for v in values], dtype="S")

    with h5py.File(h5_path, "r+") as h5:
        names = list(h5.attrs["layer_names"])
        h5.attrs["layer_names"] = as_bytes(names)
        for name in names:
            group = h5[name.decode() if isinstance(name, bytes) else name]
            group.attrs["weight_names"] = as_bytes(list(group.attrs["weight_names"]))


@pytest.fixture(scope="module")
def released_h5(tmp_path_factory) -> Path:
    """A yamnet.h5 with the fixture's weights and, next to it, the class map (as users keep them)."""
    if not (FIXTURE / "saved_model.pb").exists():
        pytest.skip(f"the YAMNet fixture is not at {FIXTURE}")
    directory = tmp_path_factory.mktemp("release")
    write_released_h5(FIXTURE, directory / "yamnet.h5")
    shutil.copyfile(FIXTURE / "assets" / CLASS_MAP, directory / CLASS_MAP)  # outside the repo
    return directory / "yamnet.h5"


@pytest.fixture(scope="module")
def savedmodel_model():
    if not (FIXTURE / "saved_model.pb").exists():
        pytest.skip(f"the YAMNet fixture is not at {FIXTURE}")
    return load_model(resolve_source("yamnet", str(FIXTURE)))


def test_h5_has_the_released_layout(released_h5):
    import h5py

    with h5py.File(released_h5, "r") as h5:
        assert h5.attrs["layer_names"].dtype.kind == "S"
        names = [n.decode() for n in h5.attrs["layer_names"]]
        assert {"layer1/conv", "layer1/conv/bn", "layer2/depthwise_conv", "layer14/pointwise_conv/bn",
                "dense"} <= set(names)
        weight_names = [n.decode() for n in h5["layer2/depthwise_conv/bn"].attrs["weight_names"]]
        assert weight_names == ["layer2/depthwise_conv/bn/beta:0", "layer2/depthwise_conv/bn/moving_mean:0",
                                "layer2/depthwise_conv/bn/moving_variance:0"]


@needs_fixture
def test_resolve_and_load_local_savedmodel(savedmodel_model):
    source = resolve_source("yamnet", str(FIXTURE) + "/")
    assert source == ModelSource("yamnet", str(FIXTURE))
    spec = load_spec(source)
    assert spec == savedmodel_model.spec
    assert spec.num_classes == 521 and spec.class_names[514] == "White noise"
    out = savedmodel_model.predict(np.zeros((2, 15600), np.float32))
    assert out[SCORES].shape == (2, 521) and out[EMBEDDING].shape == (2, 1024)


def test_h5_gives_the_savedmodels_outputs(released_h5, savedmodel_model):
    source = resolve_source("yamnet", str(released_h5))
    assert source.path == str(released_h5)
    h5_model = load_model(source)
    assert h5_model.spec.class_names == savedmodel_model.spec.class_names
    windows = np.random.default_rng(1).uniform(-1, 1, (5, 15600)).astype(np.float32)
    ours, reference = h5_model.predict(windows), savedmodel_model.predict(windows)
    np.testing.assert_allclose(ours[SCORES], reference[SCORES], rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours[EMBEDDING], reference[EMBEDDING], rtol=0, atol=1e-5)


def test_h5_saved_by_todays_tf_keras_loads_too(tmp_path, savedmodel_model):
    write_released_h5(FIXTURE, tmp_path / "mine.h5", names_as_bytes=False)
    model = load_model(resolve_source(
        "yamnet", str(tmp_path / "mine.h5"), class_map=str(FIXTURE / "assets" / CLASS_MAP)))
    windows = np.random.default_rng(2).uniform(-1, 1, (2, 15600)).astype(np.float32)
    np.testing.assert_allclose(model.predict(windows)[SCORES], savedmodel_model.predict(windows)[SCORES],
                               rtol=0, atol=1e-6)


def test_h5_class_map_can_be_elsewhere_and_must_exist(released_h5, tmp_path):
    lone = tmp_path / "yamnet.h5"
    shutil.copyfile(released_h5, lone)
    with pytest.raises(ModelUnavailableError, match=CLASS_MAP) as missing:
        load_spec(resolve_source("yamnet", str(lone)))
    assert "\n" not in str(missing.value)
    spec = load_spec(resolve_source("yamnet", str(lone), class_map=str(released_h5.parent / CLASS_MAP)))
    assert spec.num_classes == 521


@needs_fixture
def test_fingerprint_is_stable_and_tells_weights_apart(released_h5):
    fixture = resolve_source("yamnet", str(FIXTURE))
    first, second = load_spec(fixture), load_spec(fixture)
    assert first.fingerprint == second.fingerprint
    assert len(first.fingerprint) == 64 and int(first.fingerprint, 16) >= 0
    h5_spec = load_spec(resolve_source("yamnet", str(released_h5)))
    assert h5_spec.fingerprint == load_spec(resolve_source("yamnet", str(released_h5))).fingerprint
    assert h5_spec.fingerprint != first.fingerprint  # another file, so another identity
    if (APPROX / "saved_model.pb").exists():
        assert load_spec(resolve_source("yamnet", str(APPROX))).fingerprint != first.fingerprint


def test_unreachable_hub_handle_fails_fast_with_a_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub-cache"))  # nothing cached
    start = time.monotonic()
    with pytest.raises(ModelUnavailableError) as error:
        resolve_source("yamnet", None, network_timeout_s=5)  # default: https://tfhub.dev/google/yamnet/1
    message = str(error.value)
    assert time.monotonic() - start < 30
    assert message.startswith("could not download https://tfhub.dev/google/yamnet/1")
    assert "--model_path /path/to/yamnet (a SavedModel directory) or yamnet.h5" in message
    assert "\n" not in message


def test_silent_server_times_out_instead_of_hanging(tmp_path, monkeypatch):
    """A host that accepts the connection and never answers (a black-holing proxy, say)."""
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub-cache"))
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    try:
        start = time.monotonic()
        with pytest.raises(ModelUnavailableError, match="could not download http://127.0.0.1"):
            resolve_source("yamnet", f"http://127.0.0.1:{port}/yamnet/1", network_timeout_s=1)
        assert time.monotonic() - start < 10
    finally:
        server.close()
        for connection, _ in accepted:
            connection.close()


def test_missing_path_names_it_and_the_way_out(tmp_path):
    missing = tmp_path / "nowhere" / "yamnet"
    with pytest.raises(ModelUnavailableError) as error:
        resolve_source("yamnet", str(missing))
    assert str(missing) in str(error.value) and "--model_path" in str(error.value)


def test_directory_without_a_model_is_unavailable(tmp_path):
    with pytest.raises(ModelUnavailableError, match="not a YAMNet SavedModel"):
        load_spec(resolve_source("yamnet", str(tmp_path)))


def test_yamnet_hop_is_fixed(released_h5):
    assert load_spec(resolve_source("yamnet", str(released_h5), hop_s=0.48)).hop_samples == 7680
    with pytest.raises(ModelUnavailableError, match="fixed at 0.48"):
        load_spec(resolve_source("yamnet", str(released_h5), hop_s=0.5))


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(UnknownModelKindError, match="unknown model kind 'whisper'.*yamnet"):
        resolve_source("whisper", "/tmp")
    with pytest.raises(UnknownModelKindError):
        load_model(ModelSource("whisper", "/tmp"))
    assert issubclass(UnknownModelKindError, ModelUnavailableError)  # the job prints it and exits 2


def test_registered_kind_is_dispatched(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "_REGISTRY", dict(loading._REGISTRY))  # leave the real registry alone
    calls = []

    def spec_loader(source):
        calls.append(("spec", source))
        return "spec"

    def model_loader(source):
        calls.append(("model", source))
        return "model"

    register_kind("toy", spec_loader, model_loader)
    source = resolve_source("toy", str(tmp_path), hop_s=0.25)
    assert load_spec(source) == "spec" and load_model(source) == "model"
    assert calls == [("spec", source), ("model", source)]
    assert source.hop_s == 0.25
    with pytest.raises(ModelUnavailableError, match="--model toy needs --model_path"):
        resolve_source("toy", None)


def test_source_is_picklable():
    import pickle

    source = ModelSource("yamnet", "gs://bucket/yamnet", handle="https://tfhub.dev/google/yamnet/1")
    assert pickle.loads(pickle.dumps(source)) == source


def test_device_configuration_on_cpu():
    from audio_models import device

    if device.visible_gpus():
        pytest.skip("this test covers machines without a GPU")
    assert device.configure_tensorflow("auto") == "/CPU:0"
    assert device.configure_tensorflow("cpu", intra_op_threads=0) == "/CPU:0"  # idempotent
    assert device.selected_device() == "/CPU:0"
    assert device.default_batch_size("cpu") == device.default_batch_size("auto") == device.CPU_BATCH_SIZE
    assert device.default_batch_size("gpu") == device.GPU_BATCH_SIZE  # planning for GPU workers
    with pytest.raises(ValueError, match="sees no GPU"):
        device.configure_tensorflow("gpu")
    with pytest.raises(ValueError, match="unknown device"):
        device.configure_tensorflow("tpu")


def test_gs_savedmodel_and_h5_load_like_local_ones(gcs, released_h5, savedmodel_model):
    """Weights, class map and fingerprint read through tf.io.gfile from a (emulated) bucket.

    Only the checkpoint and the class map are uploaded, not saved_model.pb: the graph is never needed.
    """
    bucket = gcs.bucket("models")
    for part in ("variables", "assets"):
        gcs.upload_dir(FIXTURE / part, f"{bucket}/yamnet/{part}")
    gcs.upload_file(released_h5, f"{bucket}/release/yamnet.h5")
    gcs.upload_file(released_h5.parent / CLASS_MAP, f"{bucket}/release/{CLASS_MAP}")

    remote = resolve_source("yamnet", f"{bucket}/yamnet/")
    assert remote.path == "gs://models/yamnet"
    assert load_spec(remote) == savedmodel_model.spec  # same class names and fingerprint
    windows = np.random.default_rng(3).uniform(-1, 1, (3, 15600)).astype(np.float32)
    reference = savedmodel_model.predict(windows)[SCORES]
    np.testing.assert_allclose(load_model(remote).predict(windows)[SCORES], reference, rtol=0, atol=1e-6)

    remote_h5 = resolve_source("yamnet", f"{bucket}/release/yamnet.h5")
    local_h5 = resolve_source("yamnet", str(released_h5))
    assert load_spec(remote_h5).fingerprint == load_spec(local_h5).fingerprint
    np.testing.assert_allclose(load_model(remote_h5).predict(windows)[SCORES], reference, rtol=0, atol=1e-6)

    with pytest.raises(ModelUnavailableError, match="does not exist"):
        resolve_source("yamnet", f"{bucket}/missing")
