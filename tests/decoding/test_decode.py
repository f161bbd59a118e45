"""Decoding real encoded audio: every format, downmix, resampling, unit starts, bad input, memory."""

from __future__ import annotations

import hashlib
import os
import pickle
import tracemalloc
from pathlib import Path

import av
import numpy as np
import pytest

from tests.support.audio_factory import (
    chirp,
    dequantize,
    make_bad_files,
    quantize,
    sine,
    sine_chunks,
    write_audio,
)
from transforms.decoding import windows as framing
from transforms.decoding.stream import AudioStream, DecodeError, decode_all, probe

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
TARGET = 16000
HOP, WINDOW = 7680, 15600  # YAMNet's patch hop and window at 16 kHz: unit starts are multiples of HOP


def left_sine_right_silent(rate: int, duration_s: float = 2.0) -> np.ndarray:
    """Stereo with the sine on the left only: a correct downmix halves it (amplitude 0.25)."""
    left = sine(440.0, duration_s, rate)[0]
    return np.stack([left, np.zeros_like(left)])


def best_lag_residual(decoded: np.ndarray, reference: np.ndarray, max_lag: int = 2048) -> tuple[int, float]:
    """Lag at which ``decoded`` best matches ``reference``, and the residual's RMS relative to it."""
    size = len(decoded) + len(reference)
    spectrum = np.fft.rfft(decoded, size) * np.conj(np.fft.rfft(reference, size))
    correlation = np.fft.irfft(spectrum, size)
    lags = np.r_[np.arange(0, max_lag + 1), np.arange(-max_lag, 0)]
    lag = int(lags[np.argmax(correlation[lags])])
    middle = slice(max_lag + 1600, len(reference) - max_lag - 1600)
    target = reference[middle]
    piece = decoded[middle.start + lag: middle.stop + lag]
    return lag, float(np.sqrt(np.mean((piece - target) ** 2)) / np.sqrt(np.mean(target**2)))


# -- every format decodes to the signal it holds ---------------------------------------------------

LOSSLESS = [  # (file name, codec, rate, sample format, max |error| against the analytic downmix)
    ("u8.wav", "pcm_u8", 16000, None, 6e-3),
    ("s16.wav", "pcm_s16le", 16000, None, 2e-5),
    ("s24.wav", "pcm_s24le", 48000, None, 1e-5),
    ("s32.wav", "pcm_s32le", 22050, None, 1e-5),
    ("f32.wav", "pcm_f32le", 44100, None, 1e-5),
    ("f64.wav", "pcm_f64le", 8000, None, 1e-5),
    ("alaw.wav", "pcm_alaw", 8000, None, 1.5e-2),
    ("mulaw.wav", "pcm_mulaw", 8000, None, 1.5e-2),
    ("s16.aiff", "pcm_s16be", 32000, None, 2e-5),
    ("s16.flac", "flac", 44100, "s16", 2e-5),
    ("s24.flac", "flac", 96000, "s32", 1e-5),
]


@pytest.mark.parametrize("name,codec,rate,sample_fmt,tolerance", LOSSLESS, ids=[c[0] for c in LOSSLESS])
def test_lossless_formats_decode_to_the_exact_downmix(tmp_path, name, codec, rate, sample_fmt, tolerance):
    signal = left_sine_right_silent(rate)
    path = write_audio(tmp_path / name, signal, rate, codec=codec, sample_fmt=sample_fmt)
    info = probe(str(path))
    assert (info.codec, info.sample_rate, info.channels) == (codec, rate, 2)
    assert info.duration_exact and info.duration_s == pytest.approx(2.0)

    decoded = decode_all(str(path), TARGET)

    assert decoded.dtype == np.float32 and decoded.shape == (2 * TARGET,)
    expected = sine(440.0, 2.0, TARGET, amplitude=0.25)[0]
    inner = slice(1600, -1600)  # the resampler's edges see the signal start and stop abruptly
    assert np.abs(decoded[inner] - expected[inner]).max() < tolerance


def test_matching_rate_is_not_resampled_and_integers_scale_exactly(tmp_path):
    signal = left_sine_right_silent(TARGET)
    path = write_audio(tmp_path / "exact.wav", signal, TARGET)
    stored = dequantize(quantize(signal, "s16"), "s16")  # what the file holds, channel by channel

    decoded = decode_all(str(path), TARGET)

    np.testing.assert_allclose(decoded, ((stored[0] + stored[1]) / 2).astype(np.float32), rtol=0, atol=1e-7)


LOSSY = [  # (file name, codec, rate, extra write_audio arguments)
    ("mp3.mp3", "libmp3lame", 44100, {}),
    ("vorbis.ogg", "vorbis", 44100, {}),
    ("opus.opus", "libopus", 48000, {}),
    ("aac.m4a", "aac", 44100, {}),
    ("aac_adts.aac", "aac", 32000, {}),
    ("video_aac.mp4", "aac", 44100, {"video": True}),
    ("video_opus.mkv", "libopus", 48000, {"video": True}),
    ("vorbis.webm", "vorbis", 48000, {}),
]


@pytest.mark.parametrize("name,codec,rate,extra", LOSSY, ids=[c[0] for c in LOSSY])
def test_lossy_and_video_formats_decode_to_the_downmix(tmp_path, name, codec, rate, extra):
    left = chirp(3.0, rate)  # a sweep rather than a sine, so the codec's delay can be measured
    signal = np.concatenate([left, np.zeros_like(left)])
    path = write_audio(tmp_path / name, signal, rate, codec=codec, **extra)
    info = probe(str(path))
    assert info.sample_rate == rate and info.channels == 2
    assert info.duration_s == pytest.approx(3.0, abs=0.15)

    with AudioStream(str(path), TARGET) as stream:
        decoded = np.concatenate(list(stream))
        assert stream.problem is None

    assert abs(decoded.size - 3 * TARGET) <= 0.06 * TARGET  # codec padding / priming
    expected = chirp(3.0, TARGET, amplitude=0.25)[0]
    lag, residual = best_lag_residual(decoded, expected)
    assert residual < 0.15, (lag, residual)  # a lossy copy of the half-amplitude sweep, not the full one
    assert abs(lag) < 0.05 * TARGET


def test_video_container_decodes_its_audio_track(tmp_path):
    path = write_audio(tmp_path / "clip.mp4", left_sine_right_silent(44100, 3.0), 44100, video=True)
    with av.open(str(path)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]

    info = probe(str(path))

    assert info.codec == "aac" and info.stream_index == 1
    assert decode_all(str(path), TARGET).size == pytest.approx(3 * TARGET, abs=0.06 * TARGET)


def test_chunks_have_the_requested_size_and_are_counted(tmp_path):
    path = write_audio(tmp_path / "chunks.flac", sine(440.0, 2.0, 22050), 22050)
    with AudioStream(str(path), TARGET, chunk_samples=5000) as stream:
        sizes = [chunk.size for chunk in stream]
        assert sizes == [5000] * 6 + [2000]
        assert stream.samples_out == 32000


# -- a unit that starts inside the file equals the whole-file decode from there ------------------------

def chirp_with_noise(rate: int, duration_s: float) -> np.ndarray:
    """Stereo content that changes every sample, so any misalignment shows."""
    t = np.arange(int(duration_s * rate)) / rate
    noise = np.random.default_rng(7).standard_normal(t.size)
    left = 0.3 * np.sin(2 * np.pi * (200 * t + 40 * t**2)) + 0.05 * noise
    return np.stack([left, 0.5 * left + 0.1 * np.sin(2 * np.pi * 1000 * t)])


SEEK_CASES = [  # (file name, rate, how the stream gets to the unit start)
    ("wav16k.wav", 16000, "container"),
    ("wav44k.wav", 44100, "container"),
    ("flac48k.flac", 48000, "container"),
    ("mp3_44k.mp3", 44100, "skip_packets"),
    ("vorbis44k.ogg", 44100, "container"),
    ("opus48k.opus", 48000, "container"),
]


@pytest.mark.parametrize("name,rate,method", SEEK_CASES, ids=[c[0] for c in SEEK_CASES])
def test_unit_start_matches_whole_file_decode(tmp_path, name, rate, method):
    path = str(write_audio(tmp_path / name, chirp_with_noise(rate, 16.0), rate))
    whole = decode_all(path, TARGET)

    for hops in (4, 13, 30):
        start = hops * HOP
        with AudioStream(path, TARGET, start_sample=start) as stream:
            unit = np.concatenate(list(stream))
            assert stream.seek_method == method and stream.problem is None
        assert start + unit.size == whole.size
        assert np.abs(unit - whole[start:]).max() <= 1e-6, (name, hops)


def test_aac_unit_start_matches_up_to_noise_substitution(tmp_path):
    # AAC's perceptual noise substitution draws from a generator whose state depends on every
    # earlier frame, so only noise-like bands can differ after a seek; timing must not.
    path = str(write_audio(tmp_path / "aac.m4a", chirp_with_noise(44100, 12.0), 44100))
    whole = decode_all(path, TARGET)
    start = 13 * HOP
    unit = decode_all(path, TARGET, start_sample=start)
    assert start + unit.size == whole.size
    assert np.sqrt(np.mean((unit - whole[start:]) ** 2)) < 0.2 * np.sqrt(np.mean(whole**2))


def test_matroska_millisecond_timestamps_fall_back_to_decoding_from_the_start(tmp_path):
    path = str(write_audio(tmp_path / "clip.mkv", chirp_with_noise(48000, 6.0), 48000, codec="libopus"))
    whole = decode_all(path, TARGET)
    with AudioStream(path, TARGET, start_sample=7 * HOP) as stream:
        unit = np.concatenate(list(stream))
        assert stream.seek_method == "sequential"
    np.testing.assert_allclose(unit, whole[7 * HOP:], rtol=0, atol=1e-6)


def test_work_units_reassemble_the_whole_file_frames(tmp_path):
    path = str(write_audio(tmp_path / "long.flac", chirp_with_noise(44100, 20.0), 44100))
    info = probe(path)
    expected_samples = info.expected_samples(TARGET)
    units = framing.plan_units(path, expected_samples, WINDOW, HOP, unit_frames=12)
    assert len(units) > 2

    frames = []
    for unit in units:
        assembler = framing.WindowAssembler(WINDOW, HOP, unit.first_frame, unit.end_frame)
        with AudioStream(path, TARGET, start_sample=unit.first_frame * HOP, chunk_samples=20000) as stream:
            for chunk in stream:
                frames += [w for _, w in assembler.push(chunk)]
                if assembler.done:
                    break
        frames += [w for _, w in assembler.finish()]

    reference = framing.frames_of(decode_all(path, TARGET), WINDOW, HOP)
    np.testing.assert_allclose(np.concatenate(frames), reference, atol=1e-6, rtol=0)


# -- bad input ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    return make_bad_files(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("name,kind", [
    ("missing", "not_found"),
    ("directory", "is_directory"),
    ("empty", "empty_file"),
    ("text_as_wav", "not_audio"),
    ("random_as_mp3", "not_audio"),
    ("random_as_wav", "not_audio"),
    ("video_only", "no_audio_stream"),
    ("absurd_rate_wav", "bad_header"),
    ("absurd_channels_wav", "bad_header"),
])
def test_unopenable_files_raise_on_construction_and_probe(bad_files, name, kind):
    for attempt in (lambda: AudioStream(str(bad_files[name]), TARGET), lambda: probe(str(bad_files[name]))):
        with pytest.raises(DecodeError) as caught:
            attempt()
        assert caught.value.kind == kind
        assert str(caught.value) == f"{kind}: {caught.value.message}"
    if name == "video_only":
        assert caught.value.message == "no audio stream (container mp4 has only video)"
    if name == "absurd_rate_wav":  # 1 Hz would make each byte 16,000 output samples
        assert caught.value.message.startswith("the header declares a sample rate of 1 Hz")


@pytest.mark.parametrize("name,at_s", [("nan_wav", 0.5), ("nan_late_wav", 2.5)])
def test_nan_samples_raise_during_iteration_after_every_sample_before_them(bad_files, name, at_s):
    stream = AudioStream(str(bad_files[name]), TARGET, chunk_samples=3000)
    chunks = []
    with pytest.raises(DecodeError) as caught:
        for chunk in stream:
            chunks.append(chunk)
    assert caught.value.kind == "non_finite" and f"from {at_s:.2f} s" in caught.value.message
    before = np.concatenate(chunks)
    assert before.size == stream.samples_out == int(at_s * TARGET)  # the last, partial chunk too
    assert np.isfinite(before).all()
    np.testing.assert_allclose(before, sine(440.0, at_s, TARGET)[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name,declared_s,holds_s", [("hours_wav", 36000.0, 0.5), ("jump_mkv", 10802.0, 2.0)])
def test_a_length_the_bytes_cannot_hold_costs_only_what_the_bytes_hold(bad_files, name, declared_s, holds_s):
    # A jump in timestamps is a hole to fill with silence only if the file's bytes could have held
    # the missing audio: otherwise 15 KB would become 3 hours of frames.
    with AudioStream(str(bad_files[name]), TARGET) as stream:
        assert stream.info.duration_s == pytest.approx(declared_s)
        decoded = np.concatenate(list(stream))
        assert stream.problem == f"truncated: decoded {holds_s:.2f} s of a declared {declared_s:.2f} s"
    assert decoded.size == pytest.approx(holds_s * TARGET, abs=0.01 * TARGET)


def test_header_that_promises_missing_data_raises_no_audio_data(bad_files):
    stream = AudioStream(str(bad_files["header_only_wav"]), TARGET)
    assert stream.info.duration_s == pytest.approx(1.0)
    with pytest.raises(DecodeError) as caught:
        list(stream)
    assert caught.value.kind == "no_audio_data"


def test_valid_wav_with_zero_samples_is_not_an_error(bad_files):
    with AudioStream(str(bad_files["zero_sample_wav"]), TARGET) as stream:
        assert list(stream) == []
        assert stream.problem is None and stream.samples_out == 0


@pytest.mark.parametrize("name,decoded_s", [
    ("truncated_wav", 4.0), ("truncated_flac", 3.55), ("truncated_mp3", 4.0)])
def test_truncated_files_yield_what_is_there_and_say_so(bad_files, name, decoded_s):
    with AudioStream(str(bad_files[name]), TARGET) as stream:
        decoded = np.concatenate(list(stream))
        assert stream.problem == f"truncated: decoded {decoded_s:.2f} s of a declared 10.00 s"
    assert decoded.size / TARGET == pytest.approx(decoded_s, abs=0.01)
    # what was decoded is the real signal (the factory's 440 Hz sine, both channels)
    lag, residual = best_lag_residual(decoded, sine(440.0, decoded_s, TARGET)[0], max_lag=200)
    assert residual < 0.1


@pytest.mark.parametrize("name", ["corrupt_flac", "corrupt_mp3"])
def test_corrupt_middle_is_skipped_and_reported(bad_files, name):
    with AudioStream(str(bad_files[name]), TARGET) as stream:
        decoded = np.concatenate(list(stream))
        assert stream.problem is not None and stream.problem.startswith("decoder_error: ")
    assert decoded.size > 8.5 * TARGET  # garbage over 10 % of the bytes costs about 1 s of 10
    # the audio after the damage is the signal again
    tail = decoded[-3 * TARGET:]
    assert np.sqrt(np.mean(tail**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.08)


def test_unit_starting_past_the_end_of_a_truncated_file(bad_files):
    with AudioStream(str(bad_files["truncated_flac"]), TARGET, start_sample=13 * HOP) as stream:
        assert list(stream) == []
        assert stream.problem == "truncated: the audio ends before 6.24 s, of a declared 10.00 s"


def test_decode_error_survives_pickling():
    error = pickle.loads(pickle.dumps(DecodeError("not_audio", "not an audio file")))
    assert (error.kind, error.message, str(error)) == ("not_audio", "not an audio file",
                                                      "not_audio: not an audio file")


# -- streaming, hashing, remote files ------------------------------------------------------------

def _peak_rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM"))
    except (OSError, StopIteration):
        return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # Linux: resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def test_memory_does_not_grow_with_file_length(tmp_path):
    minutes = 20
    path = write_audio(tmp_path / "long.wav", sine_chunks(440.0, minutes * 60, 22050, chunk_s=30), 22050)
    whole_output_mb = minutes * 60 * TARGET * 4 / 1e6  # 77 MB if anything accumulated the output

    can_measure_rss = _reset_peak_rss()
    rss_before = _peak_rss_mb()
    tracemalloc.start()
    try:
        samples = 0
        with AudioStream(str(path), TARGET) as stream:
            for chunk in stream:
                samples += chunk.size
        _, python_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert samples == minutes * 60 * TARGET
    assert python_peak / 1e6 < 20 < whole_output_mb
    if can_measure_rss and rss_before is not None:
        assert _peak_rss_mb() - rss_before < 50  # FFmpeg's and soxr's buffers included


@pytest.mark.parametrize("name,extra", [
    ("hash.flac", {}), ("hash.ogg", {}), ("moov_at_end.mp4", {"video": True})])
def test_sha256_of_the_bytes_while_decoding(tmp_path, name, extra):
    path = write_audio(tmp_path / name, left_sine_right_silent(44100, 2.0), 44100, **extra)
    expected = hashlib.sha256(path.read_bytes()).hexdigest()

    with AudioStream(str(path), TARGET, sha256=True) as stream:
        assert stream.sha256 is None  # not before the file has been read
        list(stream)
        assert stream.sha256 == expected

    with AudioStream(str(path), TARGET, start_sample=HOP, sha256=True) as unit:
        list(unit)
        assert unit.sha256 is None  # a unit does not read the whole file


def test_gcs_uri_decodes_like_the_local_file(tmp_path, gcs):
    # ``gcs``: the session's GCS emulator (tests/support/gcs_emulator.py); Beam's gs:// filesystem
    # talks to it.
    path = write_audio(tmp_path / "remote.flac", chirp_with_noise(48000, 6.0), 48000)
    uri = gcs.upload_file(path, f"{gcs.bucket('decode-tests')}/clips/remote.flac")

    assert probe(uri).size_bytes == os.path.getsize(path)
    with AudioStream(uri, TARGET, sha256=True) as stream:
        remote = np.concatenate(list(stream))
        assert stream.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    np.testing.assert_allclose(remote, decode_all(str(path), TARGET), rtol=0, atol=1e-7)
    np.testing.assert_allclose(decode_all(uri, TARGET, start_sample=5 * HOP), remote[5 * HOP:],
                               rtol=0, atol=1e-6)
    with pytest.raises(DecodeError) as caught:
        probe("gs://decode-tests/clips/missing.wav")
    assert caught.value.kind == "not_found"


# -- real recordings from ../shared ------------------------------------------------------------

def _shared_files(folder: str, pattern: str, count: int) -> list[Path]:
    root = SHARED / "data" / folder
    if not root.is_dir():
        pytest.skip(f"shared data not found at {root} (the project expects ../shared next to it)")
    files = sorted(root.rglob(pattern))[:count]
    if not files:
        pytest.skip(f"no {pattern} files under {root}")
    return files


def test_esc10_clips_are_five_seconds_at_16k():
    for path in _shared_files("esc10/audio", "*.ogg", 3):
        with AudioStream(str(path), TARGET) as stream:
            samples = np.concatenate(list(stream))
            assert (stream.info.codec, stream.info.sample_rate) == ("vorbis", 44100)
            assert stream.problem is None
        assert samples.size == pytest.approx(80000, rel=0.01)
        assert np.isfinite(samples).all() and np.abs(samples).max() <= 1.5


def test_speech_commands_flac_is_not_resampled():
    for path in _shared_files("speech_commands", "*.flac", 3):
        with AudioStream(str(path), TARGET) as stream:
            samples = np.concatenate(list(stream))
            assert (stream.info.codec, stream.info.sample_rate, stream.info.channels) == ("flac", 16000, 1)
            assert samples.size == stream.info.expected_samples() == stream.info.expected_samples(TARGET)
        with av.open(str(path)) as container:
            raw = np.concatenate([f.to_ndarray()[0] for f in container.decode(audio=0)])
        np.testing.assert_allclose(samples, raw.astype(np.float32) / 32768, rtol=0, atol=1e-7)


def test_esc10_unit_starts_match_whole_file_decode():
    # Real libvorbis files switch block sizes, where FFmpeg's frame timestamps wobble.
    for path in _shared_files("esc10/audio", "*.ogg", 2):
        whole = decode_all(str(path), TARGET)
        for hops in (4, 7):
            with AudioStream(str(path), TARGET, start_sample=hops * HOP) as stream:
                unit = np.concatenate(list(stream))
                assert stream.seek_method == "container"
            np.testing.assert_allclose(unit, whole[hops * HOP:], atol=1e-6, rtol=0)
