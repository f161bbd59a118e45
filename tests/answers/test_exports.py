"""Raven selection tables and Audacity label files from events rows."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from transforms.answers.exports import audacity_labels, export_events, file_stems, raven_table

UTC = dt.UTC

EVENT = {"label": "Dog", "start_s": 1.25, "end_s": 2.75, "peak_score": 0.9, "mean_score": 0.7,
         "start_utc": dt.datetime(2024, 5, 1, 13, 45, 11, 250000, tzinfo=UTC)}


def test_raven_and_audacity_files():
    later = {**EVENT, "label": "Bird\tsong", "start_s": 0.5, "end_s": 0.75, "start_utc": None}
    raven = raven_table([EVENT, later], 8000).splitlines()
    assert raven[0].split("\t")[:8] == ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)",
                                        "Low Freq (Hz)", "High Freq (Hz)", "Annotation"]
    assert raven[1].split("\t")[3:8] == ["0.500000", "0.750000", "0", "8000", "Bird song"]
    assert raven[2].split("\t")[-1] == "2024-05-01T13:45:11.250000+00:00"
    assert audacity_labels([EVENT, later]) == "0.500000\t0.750000\tBird song\n1.250000\t2.750000\tDog\n"


def test_one_file_per_recording_named_after_it(tmp_path):
    rows = [{**EVENT, "uri": uri} for uri in ("/a/dawn.wav", "/b/dawn.wav", "/a/dusk.flac", "/a/dusk.flac")]
    written = export_events(pa.Table.from_pylist(rows), str(tmp_path / "x"), sample_rate=16000)
    names = sorted(p.rsplit("/", 1)[-1] for p in written)
    stems = file_stems(["/a/dawn.wav", "/b/dawn.wav"])
    assert stems["/a/dawn.wav"] != stems["/b/dawn.wav"] and stems["/a/dawn.wav"].startswith("dawn-")
    assert len(names) == 6 and "dusk.labels.txt" in names and "dusk.Table.1.selections.txt" in names
    assert (tmp_path / "x" / "dusk.labels.txt").read_text().count("\n") == 2
