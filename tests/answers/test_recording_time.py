"""When recordings started: file names, Broadcast WAV bext, container creation time, a manifest."""

from __future__ import annotations

import datetime as dt

import av
import numpy as np
import pytest

from tests.support.audio_factory import write_audio
from transforms.answers import recording_time as rt

UTC = dt.UTC


def write_bwf(path, date: str, time: str) -> str:
    """A WAV with a bext chunk, written by FFmpeg's own muxer."""
    with av.open(str(path), "w", format="wav", options={"write_bext": "1"}) as out:
        out.metadata["origination_date"] = date
        out.metadata["origination_time"] = time
        stream = out.add_stream("pcm_s16le", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1600), np.int16), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return str(path)


def write_m4a(path, creation_time: str) -> str:
    with av.open(str(path), "w", format="ipod") as out:
        out.metadata["creation_time"] = creation_time
        stream = out.add_stream("aac", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return str(path)


def test_file_names_as_field_recorders_write_them_and_user_patterns():
    assert rt.time_from_file_name("gs://b/site3/20240501_134510.WAV") == dt.datetime(2024, 5, 1, 13, 45, 10,
                                                                                      tzinfo=UTC)
    paris = rt.zone_of("Europe/Paris")  # Song Meter names are local time
    assert rt.time_from_file_name("/d/SM4A_20240501_134510.wav", zone=paris) == dt.datetime(
        2024, 5, 1, 11, 45, 10, tzinfo=UTC)
    assert rt.time_from_file_name("/d/REC_2024-05-01_13.45.10.flac", "REC_%Y-%m-%d_%H.%M.%S",
                                  rt.zone_of("-05:00")) == dt.datetime(2024, 5, 1, 18, 45, 10, tzinfo=UTC)
    assert rt.time_from_file_name("/d/take_7.wav") is None
    assert rt.time_from_file_name("/d/20241399_250000.wav") is None  # digits, but no date
    with pytest.raises(rt.TimeSettingsError, match="unsupported directive"):
        rt.pattern_regex("%Q")
    with pytest.raises(rt.TimeSettingsError, match="unknown time zone"):
        rt.zone_of("Mars/Olympus")


def test_bext_origination_and_container_creation_time(tmp_path):
    wav = write_bwf(tmp_path / "take.wav", "2023-11-02", "06:30:05")
    assert rt.bext_start(wav) == dt.datetime(2023, 11, 2, 6, 30, 5, tzinfo=UTC)
    m4a = write_m4a(tmp_path / "phone.m4a", "2024-05-01T13:45:10.000000Z")
    assert rt.container_creation_time(m4a) == dt.datetime(2024, 5, 1, 13, 45, 10, tzinfo=UTC)
    plain = write_audio(tmp_path / "plain.wav", np.zeros((1, 1600)), 16000)
    assert rt.bext_start(str(plain)) is None and rt.container_creation_time(str(plain)) is None
    assert rt.parse_bext_time("2023:11:02", "06-30-05") == dt.datetime(2023, 11, 2, 6, 30, 5, tzinfo=UTC)


def test_sources_are_tried_in_order_and_unreadable_files_have_none(tmp_path):
    wav = write_bwf(tmp_path / "20200101_000000.wav", "2023-11-02", "06:30:05")
    settings = rt.TimeSettings()
    found = rt.recording_start(wav, settings, manifest_value="2022-02-02T02:02:02+01:00")
    assert found == rt.RecordingStart(dt.datetime(2022, 2, 2, 1, 2, 2, tzinfo=UTC), "manifest")
    assert rt.recording_start(wav, settings).source == "bext"
    by_name = rt.recording_start(wav, rt.TimeSettings(sources=("file_name", "bext")))
    assert by_name == rt.RecordingStart(dt.datetime(2020, 1, 1, tzinfo=UTC), "file_name")
    gone = str(tmp_path / "20210101_120000.wav")  # never written: bext and creation time cannot be read
    assert rt.recording_start(gone, settings).source == "file_name"
    assert rt.recording_start(str(tmp_path / "nothing.wav"), settings) is None
    with pytest.raises(rt.TimeSettingsError, match="unknown time source"):
        rt.TimeSettings(sources=("sundial",)).check()


def test_starts_manifest_lines():
    columns = rt.manifest_columns("path,site,start_utc", "starts.csv")
    assert rt.manifest_entry('/d/a.wav,north,2024-05-01T00:00:00Z', columns) == [
        ("/d/a.wav", "2024-05-01T00:00:00Z")]
    assert rt.manifest_entry("", columns) == []
    with pytest.raises(rt.TimeSettingsError, match="start column"):
        rt.manifest_columns("uri,site", "starts.csv")
