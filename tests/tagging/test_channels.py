"""tag_audio --channels: every channel of a file on its own, decoded once.

A 4-channel file is built from four real ESC-10 recordings (their decoded samples, written as float
WAV at their own rate, so channel i holds recording i exactly); tagged with ``--channels each`` its
frames per channel must equal those of recording i tagged alone.  Real YAMNet graph (random weights,
../shared/fixtures), FnApiRunner, Parquet read back with pyarrow, pandas and DuckDB.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from tests.output.sql_docs import bigquery_current_view, duckdb_current_view
from tests.support.audio_factory import sine, write_audio
from tests.support.pipeline_helpers import ESC10, FIXTURE_MODEL, read_table, require_shared, run_tag_audio
from transforms.decoding.stream import decode_all, parse_channels
from transforms.output import current

SOURCE_RATE = 44100  # ESC-10's rate: the 4-channel file is resampled exactly as the recordings are
TOLERANCE = 1e-4


def _tag(inputs: list[str], out, *extra: str) -> int:
    args = [a for path in inputs for a in ("--input", str(path))]
    return run_tag_audio([*args, "--output", str(out), "--model", "yamnet",
                          "--model_path", str(require_shared(FIXTURE_MODEL)), "--decode_processes", "1",
                          "--batch_size", "16", *extra])


@pytest.fixture(scope="module")
def four_channels(tmp_path_factory):
    recordings = sorted(str(p) for p in (require_shared(ESC10) / "audio").glob("*.ogg"))[:8:2]
    signals = [decode_all(uri, SOURCE_RATE) for uri in recordings]
    length = min(len(s) for s in signals)
    assert all(len(s) == length for s in signals), "ESC-10 clips are all 5 s"
    root = tmp_path_factory.mktemp("channels")
    audio = root / "audio"
    audio.mkdir()
    write_audio(audio / "array.wav", np.stack(signals), SOURCE_RATE, codec="pcm_f32le")
    alone, split = root / "alone", root / "split"
    thresholds = root / "thresholds.csv"  # low enough that the random-weight model finds events
    thresholds.write_text("class,on,off\nSpeech,0.0,0.0\n")
    assert _tag(recordings, alone) == 0
    assert _tag([audio / "array.wav"], split, "--channels", "each", "--events",
                "--event_thresholds", str(thresholds)) == 0
    return {"recordings": recordings, "file": str(audio / "array.wav"), "alone": alone, "split": split}


def test_each_channel_gives_the_frames_of_its_recording_tagged_alone(four_channels):
    alone = read_table(four_channels["alone"], "frames", ["uri", "channel", "frame_index", "scores",
                                                           "embedding"]).to_pandas()
    split = read_table(four_channels["split"], "frames", ["uri", "channel", "frame_index", "scores",
                                                           "embedding"]).to_pandas()
    assert alone["channel"].isna().all()  # mix (the default): null
    assert sorted(split["channel"].unique()) == [0, 1, 2, 3]
    for channel, uri in enumerate(four_channels["recordings"]):
        expected = alone[alone.uri == uri].sort_values("frame_index")
        got = split[split.channel == channel].sort_values("frame_index")
        assert len(got) == len(expected) > 5
        assert (got.frame_index.to_numpy() == expected.frame_index.to_numpy()).all()
        for column in ("scores", "embedding"):
            np.testing.assert_allclose(np.stack(got[column]), np.stack(expected[column]), atol=TOLERANCE)
    # four different recordings: the channels are not one signal repeated
    first, second = (np.stack(split[split.channel == c].sort_values("frame_index").embedding) for c in (0, 1))
    assert np.abs(first - second).max() > 10 * TOLERANCE


def test_files_rows_one_per_channel_and_readers_see_them(four_channels):
    files = read_table(four_channels["split"], "files").to_pandas()
    assert sorted(files.channel) == [0, 1, 2, 3]
    assert set(files.status) == {"ok"} and set(files.channels) == {4}
    assert (files.num_frames > 5).all()
    sql = (f"select channel, count(*) as n from read_parquet('{four_channels['split']}/frames/*/*.parquet', "
           "hive_partitioning=true) group by channel order by channel")
    counts = duckdb.sql(sql).fetchall()
    assert [c for c, _ in counts] == [0, 1, 2, 3] and len({n for _, n in counts}) == 1
    # the current view: channels of one file do not supersede each other
    view = current.current_files(str(four_channels["split"]), ["uri", "channel", "status"])
    assert sorted(view["channel"].to_pylist()) == [0, 1, 2, 3]
    frames = current.current_frames(str(four_channels["split"]), ["uri", "channel", "frame_index"])
    assert frames.num_rows == int(files.num_frames.sum())
    # the documented SQL views keep a row per channel and join each channel's frames once
    for connect in (duckdb_current_view, bigquery_current_view):
        connection = connect(four_channels["split"])
        schema = "dataset." if connect is bigquery_current_view else ""
        (rows,) = connection.execute(f"select count(*) from {schema}frames_current").fetchone()
        (channels,) = connection.execute(f"select count(*) from {schema}files_current").fetchone()
        assert (rows, channels) == (int(files.num_frames.sum()), 4)


def test_events_are_found_per_channel(four_channels):
    events = read_table(four_channels["split"], "events", ["uri", "channel", "label"]).to_pandas()
    assert set(events.uri) == {four_channels["file"]}
    assert set(events.channel) == {0, 1, 2, 3}


def test_search_finds_a_recording_in_its_channel(four_channels, tmp_path):
    import pyarrow.parquet as pq

    from beam_jobs import search as search_job

    result = tmp_path / "search"
    query = four_channels["recordings"][2]  # not in these frames: embedded with the frames' model
    assert search_job.run(["--frames", str(four_channels["split"]), "--query", query, "--top_k", "8",
                           "--output", str(result), "--model_path", str(FIXTURE_MODEL)]) == 0
    hits = pq.read_table(result / "hits.parquet").to_pandas()
    assert len(hits) == 8 and (hits.channel == 2).all()
    assert hits.score.iloc[0] > 0.999  # the recording's own frames, one channel of the array
    assert not hits.duplicated(["channel", "frame_index"]).any()


def test_a_rerun_skips_the_channels_done_and_mix_is_a_result_of_its_own(four_channels, tmp_path):
    out = four_channels["split"]
    assert _tag([four_channels["file"]], out, "--channels", "each") == 0
    files = read_table(out, "files", ["channel", "run"]).to_pandas()
    assert len(files) == 4 and files.run.nunique() == 1  # nothing tagged again
    assert _tag([four_channels["file"]], out, "--channels", "mix") == 0
    view = current.current_files(str(out), ["uri", "channel"])
    assert sorted(view["channel"].to_pylist(), key=lambda c: -1 if c is None else c) == [None, 0, 1, 2, 3]


def test_a_channel_the_file_lacks_fails_that_file_only(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    write_audio(audio / "stereo.wav", np.stack([sine(440.0, 2.0), sine(660.0, 2.0)]), 16000)
    write_audio(audio / "six.wav", np.stack([sine(200.0 * (i + 1), 2.0) for i in range(6)]), 16000)
    out = tmp_path / "out"
    assert _tag([audio], out, "--channels", "5") == 0
    files = read_table(out, "files", ["uri", "channel", "status", "error", "num_frames"]).to_pandas()
    rows = {uri.rsplit("/", 1)[1]: row for uri, row in zip(files.uri, files.itertuples())}
    assert len(files) == 2
    assert rows["stereo.wav"].status == "failed" and rows["stereo.wav"].num_frames == 0
    assert rows["stereo.wav"].error == "no_such_channel: the file has 2 channels (0-1); --channels asks for 5"
    assert rows["six.wav"].status == "ok" and rows["six.wav"].channel == 5
    frames = read_table(out, "frames", ["uri", "channel"]).to_pandas()
    assert set(frames.channel) == {5} and frames.uri.str.endswith("six.wav").all()


def test_a_bad_channels_option_fails_in_seconds(tmp_path, capsys):
    assert _tag([tmp_path], tmp_path / "out", "--channels", "left") == 2
    assert "--channels: 'left' is not mix, each or channel numbers" in capsys.readouterr().err
    assert parse_channels("0,2") == (0, 2) and parse_channels("EACH") == "each"
    with pytest.raises(ValueError, match="at most once"):
        parse_channels("1,1")


def test_the_channels_of_a_unit_inside_the_file_match_the_whole_decode(four_channels):
    whole = decode_all(four_channels["file"], 16000, channels="each")
    piece = decode_all(four_channels["file"], 16000, start_sample=30_000, channels=(3, 1))
    assert piece.shape == (whole.shape[0] - 30_000, 2)
    np.testing.assert_allclose(piece, whole[30_000:, [3, 1]], atol=1e-6)


def test_plot_draws_one_channel(four_channels, tmp_path):
    from transforms.output.timeline_plot import plot_timeline

    files = read_table(four_channels["split"], "files", ["channel", "num_frames"]).to_pandas()
    expected = int(files[files.channel == 2].num_frames.iloc[0])
    result = plot_timeline(str(four_channels["split"]), four_channels["file"], str(tmp_path / "c2.png"),
                           channel=2, width_px=400, height_px=300)
    assert result.frames_shown == expected and result.audio_note is None
    assert (tmp_path / "c2.png").stat().st_size > 1000
    with pytest.raises(LookupError, match="channel 7"):
        plot_timeline(str(four_channels["split"]), four_channels["file"], str(tmp_path / "c7.png"), channel=7)


def test_the_done_set_counts_the_rows_of_the_same_channel_choice():
    from transforms.tagging.done_set import CHANGED, DONE, FAILED_BEFORE, NEW, PriorResult, classify_channels
    from transforms.tagging.listing import FileEntry

    entry = FileEntry("a.wav", size_bytes=10, last_modified=1.0)

    def prior(channel, status="ok", run="r1", size=10):
        commit = int(run[1:])  # r1, r2: committed in that order
        return PriorResult(run, commit, status, size, 1.0, "" if status == "ok" else "not_audio: x", channel)

    mixed_ok, ch0, ch1 = prior(None), prior(0), prior(1)
    assert classify_channels(entry, [mixed_ok], "mix") == DONE
    assert classify_channels(entry, [mixed_ok], "each") == NEW  # never split before
    assert classify_channels(entry, [ch0, ch1], "each") == DONE
    assert classify_channels(entry, [ch0, ch1], "mix") == NEW
    assert classify_channels(entry, [ch0], (0, 1)) == NEW  # channel 1 never done
    assert classify_channels(entry, [ch0, prior(1, "partial")], (0, 1)) == FAILED_BEFORE
    assert classify_channels(entry, [ch0, prior(1, run="r2", size=11)], "each") == CHANGED
    assert classify_channels(entry, [prior(None, "failed")], "each") == FAILED_BEFORE  # bad audio stays bad
