"""--features logmel / both: the spectral baseline, written in the model's pass, equals NumPy's log-mel.

The reference below is written from YAMNet's published recipe alone (periodic
Hann 400, hop 160, FFT 512, magnitude, HTK mel 64 bands 125-7500 Hz,
log(mel + 0.001), patches of 96 frames every 48), in float64 NumPy, on the
same decoded audio the job reads.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests.support import savedmodel_factory as factory  # noqa: E402
from tests.support.audio_factory import sine, write_audio  # noqa: E402
from tests.support.pipeline_helpers import FIXTURE_MODEL, read_table, require_shared, run_tag_audio  # noqa: E402
from transforms.decoding.stream import AudioStream  # noqa: E402
from transforms.decoding.windows import frames_of, num_frames  # noqa: E402

RATE = 16000
STFT_WINDOW, STFT_HOP, FFT_LENGTH = 400, 160, 512
MEL_BANDS, MEL_LOW_HZ, MEL_HIGH_HZ, LOG_OFFSET = 64, 125.0, 7500.0, 0.001
PATCH_FRAMES, PATCH_HOP = 96, 48
YAMNET_WINDOW, YAMNET_HOP = 15600, 7680
TOLERANCE = 1e-3


# --- the NumPy reference ------------------------------------------------------------------------

def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(hz, np.float64) / 700.0)  # HTK


def mel_matrix() -> np.ndarray:
    """[257, 64] triangular HTK filters with edges evenly spaced in mel; the DC bin gets no weight."""
    bins = FFT_LENGTH // 2 + 1
    bin_mel = _hz_to_mel(np.linspace(0.0, RATE / 2, bins))[:, None]
    edges = np.linspace(_hz_to_mel(MEL_LOW_HZ), _hz_to_mel(MEL_HIGH_HZ), MEL_BANDS + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    weights = np.maximum(0.0, np.minimum((bin_mel - lower) / (center - lower),
                                         (upper - bin_mel) / (upper - center)))
    weights[0] = 0.0
    return weights


def log_mel(waveform: np.ndarray) -> np.ndarray:
    """[T] -> [1 + (T - 400) // 160, 64], no centring, no padding."""
    count = 1 + (len(waveform) - STFT_WINDOW) // STFT_HOP
    index = np.arange(STFT_WINDOW)[None, :] + STFT_HOP * np.arange(count)[:, None]
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(STFT_WINDOW) / STFT_WINDOW)  # periodic
    magnitude = np.abs(np.fft.rfft(waveform.astype(np.float64)[index] * hann, n=FFT_LENGTH))
    return np.log(magnitude @ mel_matrix() + LOG_OFFSET)


def yamnet_patches(waveform: np.ndarray) -> np.ndarray:
    """[frames, 96, 64]: the whole file padded as YAMNet pads it, then 96-frame patches every 48."""
    frames = num_frames(len(waveform), YAMNET_WINDOW, YAMNET_HOP)
    padded = np.zeros(YAMNET_WINDOW + YAMNET_HOP * (frames - 1))
    padded[:len(waveform)] = waveform
    spectrogram = log_mel(padded)
    return np.stack([spectrogram[PATCH_HOP * k:PATCH_HOP * k + PATCH_FRAMES] for k in range(frames)])


def statistics(patches: np.ndarray) -> np.ndarray:
    """[B, frames, 64] -> [B, 128]: per-band mean, then per-band population std."""
    return np.concatenate([patches.mean(axis=1), patches.std(axis=1, ddof=0)], axis=1)


# --- the job ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(21)
    signal = 0.3 * sine(880, 3.3, RATE) + rng.uniform(-0.2, 0.2, (1, int(3.3 * RATE)))
    signal[:, 20000:24000] = 0.0  # a silent stretch: bands at log(0.001)
    path = write_audio(tmp_path_factory.mktemp("audio") / "clip.wav", signal, RATE)
    return path, np.concatenate(list(AudioStream(str(path), RATE)))


def _frames(tmp_path: Path, clip_path: Path, *flags: str):
    out = tmp_path / "out"
    assert run_tag_audio(["--input", str(clip_path), "--output", str(out), "--batch_size", "4", *flags]) == 0
    return read_table(out, "frames").to_pandas().sort_values("frame_index").reset_index(drop=True)


@pytest.fixture(scope="module")
def yamnet_runs(tmp_path_factory, clip):
    model = require_shared(FIXTURE_MODEL)
    runs = {}
    for features in ("logmel", "both"):
        runs[features] = _frames(tmp_path_factory.mktemp(features), clip[0], "--model", "yamnet",
                                 "--model_path", str(model), "--features", features)
    return runs


def test_yamnet_logmel_stats_equal_numpy(clip, yamnet_runs):
    frames = yamnet_runs["logmel"]
    expected = statistics(yamnet_patches(clip[1]))
    assert len(frames) == len(expected) == 6
    assert "logmel_patch" not in frames.columns
    got = np.stack(frames.logmel_stats)
    assert got.shape == (6, 2 * MEL_BANDS)
    np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)
    assert got[:, MEL_BANDS:].min() >= 0.0


def test_both_adds_the_whole_patch_as_float16(clip, yamnet_runs):
    frames = yamnet_runs["both"]
    patches = yamnet_patches(clip[1])
    got = np.stack([np.asarray(p, np.float32) for p in frames.logmel_patch]).reshape(patches.shape)
    assert frames.logmel_patch.iloc[0].dtype == np.float16
    # Frame 2's window starts at sample 15360: its STFT frames 29..51 lie inside the silence.
    np.testing.assert_allclose(got[2, 29:52], np.log(LOG_OFFSET), atol=2.0 ** -8)
    # float16 keeps ~3 significant digits: |error| <= half a unit in the last place (2^-9 for |x| < 8).
    np.testing.assert_allclose(got, patches, atol=TOLERANCE + 2.0 ** -9, rtol=2.0 ** -11)
    np.testing.assert_allclose(np.stack(frames.logmel_stats), np.stack(yamnet_runs["logmel"].logmel_stats),
                               atol=1e-6)
    # The features ride along; the model's own outputs are unchanged by them.
    np.testing.assert_allclose(np.stack(frames.scores), np.stack(yamnet_runs["logmel"].scores), atol=1e-6)


def test_a_generic_savedmodel_gets_the_same_frontend_on_its_windows(tmp_path, clip):
    """For --model savedmodel at 16 kHz, the log-mel is computed on each of its own windows (1 s here)."""
    model = factory.save_batched_encoder(tmp_path / "encoder")
    frames = _frames(tmp_path, clip[0], "--model", "savedmodel", "--model_path", str(model),
                     "--features", "logmel")
    windows = frames_of(clip[1], 16000, factory.BATCHED_HOP_SAMPLES)
    expected = statistics(np.stack([log_mel(w) for w in windows]))  # 98 STFT frames per 1-s window
    assert len(frames) == len(windows)
    np.testing.assert_allclose(np.stack(frames.logmel_stats), expected, atol=TOLERANCE, rtol=0)


def test_logmel_for_a_model_not_at_16khz_fails_at_startup(tmp_path, clip, capsys):
    model = factory.save_batched_encoder(tmp_path / "encoder")
    status = run_tag_audio(["--input", str(clip[0]), "--output", str(tmp_path / "out"),
                            "--model", "savedmodel", "--model_path", str(model), "--sample_rate", "8000",
                            "--features", "logmel"])
    assert status == 2
    assert "16000 Hz" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
