"""A stream whose sample rate changes mid-way (concatenated MP3s, chained Ogg): every unit, once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.audio_factory import sine, write_audio
from transforms.decoding.messages import END, SAMPLES, DecodeRequest, decode_messages
from transforms.decoding.stream import AudioStream

TARGET, HOP = 16000, 7680


@pytest.fixture(scope="module")
def two_rates(tmp_path_factory) -> Path:
    """6 s at 44.1 kHz then 6 s at 22.05 kHz, as one MP3 (two encoder runs, bytes appended)."""
    directory = tmp_path_factory.mktemp("rates")
    first = write_audio(directory / "a.mp3", sine(440.0, 6.0, 44100), 44100)
    second = write_audio(directory / "b.mp3", sine(440.0, 6.0, 22050), 22050,
                         muxer_options={"write_xing": "0", "id3v2_version": "0"})  # no tag mid-file
    joined = directory / "two_rates.mp3"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    return joined


def test_whole_file_decodes_both_parts(two_rates):
    with AudioStream(str(two_rates), TARGET) as stream:
        whole = np.concatenate(list(stream))
        assert stream.problem is None
    assert whole.size == pytest.approx(12 * TARGET, abs=0.1 * TARGET)  # each encoder run pads its end
    # the second part is the sine again, at its true time (not resampled as if it were 44.1 kHz)
    tail = whole[8 * TARGET:11 * TARGET]
    assert np.sqrt(np.mean(tail**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)
    spectrum = np.abs(np.fft.rfft(tail))
    assert np.argmax(spectrum) / 3 == pytest.approx(440.0, abs=2.0)


@pytest.mark.parametrize("hops", [4, 13, 16])  # starts before the change, just after it, well after it
def test_unit_sends_each_sample_once_and_matches_the_whole_file(two_rates, hops):
    whole = np.concatenate(list(AudioStream(str(two_rates), TARGET)))
    start = hops * HOP
    messages = list(decode_messages(DecodeRequest(str(two_rates), TARGET, start_sample=start)))

    assert messages[-1][0] == END and messages[-1][1] is True, messages[-1]
    unit = np.concatenate([m[1] for m in messages if m[0] == SAMPLES])
    assert start + unit.size == whole.size  # nothing sent twice, nothing lost
    # Where the unit's resampler restarts off the two rates' common grid, soxr's output differs
    # in the last bits; timing errors would be of the order of the signal itself.
    np.testing.assert_allclose(unit, whole[start:], atol=2e-3, rtol=0)
