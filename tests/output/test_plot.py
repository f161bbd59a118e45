"""plot: PNGs of the expected size that are not blank, from scores or top-k frames, with real audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from beam_jobs import plot
from schemas.tables import STATUS_OK, FrameColumns
from tests.support.audio_factory import write_audio
from tests.support.output_factory import (
    CLASS_NAMES,
    SPEC,
    FakeFile,
    scores_with_peaks,
    three_files,
    write_run,
)
from transforms.decoding.span import load_audio_span
from transforms.output import timeline_plot

RUN_ID = "20250101T000000Z-aaaaaa"
SINE_HZ = 1000.0
SINE, NOISE = CLASS_NAMES.index("Sine wave"), CLASS_NAMES.index("White noise")


def png_pixels(path: Path | str) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"), dtype=np.float64)


def assert_not_blank(pixels: np.ndarray) -> None:
    # A blank (or single-colour) image has variance 0; a drawn figure has dark text on white and
    # colour maps: its pixel values spread widely.
    assert pixels.var() > 500, pixels.var()


@pytest.fixture()
def scores_output(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    write_run(out, three_files(), RUN_ID)
    return out


@pytest.fixture()
def sine_then_noise(tmp_path: Path) -> tuple[Path, Path]:
    """A real 3-s WAV (1.5 s of a 1 kHz sine, then 1.5 s of noise) and frames scoring it."""
    rate = 16000
    t = np.arange(int(1.5 * rate)) / rate
    samples = np.concatenate([0.5 * np.sin(2 * np.pi * SINE_HZ * t),
                              np.random.default_rng(0).uniform(-0.5, 0.5, t.size)])
    wav = write_audio(tmp_path / "sine_then_noise.wav", samples[None, :], rate)
    frames = 6  # YAMNet framing of 3 s: 1 + ceil((48000 - 15600) / 7680)
    centres = np.arange(frames) * SPEC.hop_s + SPEC.window_s / 2
    scores = scores_with_peaks(frames, {})
    scores[:, SINE] = np.where(centres < 1.5, 0.9, 0.1)
    scores[:, NOISE] = np.where(centres < 1.5, 0.05, 0.8)
    out = tmp_path / "out"
    write_run(out, [FakeFile(str(wav), STATUS_OK, scores=scores, duration_s=3.0)], RUN_ID)
    return out, wav


def test_heatmap_alone_when_the_audio_is_missing(scores_output: Path, tmp_path: Path):
    figure = tmp_path / "fig.png"
    result = timeline_plot.plot_timeline(str(scores_output), "/data/in/ok.wav", str(figure), top=5,
                                width_px=1200, height_px=800)

    pixels = png_pixels(figure)
    assert pixels.shape == (800, 1200, 3)
    assert_not_blank(pixels)
    assert result.audio_note is not None and "not_found" in result.audio_note
    assert result.classes[0] == "Siren" and len(result.classes) == 5  # the class given a 0.9 score
    assert result.frames_shown == 20 and result.run_id == RUN_ID
    assert result.end_s == pytest.approx(20 * SPEC.hop_s)  # the files row's duration


def test_top_k_frames_plot_with_missing_classes_as_zero(tmp_path: Path):
    out = tmp_path / "out"
    files = [FakeFile("/data/x.wav", STATUS_OK, scores=scores_with_peaks(12, {4: 0.7, 9: 0.6}))]
    write_run(out, files, RUN_ID, columns=FrameColumns(top_k=3))

    frames = timeline_plot.load_frame_scores(str(out), "/data/x.wav")
    assert frames.scores.shape == (12, len(CLASS_NAMES))
    assert ((frames.scores > 0).sum(axis=1) == 3).all()  # the 3 kept classes, zeros elsewhere
    np.testing.assert_allclose(frames.scores[:, 4], 0.7)
    np.testing.assert_allclose(frames.scores[:, 9], 0.6)
    assert frames.class_names == CLASS_NAMES

    figure = tmp_path / "topk.png"
    result = timeline_plot.plot_timeline(str(out), "/data/x.wav", str(figure), top=4)
    assert result.classes[:2] == ("White noise", "Engine")
    pixels = png_pixels(figure)
    assert pixels.shape == (1000, 1600, 3)
    assert_not_blank(pixels)


def test_real_audio_panels(sine_then_noise: tuple[Path, Path], tmp_path: Path):
    out, wav = sine_then_noise
    with_audio, without_audio = tmp_path / "audio.png", tmp_path / "no_audio.png"

    result = timeline_plot.plot_timeline(str(out), str(wav), str(with_audio), top=4)
    missing = timeline_plot.plot_timeline(str(out), str(wav), str(without_audio), top=4,
                                 audio_uri=str(tmp_path / "moved.wav"))

    assert result.audio_note is None and missing.audio_note is not None
    assert result.classes[:2] == ("Sine wave", "White noise")
    drawn, heatmap_only = png_pixels(with_audio), png_pixels(without_audio)
    assert drawn.shape == heatmap_only.shape == (1000, 1600, 3)
    assert_not_blank(drawn)
    # The waveform and spectrogram panels change much of the picture.
    assert np.mean(np.abs(drawn - heatmap_only).max(axis=2) > 30) > 0.2


def test_audio_span_and_spectrogram(sine_then_noise: tuple[Path, Path]):
    _out, wav = sine_then_noise
    whole = load_audio_span(str(wav), 16000, 0.0, 3.0)
    middle = load_audio_span(str(wav), 16000, 1.0, 2.0)
    assert whole.samples.size == 48000 and middle.samples.size == 16000
    np.testing.assert_allclose(middle.samples, whole.samples[16000:32000], atol=1e-6)
    assert load_audio_span(str(wav), 8000, 1.0, 2.0).samples.size == 8000  # at the model's rate

    spectrogram = timeline_plot.log_mel(whole)
    assert spectrogram.shape == (1 + (48000 - 400) // 160, 64)
    sine_profile = spectrogram[:140].mean(axis=0)  # first 1.4 s
    noise_profile = spectrogram[160:].mean(axis=0)
    assert sine_profile.max() - np.median(sine_profile) > 6  # one band lit
    assert noise_profile.max() - np.median(noise_profile) < 3  # all bands alike
    # The band the sine lights is where the y axis says 1 kHz is.
    ticks, labels = timeline_plot._mel_band_ticks()
    assert abs(ticks[labels.index("1k")] - 0.5 - int(sine_profile.argmax())) <= 1


def test_command_line_span_and_errors(sine_then_noise: tuple[Path, Path], tmp_path: Path, capsys):
    out, wav = sine_then_noise
    figure = tmp_path / "sub" / "span.png"
    status = plot.run(["--frames", str(out), "--uri", str(wav), "--output", str(figure), "--top", "3",
                       "--start_s", "1.0", "--end_s", "2.5", "--width", "1000", "--height", "700"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "1-2.5 s" in printed and "1000x700" in printed
    assert png_pixels(figure).shape == (700, 1000, 3)

    missing = ["--frames", str(out), "--uri", "/not/tagged.wav", "--output", str(tmp_path / "x.png")]
    assert plot.run(missing) == 2
    assert "no frames for /not/tagged.wav" in capsys.readouterr().err
    outside = ["--frames", str(out), "--uri", str(wav), "--output", str(tmp_path / "y.png"),
               "--start_s", "50", "--end_s", "60"]
    assert plot.run(outside) == 2
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "y.png").exists()


def test_plot_reads_gcs_output_and_audio(sine_then_noise: tuple[Path, Path], tmp_path: Path, gcs):
    bucket = gcs.bucket("plot-test")
    local_out, wav = sine_then_noise
    audio_uri = gcs.upload_file(wav, f"{bucket}/audio/sine_then_noise.wav")
    scores = timeline_plot.load_frame_scores(str(local_out), str(wav)).scores
    out = tmp_path / "gcs_out"
    write_run(out, [FakeFile(audio_uri, STATUS_OK, scores=scores, duration_s=3.0)], RUN_ID)
    gcs.upload_dir(out, f"{bucket}/out")

    result = timeline_plot.plot_timeline(f"{bucket}/out", audio_uri, f"{bucket}/figs/timeline.png", top=3)

    assert result.audio_note is None and result.classes[0] == "Sine wave"
    figure = tmp_path / "downloaded.png"
    figure.write_bytes(gcs.read_bytes(f"{bucket}/figs/timeline.png"))
    pixels = png_pixels(figure)
    assert pixels.shape == (1000, 1600, 3)
    assert_not_blank(pixels)
