"""Valid files with encoder delay (priming, pre-skip) decode as ok, to the length FFmpeg decodes.

Each cell of the matrix (``tests/decoding/encoder_cells.py``) is one codec
written by one encoder and muxer, here from a 1.5-s chirp; the reference is
FFmpeg's own decode of the same file (every frame, no seeking, no
resampling).  Debian's command-line encoders are used where the machine has
them and they can write the cell's format; their cells skip, saying why,
otherwise.  ``python -m bench.encoder_matrix`` runs the same cells on real
recordings of 10 s to 3 min.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from tests.decoding.encoder_cells import MATRIX
from tests.support.audio_factory import chirp, write_audio
from transforms.decoding.stream import AudioStream, probe

SECONDS = 1.5


def ffmpeg_decode(path: Path) -> tuple[int, int]:
    """(samples FFmpeg decodes from the file's audio stream, the largest frame it decodes)."""
    with av.open(str(path)) as container:
        sizes = [frame.samples for frame in container.decode(audio=0)]
    return sum(sizes), max(sizes)


@pytest.mark.parametrize("cell", list(MATRIX))
def test_valid_file_with_encoder_delay_is_ok_and_as_long_as_ffmpeg_decodes(tmp_path, cell):
    reason = MATRIX[cell].unavailable()
    if reason is not None:
        pytest.skip(reason)
    path = MATRIX[cell].write(tmp_path, chirp(SECONDS, MATRIX[cell].rate))
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
