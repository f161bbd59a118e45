"""The batched YAMNet against the official TF Hub graph, called one waveform at a time.

The fixture is the official export with random weights, so matching it on
random weights means matching the released model on its real weights.  Every
case frames the waveform the pipeline's way (``frames_of``), runs the batched
model once, and compares frame by frame with the graph's own padding and
framing.  ``pytest -s`` prints the largest differences reached.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from audio_models import logmel  # noqa: E402
from audio_models.loading import load_model, resolve_source  # noqa: E402
from audio_models.spec import EMBEDDING, LOGMEL, SCORES  # noqa: E402
from audio_models.yamnet import HOP_SAMPLES, WINDOW_SAMPLES, YamnetModel  # noqa: E402
from audio_models.yamnet_weights import read_class_names  # noqa: E402
from transforms.decoding.windows import frames_of  # noqa: E402

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
FIXTURE = SHARED / "fixtures" / "yamnet-hub-random"
APPROX = SHARED / "models" / "yamnet-approx"
ESC10 = SHARED / "data" / "esc10" / "audio"
SPEECH = SHARED / "data" / "speech_commands"

SCORE_TOLERANCE = 1e-4
EMBEDDING_TOLERANCE = 1e-3
LOGMEL_TOLERANCE = 1e-5

pytestmark = pytest.mark.skipif(
    not (FIXTURE / "saved_model.pb").exists(),
    reason=f"the YAMNet fixture is not at {FIXTURE} (../shared next to the repository)")

_max_diffs: dict[str, float] = {SCORES: 0.0, EMBEDDING: 0.0, LOGMEL: 0.0}


@pytest.fixture(scope="module", autouse=True)
def report_max_diffs():
    yield
    print("\nlargest |batched - official| over all cases: "
          + ", ".join(f"{name} {value:.2e}" for name, value in _max_diffs.items()))


@pytest.fixture(scope="module")
def official():
    return tf.saved_model.load(str(FIXTURE))


@pytest.fixture(scope="module")
def batched() -> YamnetModel:
    return load_model(resolve_source("yamnet", str(FIXTURE)))


def decode(path: Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1] and the sample rate, via PyAV."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono")
        parts = [out.to_ndarray().reshape(-1) for frame in container.decode(stream)
                 for out in resampler.resample(frame)]
        parts += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
        return np.concatenate(parts).astype(np.float32), stream.rate


def to_16k(path: Path) -> np.ndarray:
    import soxr

    samples, rate = decode(path)
    return samples if rate == 16000 else soxr.resample(samples, rate, 16000).astype(np.float32)


def assert_matches_official(official, batched: YamnetModel, waveform: np.ndarray) -> None:
    scores, embedding, log_mel = (t.numpy() for t in official(waveform))
    outputs = batched.predict(frames_of(waveform, WINDOW_SAMPLES, HOP_SAMPLES), with_logmel=True)

    assert outputs[SCORES].shape == scores.shape  # same frame count, same classes
    assert outputs[EMBEDDING].shape == embedding.shape
    patches = np.stack([log_mel[k * logmel.PATCH_HOP_FRAMES:k * logmel.PATCH_HOP_FRAMES + logmel.PATCH_FRAMES]
                        for k in range(len(scores))])
    diffs = {SCORES: np.abs(outputs[SCORES] - scores).max(),
             EMBEDDING: np.abs(outputs[EMBEDDING] - embedding).max(),
             LOGMEL: np.abs(outputs[LOGMEL] - patches).max()}
    for name, value in diffs.items():
        _max_diffs[name] = max(_max_diffs[name], float(value))
    assert diffs[SCORES] <= SCORE_TOLERANCE, diffs
    assert diffs[EMBEDDING] <= EMBEDDING_TOLERANCE, diffs
    assert diffs[LOGMEL] <= LOGMEL_TOLERANCE, diffs


@pytest.mark.parametrize("num_samples", [1, 15599, 15600, 15601, 16000, 48000, 160000, 1_000_000])
def test_matches_official_graph_on_noise(official, batched, num_samples):
    waveform = np.random.default_rng(num_samples).uniform(-1, 1, num_samples).astype(np.float32)
    assert_matches_official(official, batched, waveform)


def _real_clips() -> list[Path]:
    esc = sorted(ESC10.glob("*.ogg"))[:3]
    speech = [sorted((SPEECH / label).glob("*.flac"))[0]
              for label in ("yes", "stop", "_silence_") if (SPEECH / label).is_dir()]
    return esc + speech


@pytest.mark.parametrize("path", _real_clips() or [None], ids=lambda p: p.name if p else "no-data")
def test_matches_official_graph_on_real_audio(official, batched, path):
    if path is None:
        pytest.skip(f"no real audio under {SHARED / 'data'}")
    waveform = to_16k(path)
    assert waveform.size > 8000 and np.abs(waveform).max() <= 1.0
    assert_matches_official(official, batched, waveform)


def test_batch_composition_does_not_change_a_frame(batched):
    """A window's outputs do not depend on the other rows of its batch."""
    windows = np.random.default_rng(7).uniform(-1, 1, (9, WINDOW_SAMPLES)).astype(np.float32)
    together = batched.predict(windows)
    alone = batched.predict(windows[4:5])
    np.testing.assert_allclose(together[SCORES][4:5], alone[SCORES], atol=1e-6)
    np.testing.assert_allclose(together[EMBEDDING][4:5], alone[EMBEDDING], atol=1e-5)


def test_predict_outputs_and_empty_batch(batched):
    out = batched.predict(np.zeros((3, WINDOW_SAMPLES), np.float32))
    assert set(out) == {SCORES, EMBEDDING}
    assert out[SCORES].shape == (3, 521) and out[EMBEDDING].shape == (3, 1024)
    assert out[SCORES].dtype == np.float32
    empty = batched.predict(np.zeros((0, WINDOW_SAMPLES), np.float32), with_logmel=True)
    assert empty[SCORES].shape == (0, 521) and empty[LOGMEL].shape == (0, 96, 64)
    with pytest.raises(ValueError, match="15600"):
        batched.predict(np.zeros((2, 16000), np.float32))


def test_spec_matches_the_class_map(batched):
    spec = batched.spec
    expected = read_class_names(str(FIXTURE / "assets" / "yamnet_class_map.csv"))
    assert spec.class_names == expected
    assert spec.class_names[0] == "Speech" and spec.class_names[494] == "Silence"
    assert (spec.name, spec.sample_rate, spec.window_samples, spec.hop_samples, spec.embedding_dim) == (
        "yamnet", 16000, 15600, 7680, 1024)
    assert len(spec.fingerprint) == 64


def test_whole_waveform_log_mel_matches_official(official):
    waveform = np.random.default_rng(3).uniform(-1, 1, 40000).astype(np.float32)
    _, _, log_mel = official(waveform)  # the graph pads 40000 samples to 46320 first
    ours = logmel.waveform_to_log_mel(tf.constant(waveform)).numpy()
    assert ours.shape == (1 + (40000 - 400) // 160, 64)
    # Not bit-exact: TensorFlow's kernels round differently with the CPU's vector width (4.8e-7 seen
    # on AVX2 without AVX-512), so the same tolerance as every other log-mel comparison.
    np.testing.assert_allclose(ours, log_mel.numpy()[:len(ours)], rtol=0, atol=LOGMEL_TOLERANCE)


def test_mel_matrix_is_tensorflows_up_to_rounding():
    exported = logmel.mel_weight_matrix().numpy()
    computed = tf.signal.linear_to_mel_weight_matrix(64, 257, 16000, 125.0, 7500.0).numpy()
    assert exported.shape == (257, 64)
    np.testing.assert_allclose(exported, computed, atol=2e-5)
    assert ((exported > 0) == (computed > 0)).all()


@pytest.mark.skipif(not (APPROX / "saved_model.pb").exists(), reason=f"no real-ish YAMNet at {APPROX}")
def test_sine_is_tagged_sine_wave_with_real_weights():
    # One second (two frames), as in the fixture README; with these 8-bit-derived weights longer
    # sines put 'Sine wave' just behind 'Telephone', 'Dial tone', 'Busy signal', 'Alarm' (the
    # official graph ranks them the same way).
    model = YamnetModel.from_savedmodel(str(APPROX))
    t = np.arange(16000) / 16000
    sine = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    scores = model.predict(frames_of(sine, WINDOW_SAMPLES, HOP_SAMPLES))[SCORES].mean(axis=0)
    top5 = [model.spec.class_names[i] for i in np.argsort(scores)[::-1][:5]]
    assert "Sine wave" in top5, top5
