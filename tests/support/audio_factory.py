"""Audio files made on the spot with PyAV, for tests that need real encoded audio.

Every file is produced by FFmpeg's own encoders and muxers, so decoding it
exercises the same code paths as a user's recording.  Signals are ``[C, N]``
float arrays in [-1, 1]; quantisation to integer formats is done here (not by
FFmpeg's converter) so a test knows exactly which sample values a lossless
file holds.
"""

from __future__ import annotations

import fractions
import itertools
from collections.abc import Iterable
from pathlib import Path

import av
import numpy as np

# Container and codec FFmpeg uses for a file suffix, unless the caller says otherwise.
DEFAULT_CODECS: dict[str, tuple[str, str]] = {
    ".wav": ("wav", "pcm_s16le"),
    ".aiff": ("aiff", "pcm_s16be"),
    ".flac": ("flac", "flac"),
    ".mp3": ("mp3", "libmp3lame"),
    ".ogg": ("ogg", "vorbis"),
    ".opus": ("ogg", "libopus"),
    ".m4a": ("ipod", "aac"),
    ".aac": ("adts", "aac"),
    ".mp4": ("mp4", "aac"),
    ".mkv": ("matroska", "aac"),
    ".webm": ("webm", "libopus"),
}

# PCM codecs that store fewer significant bits than their sample format carries.
_STORED_BITS = {"pcm_s24le": 24}

_FRAME_SAMPLES = 4096  # samples per frame handed to the encoder (it re-chunks as it needs)
_VIDEO_RATE = 10  # frames per second of the small video stream in "camera recordings"


def sine(freq_hz: float = 440.0, duration_s: float = 1.0, rate: int = 16000,
         amplitude: float = 0.5, channels: int = 1, start_sample: int = 0) -> np.ndarray:
    """A sine ``[channels, N]`` float64; every channel carries the same signal."""
    n = int(round(duration_s * rate))
    t = (np.arange(n) + start_sample) / rate
    wave = amplitude * np.sin(2 * np.pi * freq_hz * t)
    return np.repeat(wave[None, :], channels, axis=0)


def chirp(duration_s: float, rate: int, start_hz: float = 200.0, end_hz: float = 4000.0,
          amplitude: float = 0.5) -> np.ndarray:
    """A mono ``[1, N]`` linear sweep: unlike a sine, no shifted copy of it looks the same."""
    t = np.arange(int(round(duration_s * rate))) / rate
    phase = 2 * np.pi * (start_hz * t + (end_hz - start_hz) * t**2 / (2 * duration_s))
    return amplitude * np.sin(phase)[None, :]


def sine_chunks(freq_hz: float, duration_s: float, rate: int, amplitude: float = 0.5,
                channels: int = 1, chunk_s: float = 1.0) -> Iterable[np.ndarray]:
    """The same sine as :func:`sine`, generated piecewise (long files without holding them)."""
    total = int(round(duration_s * rate))
    step = int(round(chunk_s * rate))
    for start in range(0, total, step):
        n = min(step, total - start)
        yield sine(freq_hz, n / rate, rate, amplitude, channels, start_sample=start)


def quantize(samples: np.ndarray, sample_fmt: str, stored_bits: int | None = None) -> np.ndarray:
    """``[C, N]`` floats as the integer/float values of ``sample_fmt`` (planar layout)."""
    kind = sample_fmt.rstrip("p")
    if kind == "flt":
        return samples.astype(np.float32)
    if kind == "dbl":
        return samples.astype(np.float64)
    if kind == "u8":
        return np.clip(np.round(samples * 128.0) + 128.0, 0, 255).astype(np.uint8)
    bits = {"s16": 16, "s32": 32, "s64": 64}[kind]
    stored = stored_bits or bits
    full = 2.0 ** (stored - 1)
    ints = np.clip(np.round(samples * full), -full, full - 1).astype(np.int64)
    ints <<= bits - stored  # e.g. 24-bit values live in the top bits of s32
    return ints.astype({"s16": np.int16, "s32": np.int32, "s64": np.int64}[kind])


def dequantize(values: np.ndarray, sample_fmt: str, stored_bits: int | None = None) -> np.ndarray:
    """What a lossless file holding ``quantize(x)`` decodes to, as floats in [-1, 1]."""
    kind = sample_fmt.rstrip("p")
    if kind in ("flt", "dbl"):
        return values.astype(np.float64)
    if kind == "u8":
        return (values.astype(np.float64) - 128.0) / 128.0
    bits = {"s16": 16, "s32": 32, "s64": 64}[kind]
    return values.astype(np.float64) / 2.0 ** (bits - 1)


def _layout(channels: int) -> str:
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")


def _frame(values: np.ndarray, sample_fmt: str, layout: str, rate: int, pts: int) -> av.AudioFrame:
    """An AudioFrame from planar ``[C, n]`` values already in the right dtype."""
    if not sample_fmt.endswith("p"):
        values = np.ascontiguousarray(values.T).reshape(1, -1)  # packed: interleaved channels
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(values), format=sample_fmt, layout=layout)
    frame.sample_rate = rate
    frame.pts = pts
    frame.time_base = fractions.Fraction(1, rate)
    return frame


def _add_audio_stream(container: av.container.OutputContainer, codec: str, rate: int, channels: int,
                      sample_fmt: str | None, bit_rate: int | None) -> av.AudioStream:
    stream = container.add_stream(codec, rate=rate, layout=_layout(channels))
    context = stream.codec_context
    if sample_fmt is not None:
        context.format = sample_fmt
    if bit_rate is not None:
        context.bit_rate = bit_rate
    if codec in ("vorbis", "opus"):  # FFmpeg's native encoders are flagged experimental
        context.options = {"strict": "experimental"}
    return stream


def _stored_bits(codec: str, sample_fmt: str) -> int | None:
    if codec == "flac" and sample_fmt.startswith("s32"):  # FFmpeg's FLAC encoder keeps 24 of the 32 bits
        return 24
    return _STORED_BITS.get(codec)


def write_audio(path: str | Path, samples: np.ndarray | Iterable[np.ndarray], rate: int,
                codec: str | None = None, container: str | None = None,
                sample_fmt: str | None = None, bit_rate: int | None = None,
                video: bool = False, muxer_options: dict[str, str] | None = None) -> Path:
    """Encodes ``samples`` (``[C, N]`` floats, or an iterable of such chunks) into ``path``.

    ``codec``/``container`` default from the suffix (:data:`DEFAULT_CODECS`);
    ``sample_fmt`` picks the encoder's sample format (e.g. ``"s32"`` for 24-bit
    FLAC).  ``video=True`` adds a small video stream before the audio stream,
    as a camera or screen recording has.  ``muxer_options`` are the muxer's
    own options, as ``ffmpeg`` takes them after ``-i`` (``{"write_xing": "0"}``
    for an MP3 without a Xing/LAME header, ``{"movflags": "frag_keyframe+empty_moov"}``
    for a fragmented MP4).
    """
    path = Path(path)
    default_container, default_codec = DEFAULT_CODECS[path.suffix.lower()]
    codec = codec or default_codec
    chunks = iter([samples] if isinstance(samples, np.ndarray) else samples)
    first = np.atleast_2d(next(chunks))
    channels = first.shape[0]
    with av.open(str(path), mode="w", format=container or default_container,
                 options=muxer_options or {}) as output:
        video_stream = _add_video_stream(output) if video else None
        stream = _add_audio_stream(output, codec, rate, channels, sample_fmt, bit_rate)
        output.start_encoding()  # writes the header even when no sample follows
        fmt = stream.codec_context.format.name
        stored = _stored_bits(codec, fmt)
        pts = 0
        for chunk in itertools.chain([first], chunks):
            chunk = np.atleast_2d(chunk)
            for start in range(0, chunk.shape[1], _FRAME_SAMPLES):
                piece = quantize(chunk[:, start:start + _FRAME_SAMPLES], fmt, stored)
                output.mux(stream.encode(_frame(piece, fmt, _layout(channels), rate, pts)))
                pts += piece.shape[1]
        output.mux(stream.encode(None))
        if video_stream is not None:
            _write_video_frames(output, video_stream, pts / rate)
    return path


def write_video_only(path: str | Path, duration_s: float = 1.0, container: str | None = None) -> Path:
    """A video file with no audio stream at all."""
    path = Path(path)
    with av.open(str(path), mode="w", format=container or DEFAULT_CODECS[path.suffix.lower()][0]) as output:
        stream = _add_video_stream(output)
        _write_video_frames(output, stream, duration_s)
    return path


def _add_video_stream(output: av.container.OutputContainer) -> av.VideoStream:
    stream = output.add_stream("mpeg4", rate=_VIDEO_RATE)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    return stream


def _write_video_frames(output: av.container.OutputContainer, stream: av.VideoStream,
                        duration_s: float) -> None:
    for i in range(max(1, int(round(duration_s * _VIDEO_RATE)))):
        image = np.full((48, 64, 3), (i * 16) % 256, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = i
        output.mux(stream.encode(frame))
    output.mux(stream.encode(None))


def make_bad_files(directory: str | Path) -> dict[str, Path]:
    """Inputs a decoder must refuse or survive, by name.

    ``missing`` (does not exist), ``directory``, ``empty`` (0 bytes),
    ``text_as_wav``, ``random_as_mp3``, ``random_as_wav``, ``video_only``
    (mp4, no audio stream), ``nan_wav`` (float WAV with NaN/Inf from 0.5 s),
    ``header_only_wav`` (header claims 1 s of data, none follows),
    ``zero_sample_wav`` (a valid WAV with no samples), ``truncated_wav`` /
    ``truncated_flac`` / ``truncated_mp3`` (10 s files cut at 40 %),
    ``corrupt_flac`` / ``corrupt_mp3`` (10 s files with garbage bytes written
    over 10 % of the middle), ``nan_late_wav`` (4 s float WAV, NaN from 2.5 s),
    ``hours_wav`` (header claims 10 hours, the file holds 0.5 s), ``jump_mkv``
    (FLAC in Matroska whose timestamps jump 3 hours after 1 s: 2 s of audio in
    15 KB, declaring 3 hours), ``absurd_rate_wav`` (header says 1 Hz) and
    ``absurd_channels_wav`` (header says 65,535 channels).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1234)
    files: dict[str, Path] = {"missing": directory / "does_not_exist.wav"}

    files["directory"] = directory / "a_folder.wav"
    files["directory"].mkdir(exist_ok=True)
    files["empty"] = directory / "empty.wav"
    files["empty"].write_bytes(b"")
    files["text_as_wav"] = directory / "notes.wav"
    files["text_as_wav"].write_text("These are meeting notes, not audio.\n" * 200)
    files["random_as_mp3"] = directory / "noise.mp3"
    files["random_as_mp3"].write_bytes(rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    files["random_as_wav"] = directory / "noise.wav"
    files["random_as_wav"].write_bytes(rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    files["video_only"] = write_video_only(directory / "video_only.mp4", duration_s=1.0)

    signal = sine(440.0, 1.0, 16000)
    signal[:, 8000:8100] = np.nan
    signal[:, 8100:8200] = np.inf
    files["nan_wav"] = write_audio(directory / "nan.wav", signal, 16000, codec="pcm_f32le")

    late = sine(440.0, 4.0, 16000)
    late[:, 40000:40100] = np.nan
    files["nan_late_wav"] = write_audio(directory / "nan_late.wav", late, 16000, codec="pcm_f32le")

    half_second = write_audio(directory / "half_second.wav", sine(440.0, 0.5, 16000), 16000).read_bytes()
    data_at = half_second.index(b"data") + 8
    files["hours_wav"] = directory / "ten_hours.wav"
    files["hours_wav"].write_bytes(_wav_header_claiming(half_second[:data_at], 10 * 3600 * 32000)
                                   + half_second[data_at:])
    files["absurd_rate_wav"] = directory / "one_hertz.wav"
    files["absurd_rate_wav"].write_bytes(_wav_format_claiming(half_second, rate=1))
    files["absurd_channels_wav"] = directory / "many_channels.wav"
    files["absurd_channels_wav"].write_bytes(_wav_format_claiming(half_second, channels=65535))
    (directory / "half_second.wav").unlink()
    files["jump_mkv"] = write_timestamp_jump(directory / "jump.mkv", sine(440.0, 2.0, 16000), 16000,
                                             after_s=1.0, jump_s=3 * 3600)

    files["zero_sample_wav"] = write_audio(directory / "zero.wav", np.zeros((1, 0)), 16000)
    header = files["zero_sample_wav"].read_bytes()
    files["header_only_wav"] = directory / "header_only.wav"
    files["header_only_wav"].write_bytes(_wav_header_claiming(header, 32000))

    ten_seconds = sine(440.0, 10.0, 44100, channels=2)
    for name, suffix in (("wav", ".wav"), ("flac", ".flac"), ("mp3", ".mp3")):
        whole = write_audio(directory / f"whole_{name}{suffix}", ten_seconds, 44100)
        data = whole.read_bytes()
        files[f"truncated_{name}"] = directory / f"truncated{suffix}"
        files[f"truncated_{name}"].write_bytes(data[: int(len(data) * 0.4)])
        if name != "wav":  # PCM has no structure to corrupt: garbage is just noise
            corrupt = bytearray(data)
            start, stop = int(len(data) * 0.45), int(len(data) * 0.55)
            corrupt[start:stop] = rng.integers(0, 256, stop - start, dtype=np.uint8).tobytes()
            files[f"corrupt_{name}"] = directory / f"corrupt{suffix}"
            files[f"corrupt_{name}"].write_bytes(bytes(corrupt))
        whole.unlink()
    return files


def write_timestamp_jump(path: str | Path, samples: np.ndarray, rate: int, after_s: float,
                         jump_s: float) -> Path:
    """FLAC in Matroska whose packet timestamps jump ``jump_s`` ahead after ``after_s`` of audio.

    The container then declares the jumped length, which the bytes cannot hold.
    """
    path = Path(path)
    values = quantize(np.atleast_2d(samples), "s16")
    layout = _layout(values.shape[0])
    with av.open(str(path), mode="w", format="matroska") as output:
        stream = _add_audio_stream(output, "flac", rate, values.shape[0], "s16", None)
        output.start_encoding()
        packets = []
        for start in range(0, values.shape[1], _FRAME_SAMPLES):
            frame = _frame(values[:, start:start + _FRAME_SAMPLES], "s16", layout, rate, start)
            packets += stream.encode(frame)
        packets += stream.encode(None)
        for packet in packets:
            if packet.pts * packet.time_base >= after_s:
                shift = int(jump_s / packet.time_base)
                packet.pts, packet.dts = packet.pts + shift, packet.dts + shift
            output.mux(packet)
    return path


def _wav_format_claiming(wav: bytes, rate: int | None = None, channels: int | None = None) -> bytes:
    """A WAV whose fmt chunk claims another sample rate or channel count for the same bytes."""
    patched = bytearray(wav)
    fmt = patched.index(b"fmt ") + 8
    if channels is not None:
        patched[fmt + 2:fmt + 4] = channels.to_bytes(2, "little")
    if rate is not None:
        patched[fmt + 4:fmt + 8] = rate.to_bytes(4, "little")
    return bytes(patched)


def _wav_header_claiming(header: bytes, data_bytes: int) -> bytes:
    """A WAV header whose RIFF and data sizes claim ``data_bytes`` that are not there."""
    data_at = header.index(b"data")
    patched = bytearray(header[: data_at + 8])
    patched[4:8] = (len(patched) - 8 + data_bytes).to_bytes(4, "little")
    patched[data_at + 4: data_at + 8] = data_bytes.to_bytes(4, "little")
    return bytes(patched)
