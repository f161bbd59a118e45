"""The encoder matrix: one codec written by one encoder and muxer per cell.

Every lossy codec starts with samples the decoder drops (Opus pre-skip, AAC
and MP3 encoder delay, Vorbis's first overlap) and containers say so in
different ways: edit lists, negative first timestamps, Xing/LAME headers,
granule positions, or not at all (an MP4 without an edit list, a fragmented
MP4).  PyAV cells run everywhere; command-line cells need Debian's encoders
and say, through ``tests.audio_tools``, what they need the tool to do.
Shared by ``tests/decoding/test_encoder_delay.py`` (a 1.5-s chirp per cell)
and ``bench.encoder_matrix`` (real recordings of 10 s to 3 min per cell).
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.audio_tools import missing
from tests.support.audio_factory import write_audio


@dataclasses.dataclass(frozen=True)
class Cell:
    """How to write one cell's file from a mono ``[1, N]`` signal at ``rate``."""

    rate: int  # the rate the signal is given at (what the encoder is fed)
    write: Callable[[Path, np.ndarray], Path]  # (directory, signal) -> the encoded file
    tool: str | None = None  # the command-line tool it runs, if any
    needs: tuple[str | None, ...] = (None,)  # what the tool must do (ffmpeg encoders, a sox format)

    def unavailable(self) -> str | None:
        """Why this machine cannot write the cell, or None."""
        if self.tool is None:
            return None
        return next(filter(None, (missing(self.tool, capability) for capability in self.needs)), None)


def _pyav(codec: str, container: str, rate: int, suffix: str, **options) -> Cell:
    def write(directory: Path, signal: np.ndarray) -> Path:
        path = directory / f"pyav_{codec}_{container}{suffix}"
        stereo = np.repeat(signal, 2, axis=0)  # FFmpeg's own Vorbis encoder needs two channels
        return write_audio(path, stereo, rate, codec=codec, container=container,
                           muxer_options=options or None)
    return Cell(rate, write)


def _tool(command: list[str], suffix: str, capability: str | None = None, rate: int = 44100,
          then: list[str] | None = None, then_needs: str | None = None, then_suffix: str = "") -> Cell:
    """A cell written by a command-line tool from a WAV ('{src}' and '{out}' in ``command``).

    ``then``: a second command of the same tool that turns that file ('{src}')
    into the cell's file ('{out}', with ``then_suffix``).
    """
    def write(directory: Path, signal: np.ndarray) -> Path:
        source = write_audio(directory / "source.wav", signal, rate)
        steps = [(command, suffix)] + ([(then, then_suffix)] if then else [])
        for step, (argv, ending) in enumerate(steps):
            out = directory / f"{command[0]}_{step}{ending}"
            subprocess.run([part.format(src=source, out=out) for part in argv], check=True,
                           capture_output=True, timeout=600)
            source = out
        return source
    return Cell(rate, write, command[0], (capability, then_needs))


FFMPEG = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", "{src}"]

MATRIX: dict[str, Cell] = {  # cell id -> how to write the file
    # Opus: pre-skip 312 at 48 kHz
    "opus/pyav-libopus/ogg": _pyav("libopus", "ogg", 48000, ".opus"),
    "opus/pyav-libopus/webm": _pyav("libopus", "webm", 48000, ".webm"),
    "opus/pyav-libopus/mp4": _pyav("libopus", "mp4", 48000, ".mp4"),
    "opus/pyav-libopus/mp4-no-editlist": _pyav("libopus", "mp4", 48000, ".mp4", use_editlist="0"),
    "opus/pyav-libopus/fragmented-mp4": _pyav("libopus", "mp4", 48000, ".mp4",
                                              movflags="frag_keyframe+empty_moov"),
    "opus/opusenc/ogg": _tool(["opusenc", "--quiet", "{src}", "{out}"], ".opus", rate=48000),
    "opus/ffmpeg-libopus/ogg": _tool([*FFMPEG, "-c:a", "libopus", "{out}"], ".opus", "libopus", 48000),
    # Debian 12's FFmpeg 5.1 from an Ogg Vorbis recording: granule positions with timestamp jitter
    "opus/ffmpeg-libopus/ogg-from-vorbis": _tool(
        [*FFMPEG, "-c:a", "libvorbis", "{out}"], ".ogg", "libvorbis", 44100,
        then=[*FFMPEG, "-ar", "48000", "-ac", "1", "-c:a", "libopus", "{out}"], then_needs="libopus",
        then_suffix=".opus"),
    "opus/ffmpeg-libopus/fragmented-mp4": _tool(
        [*FFMPEG, "-c:a", "libopus", "-movflags", "frag_keyframe+empty_moov", "{out}"], ".mp4", "libopus",
        48000),
    # AAC: 1024 (FFmpeg) or 2112 samples of priming
    "aac/pyav-aac/m4a": _pyav("aac", "ipod", 44100, ".m4a"),
    "aac/pyav-aac/adts": _pyav("aac", "adts", 44100, ".aac"),
    "aac/pyav-aac/mp4-no-editlist": _pyav("aac", "mp4", 44100, ".mp4", use_editlist="0"),
    "aac/pyav-aac/fragmented-mp4": _pyav("aac", "mp4", 44100, ".mp4", movflags="frag_keyframe+empty_moov"),
    "aac/pyav-aac/matroska": _pyav("aac", "matroska", 44100, ".mkv"),
    "aac/ffmpeg-aac/m4a": _tool([*FFMPEG, "-c:a", "aac", "{out}"], ".m4a", "aac"),
    # MP3: 1105 samples of delay, said by the LAME/Xing header when there is one
    "mp3/pyav-libmp3lame/xing": _pyav("libmp3lame", "mp3", 44100, ".mp3"),
    "mp3/pyav-libmp3lame/no-xing": _pyav("libmp3lame", "mp3", 44100, ".mp3", write_xing="0"),
    "mp3/lame/lame-tag": _tool(["lame", "--quiet", "{src}", "{out}"], ".mp3"),
    "mp3/lame/no-tag": _tool(["lame", "--quiet", "-t", "{src}", "{out}"], ".mp3"),
    "mp3/sox/mp3": _tool(["sox", "{src}", "{out}"], ".mp3", "mp3"),
    "mp3/ffmpeg-libmp3lame/xing": _tool([*FFMPEG, "-c:a", "libmp3lame", "{out}"], ".mp3", "libmp3lame"),
    # Vorbis: the first block only primes the overlap
    "vorbis/pyav-vorbis/ogg": _pyav("vorbis", "ogg", 44100, ".ogg"),
    "vorbis/pyav-vorbis/webm": _pyav("vorbis", "webm", 48000, ".webm"),
    "vorbis/oggenc/ogg": _tool(["oggenc", "-Q", "{src}", "-o", "{out}"], ".ogg"),
    "vorbis/sox/ogg": _tool(["sox", "{src}", "{out}"], ".ogg", "ogg"),
    "vorbis/ffmpeg-libvorbis/ogg": _tool([*FFMPEG, "-c:a", "libvorbis", "{out}"], ".ogg", "libvorbis"),
}


ESC10 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "esc10"
SPEECH_COMMANDS = ESC10.parent / "speech_commands"


def long_recording(kind: str, seconds: float, rate: int) -> np.ndarray | None:
    """``[1, N]`` mono at ``rate``: real clips from ../shared/data one after another; None without them.

    ``kind`` is ``"speech"`` (Speech Commands words, 1 s each) or an ESC-10
    class (``"rooster"``, ``"rain"``...: 5-s clips, every fold, repeated when
    the class has fewer than the length needs).
    """
    import av
    import soxr

    if kind == "speech":
        clips = sorted(path for path in SPEECH_COMMANDS.glob("*/*.flac") if path.parent.name != "_silence_")
    else:
        labels = ESC10 / "labels.csv"
        rows = labels.read_text().splitlines()[1:] if labels.exists() else []
        clips = [ESC10 / row.split(",")[0] for row in rows if row.split(",")[1] == kind]
    if not clips:
        return None
    parts, total, needed = [], 0, int(seconds * rate)
    for index in range(10_000):
        with av.open(str(clips[index % len(clips)])) as container:
            frames = [_as_float(frame.to_ndarray()) for frame in container.decode(audio=0)]
            source_rate = container.streams.audio[0].sample_rate
        mono = np.concatenate(frames, axis=1).mean(axis=0)
        part = mono if source_rate == rate else soxr.resample(mono, source_rate, rate, quality="HQ")
        parts.append(part[: needed - total])
        total += parts[-1].size
        if total >= needed:
            break
    return np.concatenate(parts)[None, :]


def _as_float(values: np.ndarray) -> np.ndarray:
    """A frame's samples in [-1, 1] (Speech Commands FLAC decodes to 16-bit integers)."""
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(np.float32) / np.float32(np.iinfo(values.dtype).max + 1)
    return values.astype(np.float32)
