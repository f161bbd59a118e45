"""tag_audio --events and beam_jobs.events, end to end on real audio files and a real SavedModel.

The model (tests/answers/tone_model.py) hears two tones; the recordings hold them at known times, so
every event's onset and offset can be checked against the truth: within one hop (0.25 s).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow.parquet as pq
import pytest

from beam_jobs import events as events_job
from schemas.answers import event_rules_from
from tests.answers.tone_model import HOP, RATE, save_tone_model, tone
from tests.support.audio_factory import write_audio
from tests.support.pipeline_helpers import read_table, run_tag_audio
from transforms.answers.event_options import EventOptionsError, event_settings
from transforms.answers.event_run import events_over
from transforms.output.frame_source import find_frames

HOP_S = HOP / RATE
THRESHOLDS = "class,on,off,min_duration_s,merge_gap_s\n*,0.8,0.5,0.3,0\n"
# file -> (label, start_s, end_s) of every tone in it
TRUTH = {
    "20240501_134510.wav": [("low", 2.1, 3.3), ("high", 5.0, 6.5)],
    "take.flac": [("low", 1.0, 4.0), ("high", 6.2, 6.35)],  # the short one is under min_duration_s
}


def recording(tones: list[tuple[str, float, float]], seconds: float = 9.0) -> np.ndarray:
    signal = np.random.default_rng(1).normal(0, 0.005, int(seconds * RATE))
    for label, start, end in tones:
        piece = tone(500.0 if label == "low" else 2000.0, end - start)
        signal[int(round(start * RATE)):int(round(start * RATE)) + piece.size] += piece
    return signal[None, :]


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    root = tmp_path_factory.mktemp("events")
    model = save_tone_model(root / "model")
    audio = root / "in"
    audio.mkdir()
    for name, tones in TRUTH.items():
        write_audio(audio / name, recording(tones), RATE)
    thresholds = root / "thresholds.csv"
    thresholds.write_text(THRESHOLDS)
    out = root / "out"
    assert run_tag_audio(["--input", str(audio), "--output", str(out), "--model", "savedmodel",
                          "--model_path", str(model), "--events", "--event_thresholds", str(thresholds)]) == 0
    return root, out


def by_file(table) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for row in sorted(table.to_pylist(), key=lambda r: (r["uri"], r["start_s"])):
        found.setdefault(row["uri"].rsplit("/", 1)[-1], []).append(row)
    return found


def test_tag_audio_events_find_each_tone_within_one_hop(tagged):
    _, out = tagged
    table = read_table(out, "events")
    found = by_file(table)
    expected = {name: [t for t in tones if t[2] - t[1] >= 0.3] for name, tones in TRUTH.items()}
    for name, tones in expected.items():
        assert [row["label"] for row in found[name]] == [label for label, _, _ in tones], found[name]
        for row, (_, start, end) in zip(found[name], tones):
            assert abs(row["start_s"] - start) <= HOP_S and abs(row["end_s"] - end) <= HOP_S, row
            assert 0.8 <= row["peak_score"] <= 1.0 and row["mean_score"] >= 0.5
            assert start <= row["peak_s"] <= end
    # The file name says when the first recording started (AudioMoth style); the other has no time.
    first = found["20240501_134510.wav"][0]
    start = dt.datetime(2024, 5, 1, 13, 45, 10, tzinfo=dt.UTC)
    assert first["time_source"] == "file_name"
    assert abs((first["start_utc"] - start).total_seconds() - first["start_s"]) < 0.002
    assert all(row["start_utc"] is None and row["time_source"] is None for row in found["take.flac"])
    # The rules that made the events travel with them, next to the model's metadata.
    schema = pq.read_schema(next((out / "events").glob("run=*/*.parquet")))
    assert event_rules_from(schema)["default"]["on"] == pytest.approx(0.8)
    assert b"audio_tagger.config_id" in schema.metadata


def test_events_job_over_finished_frames_gives_the_same_events(tagged, tmp_path, capsys):
    root, out = tagged
    starts = tmp_path / "starts.csv"
    starts.write_text(f"uri,start_utc\n{root / 'in' / 'take.flac'},2023-01-02T03:04:05+01:00\n")
    events_dir = tmp_path / "events"
    assert events_job.run(["--frames", str(out), "--output", str(events_dir), "--thresholds",
                           str(root / "thresholds.csv"), "--start_times", str(starts),
                           "--raven", str(tmp_path / "raven"), "--audacity", str(tmp_path / "audacity")]) == 0
    assert "3 events in 2 recordings" in capsys.readouterr().out
    again, first = by_file(read_table(events_dir, "events")), by_file(read_table(out, "events"))
    columns = ("label", "start_s", "end_s", "peak_s", "peak_score", "num_frames")
    assert {n: [[r[c] for c in columns] for r in rows] for n, rows in again.items()} == \
        {n: [[r[c] for c in columns] for r in rows] for n, rows in first.items()}
    take = again["take.flac"][0]
    assert take["time_source"] == "manifest"
    assert take["start_utc"] == dt.datetime(2023, 1, 2, 2, 4, 5, tzinfo=dt.UTC) + dt.timedelta(
        milliseconds=round(take["start_s"] * 1000))
    # One Raven table and one Audacity label file per recording with events.
    labels = (tmp_path / "audacity" / "take.labels.txt").read_text().split("\t")
    assert labels[2].strip() == "low" and float(labels[0]) == pytest.approx(take["start_s"], abs=1e-5)
    assert len(list((tmp_path / "raven").glob("*.selections.txt"))) == 2


def test_events_of_tag_audio_export_without_recomputing(tagged, tmp_path):
    _, out = tagged
    assert events_job.run(["--events", str(out), "--audacity", str(tmp_path / "labels")]) == 0
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == [
        "20240501_134510.labels.txt", "take.labels.txt"]


def test_bad_event_options_are_one_line_before_any_work(tagged, tmp_path, capsys):
    root, out = tagged
    model = str(root / "model")
    args = ["--input", str(root / "in"), "--output", str(tmp_path / "o"), "--model", "savedmodel",
            "--model_path", model, "--events"]
    assert run_tag_audio(args + ["--event_class", "lwo"]) == 2
    assert run_tag_audio(args + ["--time_zone", "Mars/Olympus"]) == 2
    assert run_tag_audio(args + ["--event_thresholds", str(tmp_path / "missing.csv")]) == 2
    assert events_job.run(["--frames", str(tmp_path / "nothing"), "--output", str(tmp_path / "e")]) == 2
    assert events_job.run(["--events", str(out)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines()
              if line.startswith(("tag_audio:", "events:"))]
    assert len(errors) == 5 and "close: low" in errors[0] and "unknown time zone" in errors[1]
    assert not (tmp_path / "o").exists()


def test_the_answers_library_checks_the_frames_and_classes_the_events_job_asks_for(tagged, tmp_path):
    root, out = tagged
    source = find_frames(str(out))
    frames = events_over(source, event_settings(str(root / "thresholds.csv"), ["low"]), "--classes")
    assert frames.score_column == "scores" and [name for _, name, _ in frames.context.classes] == ["low"]
    assert frames.parameters()["runs"] == list(source.run_ids) and frames.parameters()["frames"] == str(out)
    assert frames.context.hop_s == pytest.approx(HOP_S)
    with pytest.raises(EventOptionsError, match="^--classes: .*close: low"):
        events_over(source, event_settings(classes=["lwo"]), "--classes")
    with pytest.raises(EventOptionsError, match="unknown time zone"):
        event_settings(time_zone="Mars/Olympus")
