"""Valid files with encoder delay (priming, pre-skip) decode as ok, to the length FFmpeg decodes.

Every lossy codec starts with samples the decoder drops (Opus pre-skip, AAC
and MP3 encoder delay, Vorbis's first overlap) and containers say so in
different ways: edit lists, negative first timestamps, Xing/LAME headers,
granule positions, or not at all (an MP4 without an edit list, a fragmented
MP4).  Each cell of the matrix is one codec written by one encoder and
muxer; the reference is FFmpeg's own decode of the same file (every frame,
no seeking, no resampling).  Debian's command-line encoders are used where
the machine has them; their cells skip otherwise.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from tests.support.audio_factory import chirp, write_audio
from transforms.decoding.stream import AudioStream, probe

SECONDS = 1.5


def ffmpeg_decode(path: Path) -> tuple[int, int]:
    """(samples FFmpeg decodes from the file's audio stream, the largest frame it decodes)."""
    with av.open(str(path)) as container:
        sizes = [frame.samples for frame in container.decode(audio=0)]
    return sum(sizes), max(sizes)


def _pyav(codec: str, container: str, rate: int, suffix: str, **options):
    def make(directory: Path) -> Path:
        path = directory / f"pyav_{codec}_{container}{suffix}"
        stereo = np.repeat(chirp(SECONDS, rate), 2, axis=0)  # FFmpeg's own Vorbis encoder needs two channels
        return write_audio(path, stereo, rate, codec=codec, container=container,
                           muxer_options=options or None)
    return make


def _tool(command: list[str], suffix: str, rate: int = 44100, channels: int = 1):
    """A cell written by a command-line tool from a WAV ('{src}' and '{out}' in ``command``)."""
    def make(directory: Path) -> Path:
        if shutil.which(command[0]) is None:
            pytest.skip(f"{command[0]} is not installed (apt-get install it to check this cell)")
        source = write_audio(directory / "source.wav", np.repeat(chirp(SECONDS, rate), channels, 0), rate)
        out = directory / f"{command[0]}{suffix}"
        argv = [part.format(src=source, out=out) for part in command]
        subprocess.run(argv, check=True, capture_output=True, timeout=60)
        return out
    return make


FFMPEG = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", "{src}"]

MATRIX = {  # cell id -> how to write the file
    # Opus: pre-skip 312 at 48 kHz
    "opus/pyav-libopus/ogg": _pyav("libopus", "ogg", 48000, ".opus"),
    "opus/pyav-libopus/webm": _pyav("libopus", "webm", 48000, ".webm"),
    "opus/pyav-libopus/mp4": _pyav("libopus", "mp4", 48000, ".mp4"),
    "opus/pyav-libopus/mp4-no-editlist": _pyav("libopus", "mp4", 48000, ".mp4", use_editlist="0"),
    "opus/pyav-libopus/fragmented-mp4": _pyav("libopus", "mp4", 48000, ".mp4",
                                              movflags="frag_keyframe+empty_moov"),
    "opus/opusenc/ogg": _tool(["opusenc", "--quiet", "{src}", "{out}"], ".opus", 48000),
    "opus/ffmpeg-libopus/ogg": _tool([*FFMPEG, "-c:a", "libopus", "{out}"], ".opus", 48000),
    "opus/ffmpeg-libopus/fragmented-mp4": _tool(
        [*FFMPEG, "-c:a", "libopus", "-movflags", "frag_keyframe+empty_moov", "{out}"], ".mp4", 48000),
    # AAC: 1024 (FFmpeg) or 2112 samples of priming
    "aac/pyav-aac/m4a": _pyav("aac", "ipod", 44100, ".m4a"),
    "aac/pyav-aac/adts": _pyav("aac", "adts", 44100, ".aac"),
    "aac/pyav-aac/mp4-no-editlist": _pyav("aac", "mp4", 44100, ".mp4", use_editlist="0"),
    "aac/pyav-aac/fragmented-mp4": _pyav("aac", "mp4", 44100, ".mp4", movflags="frag_keyframe+empty_moov"),
    "aac/pyav-aac/matroska": _pyav("aac", "matroska", 44100, ".mkv"),
    "aac/ffmpeg-aac/m4a": _tool([*FFMPEG, "-c:a", "aac", "{out}"], ".m4a"),
    # MP3: 1105 samples of delay, said by the LAME/Xing header when there is one
    "mp3/pyav-libmp3lame/xing": _pyav("libmp3lame", "mp3", 44100, ".mp3"),
    "mp3/pyav-libmp3lame/no-xing": _pyav("libmp3lame", "mp3", 44100, ".mp3", write_xing="0"),
    "mp3/lame/lame-tag": _tool(["lame", "--quiet", "{src}", "{out}"], ".mp3"),
    "mp3/lame/no-tag": _tool(["lame", "--quiet", "-t", "{src}", "{out}"], ".mp3"),
    "mp3/sox/mp3": _tool(["sox", "{src}", "{out}"], ".mp3"),
    "mp3/ffmpeg-libmp3lame/xing": _tool([*FFMPEG, "-c:a", "libmp3lame", "{out}"], ".mp3"),
    # Vorbis: the first block only primes the overlap
    "vorbis/pyav-vorbis/ogg": _pyav("vorbis", "ogg", 44100, ".ogg"),
    "vorbis/pyav-vorbis/webm": _pyav("vorbis", "webm", 48000, ".webm"),
    "vorbis/oggenc/ogg": _tool(["oggenc", "-Q", "{src}", "-o", "{out}"], ".ogg"),
    "vorbis/sox/ogg": _tool(["sox", "{src}", "{out}"], ".ogg"),
    "vorbis/ffmpeg-libvorbis/ogg": _tool([*FFMPEG, "-c:a", "libvorbis", "{out}"], ".ogg"),
}


@pytest.mark.parametrize("cell", list(MATRIX))
def test_valid_file_with_encoder_delay_is_ok_and_as_long_as_ffmpeg_decodes(tmp_path, cell):
    path = MATRIX[cell](tmp_path)
    expected, packet = ffmpeg_decode(path)

    with AudioStream(str(path), probe(str(path)).sample_rate) as stream:
        decoded = sum(chunk.size for chunk in stream)  # at the source rate: nothing resampled
        problem = stream.problem

    assert problem is None, cell
    assert abs(decoded - expected) <= packet, (cell, decoded, expected)


def test_unit_inside_a_file_without_edit_list_matches_the_whole_file_decode(tmp_path):
    # The decoder moves the first frame past the pre-skip; a unit that seeks must count from
    # the same first sample as a decode from the start, or every frame of it shifts.
    rate, hop = 48000, 7680
    path = str(write_audio(tmp_path / "capture.mp4", chirp(12.0, rate), rate, codec="libopus",
                           muxer_options={"movflags": "frag_keyframe+empty_moov"}))
    whole = np.concatenate(list(AudioStream(path, 16000)))
    for start in (4 * hop, 13 * hop):
        with AudioStream(path, 16000, start_sample=start) as stream:
            unit = np.concatenate(list(stream))
            assert stream.seek_method == "container" and stream.problem is None
        assert start + unit.size == whole.size
        np.testing.assert_allclose(unit, whole[start:], atol=1e-6, rtol=0)
