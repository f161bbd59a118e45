"""Timestamp jitter is not missing audio; a dropped segment is.

Debian 12's FFmpeg 5.1 writes Ogg Opus files (``ffmpeg -i in.ogg -c:a libopus
out.opus``) whose page granule positions run 5-50 ms ahead of the samples
for a second or two and then return: FFmpeg's own decode gives every
sample.  Jumps ahead that short (under aresample's ``min_hard_comp``, 0.1 s)
or that the stream gives back are decoded as they come, ``ok``; a segment
whose packets are gone is still filled with silence and reported.

The remuxed files here run everywhere: PyAV copies an Ogg Opus file packet
by packet and moves (or drops) some packets' timestamps.  The FFmpeg test
writes the files the way the issue's user did, where this machine's
``ffmpeg`` has the libvorbis and libopus encoders and ../shared has the
recordings.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest

from tests.audio_tools import require
from tests.decoding.encoder_cells import long_recording
from tests.support.audio_factory import chirp, write_audio
from transforms.decoding.stream import JITTER_MAX_S, AudioStream

RATE = 48000
PACKET = 960  # libopus's 20-ms packets at 48 kHz
SECONDS = 10.0


def ffmpeg_decode_samples(path: Path) -> int:
    """Samples FFmpeg decodes from the file (every frame, no timestamps looked at)."""
    with av.open(str(path)) as container:
        return sum(frame.samples for frame in container.decode(audio=0))


def decode(path: Path) -> tuple[np.ndarray, str | None]:
    with AudioStream(str(path), RATE) as stream:
        return np.concatenate(list(stream)), stream.problem


def remux(source: Path, out: Path, change: Callable[[int], int | None]) -> Path:
    """``source`` copied packet by packet; ``change(i)`` moves packet i's pts (samples) or drops it (None).

    Only the pts moves when the move would make decoding timestamps go back
    (muxers refuse that); the Ogg muxer writes granule positions from pts.
    """
    with av.open(str(source)) as original, av.open(str(out), "w", format="ogg") as copy:
        audio = original.streams.audio[0]
        target = copy.add_stream_from_template(audio)
        for index, packet in enumerate(original.demux(audio)):
            if packet.dts is None:  # the demuxer's empty flush packet
                continue
            shift = change(index)
            if shift is None:
                continue
            packet.pts += shift
            if shift < PACKET:
                packet.dts += shift
            packet.stream = target
            copy.mux(packet)
    return out


@pytest.fixture(scope="module")
def opus_chirp(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("jitter")
    return write_audio(directory / "chirp.opus", chirp(SECONDS, RATE), RATE)


@pytest.mark.parametrize("name,change", [
    # FFmpeg 5.1's pattern: 279 samples ahead for 50 packets, then back on the grid
    ("short jump, given back", lambda i: 279 if 100 <= i < 150 else 0),
    ("short jump, kept to the end", lambda i: 279 if i >= 100 else 0),
    ("0.3-s jump, given back 1.7 s later", lambda i: 14400 if 100 <= i < 200 else 0),
])
def test_timestamp_jitter_decodes_every_sample_with_no_silence(opus_chirp, tmp_path, name, change):
    path = remux(opus_chirp, tmp_path / "jitter.opus", change)
    decoded, problem = decode(path)

    assert problem is None, name
    assert decoded.size == ffmpeg_decode_samples(path) == SECONDS * RATE, name  # exact: no sample added
    original, _ = decode(opus_chirp)
    np.testing.assert_allclose(decoded, original, rtol=0, atol=1e-6)  # the same samples at the same places


def test_a_unit_that_seeks_into_jitter_matches_the_whole_file_decode(opus_chirp, tmp_path):
    # A seek lands by timestamps, which run 279 samples ahead from packet 100 to 150 (2.0-3.0 s): the
    # jump back at their end says by how much, so the unit starts where the whole-file decode has it.
    path = str(remux(opus_chirp, tmp_path / "jitter.opus", lambda i: 279 if 100 <= i < 150 else 0))
    target = 16000
    whole = np.concatenate(list(AudioStream(path, target)))
    for start_s in (2.2, 3.4, 5.0):  # decoding starts 0.5-0.75 s before: inside the stretch, or past it
        start = int(start_s * target)
        with AudioStream(path, target, start_sample=start) as stream:
            unit = np.concatenate(list(stream))
            assert stream.seek_method == "container" and stream.problem is None
        assert start + unit.size == whole.size, start_s
        np.testing.assert_allclose(unit, whole[start:], atol=1e-6, rtol=0)


def test_a_dropped_segment_is_filled_with_silence_and_reported(opus_chirp, tmp_path):
    # 25 packets (0.5 s) gone: the packets after them keep their timestamps.
    path = remux(opus_chirp, tmp_path / "dropped.opus", lambda i: None if 100 <= i < 125 else 0)
    decoded, problem = decode(path)

    assert problem == "decoder_error: 0.50 s of missing audio filled with silence"
    assert ffmpeg_decode_samples(path) == SECONDS * RATE - 25 * PACKET
    assert decoded.size == SECONDS * RATE  # the silence keeps every later sample at its time
    original, _ = decode(opus_chirp)
    with av.open(str(opus_chirp)) as container:  # sample 0 is pts 0: the pre-skip is before it
        dropped_at = [packet.pts for packet in container.demux(audio=0)][100]
    zeros = np.flatnonzero(decoded == 0)
    assert zeros.size == 25 * PACKET and zeros[-1] - zeros[0] == zeros.size - 1  # one hole of 0.5 s
    # Ogg times pages, not packets: the demuxer places a page's packets back from its granule position,
    # so the hole may start a packet away from the first packet that went
    assert abs(zeros[0] - dropped_at) <= PACKET
    # after the hole the chirp is back at its time, once libopus's state has caught up (~5 packets)
    after = zeros[-1] + 1 + 10 * PACKET
    np.testing.assert_allclose(decoded[after:], original[after:], atol=0.01)


def test_a_short_gap_after_a_damaged_packet_is_still_filled(opus_chirp, tmp_path):
    # Under JITTER_MAX_S, but a packet failed to decode: its audio is missing, not its timestamp jittering.
    copied = tmp_path / "damaged.opus"
    with av.open(str(opus_chirp)) as original, av.open(str(copied), "w", format="ogg") as copy:
        audio = original.streams.audio[0]
        target = copy.add_stream_from_template(audio)
        for index, packet in enumerate(original.demux(audio)):
            if packet.dts is None:
                continue
            if index == 100:  # TOC code 3 with a frame count of 0: libopus refuses the packet
                replacement = av.Packet(bytes([bytes(packet)[0] | 3, 0]))
                replacement.pts, replacement.dts = packet.pts, packet.dts
                replacement.duration, replacement.time_base = packet.duration, packet.time_base
                packet = replacement
            packet.stream = target
            copy.mux(packet)
    decoded, problem = decode(copied)

    assert PACKET < JITTER_MAX_S * RATE
    assert problem is not None and problem.startswith("decoder_error: 1 damaged packet skipped")
    assert "0.02 s of missing audio filled with silence" in problem
    assert decoded.size == SECONDS * RATE


# Sources the user converted: speech and sounds, 10 s to 3 min.
FFMPEG_SOURCES = [("speech", 30.0), ("dog_bark", 30.0), ("helicopter", 30.0), ("rain", 10.0),
                  ("chainsaw", 180.0)]


@pytest.mark.parametrize("kind,seconds", FFMPEG_SOURCES)
def test_ffmpeg_libopus_from_ogg_vorbis_is_ok_and_as_long_as_ffmpeg_decodes(tmp_path, kind, seconds):
    require("ffmpeg", "libopus")
    require("ffmpeg", "libvorbis")
    signal = long_recording(kind, seconds, 44100)
    if signal is None:
        pytest.skip(f"no {kind} recordings under ../shared/data (the project expects ../shared next to it)")
    wav = write_audio(tmp_path / "in.wav", signal, 44100)
    ogg, opus = tmp_path / "in.ogg", tmp_path / "out.opus"
    ffmpeg = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i"]
    subprocess.run([*ffmpeg, str(wav), "-c:a", "libvorbis", str(ogg)], check=True, timeout=600)
    subprocess.run([*ffmpeg, str(ogg), "-ar", "48000", "-ac", "1", "-c:a", "libopus", str(opus)],
                   check=True, timeout=600)
    decoded, problem = decode(opus)

    assert problem is None, (kind, seconds)
    # Exact: FFmpeg decodes these samples and the product adds none and loses none.
    assert decoded.size == ffmpeg_decode_samples(opus), (kind, seconds)
    # Units that seek (into a stretch of jitter or not) start where the whole-file decode has them.
    for start in np.linspace(RATE, decoded.size - 3 * RATE, 5).astype(int):
        with AudioStream(str(opus), RATE, start_sample=int(start), chunk_samples=RATE) as stream:
            unit = next(iter(stream))
        np.testing.assert_allclose(unit, decoded[start:start + unit.size], atol=1e-6, rtol=0)
