"""tag_audio end to end: real audio files, the official YAMNet graph's weights, real runners, real readers."""

from __future__ import annotations

import glob
import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from schemas.tables import FrameColumns, class_names_from, files_schema, frames_schema, read_model_metadata
from tests.support.audio_factory import make_bad_files, sine, write_audio
from tests.support.pipeline_helpers import (
    ESC10,
    FIXTURE_MODEL,
    SPEECH_COMMANDS,
    read_table,
    require_shared,
    run_tag_audio,
    run_tag_audio_subprocess,
)
from transforms.decoding.stream import AudioStream
from transforms.decoding.windows import num_frames

# Expected outcome of every bad input: (status, error kind).
BAD_OUTCOMES = {
    "missing": ("failed", "not_found"),
    "directory": ("failed", "is_directory"),
    "empty": ("failed", "empty_file"),
    "text_as_wav": ("failed", "not_audio"),
    "random_as_mp3": ("failed", "not_audio"),
    "random_as_wav": ("failed", "not_audio"),
    "video_only": ("failed", "no_audio_stream"),
    "nan_wav": ("failed", "non_finite"),
    "header_only_wav": ("failed", "no_audio_data"),
    "zero_sample_wav": ("ok", ""),
    "truncated_wav": ("partial", "truncated"),
    "truncated_flac": ("partial", "truncated"),
    "truncated_mp3": ("partial", "truncated"),
    "corrupt_flac": ("partial", "decoder_error"),
    "corrupt_mp3": ("partial", "decoder_error"),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Good files in several formats (one long enough to be cut into units) and every kind of bad file."""
    root = tmp_path_factory.mktemp("corpus")
    audio = root / "audio"
    (audio / "nested").mkdir(parents=True)
    rng = np.random.default_rng(7)
    good = {
        "tone.wav": write_audio(audio / "tone.wav", sine(440, 3.0, 16000), 16000),
        "stereo.ogg": write_audio(audio / "nested" / "stereo.ogg", rng.uniform(-0.5, 0.5, (2, 44100 * 7)),
                                  44100),
        "long.flac": write_audio(audio / "long.flac", rng.uniform(-0.3, 0.3, (1, 48000 * 30)), 48000),
        "short.mp3": write_audio(audio / "short.mp3", sine(1000, 0.4, 22050), 22050),
    }
    bad = make_bad_files(audio / "bad")
    (audio / "README.txt").write_text("not audio, and not listed: directory inputs take audio extensions")
    manifest = root / "manifest.txt"
    manifest.write_text(f"# named explicitly\n{bad['missing']}\n{bad['directory']}\n\n")
    return {"root": root, "audio": audio, "good": good, "bad": bad, "manifest": manifest}


@pytest.fixture(scope="module")
def tagged(corpus):
    model = require_shared(FIXTURE_MODEL)
    out = corpus["root"] / "out"
    status = run_tag_audio(["--input", str(corpus["audio"]), "--input_manifest", str(corpus["manifest"]),
                            "--output", str(out), "--model", "yamnet", "--model_path", str(model),
                            "--unit_s", "10", "--batch_size", "16"])
    assert status == 0
    return out


def _rows_by_uri(table):
    return {row["uri"]: row for row in table.to_pylist()}


def test_every_input_file_has_exactly_one_row(corpus, tagged):
    files = read_table(tagged, "files")
    uris = files.column("uri").to_pylist()
    assert len(uris) == len(set(uris))
    expected = {str(p) for p in corpus["good"].values()} | {str(p) for p in corpus["bad"].values()}
    assert set(uris) == expected  # README.txt is not an audio extension: not listed


def test_bad_inputs_get_a_clear_reason_and_never_stop_the_job(corpus, tagged):
    rows = _rows_by_uri(read_table(tagged, "files"))
    for name, (status, kind) in BAD_OUTCOMES.items():
        row = rows[str(corpus["bad"][name])]
        assert row["status"] == status, (name, row["error"])
        assert row["error"].split(":", 1)[0] == kind, (name, row["error"])
        if status != "ok":
            assert len(row["error"]) > len(kind) + 5, "the reason says more than its kind"
    for path in corpus["good"].values():
        assert rows[str(path)]["status"] == "ok", rows[str(path)]["error"]
    # The decodable part of a partial file is tagged.
    assert rows[str(corpus["bad"]["truncated_wav"])]["num_frames"] > 0
    assert rows[str(corpus["bad"]["zero_sample_wav"])]["num_frames"] == 1  # YAMNet frames 0 samples as 1


def test_frames_equal_the_official_graph_on_the_whole_file(corpus, tagged):
    """Cut into 10-s units and batched across files, every frame equals the whole-file graph call."""
    import tensorflow as tf

    reference = tf.saved_model.load(str(FIXTURE_MODEL))
    frames = read_table(tagged, "frames").to_pandas()
    for name in ("long.flac", "stereo.ogg", "tone.wav", "short.mp3"):
        uri = str(corpus["good"][name])
        wave = np.concatenate(list(AudioStream(uri, 16000)))
        scores, embeddings, _ = reference(wave)
        got = frames[frames.uri == uri].sort_values("frame_index")
        assert list(got.frame_index) == list(range(num_frames(len(wave), 15600, 7680)))
        assert len(got) == scores.shape[0]
        np.testing.assert_allclose(got.start_s, np.arange(len(got)) * 0.48)
        np.testing.assert_allclose(got.end_s, np.arange(len(got)) * 0.48 + 0.975)
        assert np.abs(np.stack(got.scores.to_numpy()) - scores.numpy()).max() <= 1e-4, name
        assert np.abs(np.stack(got.embedding.to_numpy()) - embeddings.numpy()).max() <= 1e-3, name


def test_the_long_file_was_cut_into_units(corpus):
    """The 30-s file with --unit_s 10 spans several units (otherwise the test above proves nothing)."""
    from transforms.decoding.stream import probe
    from transforms.decoding.windows import plan_units

    info = probe(str(corpus["good"]["long.flac"]))
    units = plan_units("x", int(info.duration_s * 16000), 15600, 7680, round(10 / 0.48))
    assert len(units) == 3


def test_outputs_read_back_with_pyarrow_pandas_and_duckdb(corpus, tagged):
    frame_files = glob.glob(f"{tagged}/frames/run=*/*.parquet")
    file_files = glob.glob(f"{tagged}/files/run=*/*.parquet")
    assert frame_files and file_files
    schema = pq.read_schema(frame_files[0])
    meta = read_model_metadata(schema)
    assert len(class_names_from(schema)) == 521
    assert class_names_from(schema)[0] == "Speech"
    assert (meta["sample_rate"], meta["window_samples"], meta["hop_samples"]) == ("16000", "15600", "7680")
    assert len(meta["model_fingerprint"]) == 64
    assert schema.remove_metadata().equals(
        frames_schema(_spec_from(meta, class_names_from(schema)), FrameColumns()).remove_metadata())
    assert pq.read_schema(file_files[0]).remove_metadata().equals(
        files_schema(_spec_from(meta, class_names_from(schema))).remove_metadata())
    assert pq.ParquetFile(frame_files[0]).metadata.row_group(0).column(0).compression == "ZSTD"

    pandas_frames = read_table(tagged, "frames").to_pandas()
    assert pandas_frames.scores.map(len).eq(521).all() and pandas_frames.embedding.map(len).eq(1024).all()
    con = duckdb.connect()
    n, distinct = con.execute(
        f"select count(*), count(distinct uri || ':' || frame_index) from "
        f"read_parquet('{tagged}/frames/*/*.parquet', hive_partitioning=true)").fetchone()
    assert n == distinct == len(pandas_frames)
    per_file = dict(con.execute(
        f"select uri, num_frames from read_parquet('{tagged}/files/*/*.parquet', hive_partitioning=true)"
    ).fetchall())
    counted = dict(con.execute(
        f"select uri, count(*) from read_parquet('{tagged}/frames/*/*.parquet') group by uri").fetchall())
    assert {u: n for u, n in per_file.items() if n} == counted


def _spec_from(meta: dict, class_names: list[str]):
    from audio_models.spec import ModelSpec

    return ModelSpec(meta["model"], int(meta["sample_rate"]), int(meta["window_samples"]),
                     int(meta["hop_samples"]), tuple(class_names), int(meta["embedding_dim"]),
                     meta["model_fingerprint"])


def test_files_rows_carry_clip_labels_and_source_facts(corpus, tagged):
    rows = _rows_by_uri(read_table(tagged, "files"))
    stereo = rows[str(corpus["good"]["stereo.ogg"])]
    assert (stereo["codec"], stereo["sample_rate"], stereo["channels"]) == ("vorbis", 44100, 2)
    assert abs(stereo["duration_s"] - 7.0) < 0.05
    assert stereo["size_bytes"] == corpus["good"]["stereo.ogg"].stat().st_size
    assert len(stereo["top_labels_mean"]) == 5 and len(stereo["top_labels_max"]) == 5
    means = [x["score"] for x in stereo["top_labels_mean"]]
    assert means == sorted(means, reverse=True)
    assert all(m["score"] >= a["score"] - 1e-6 for m, a in zip(stereo["top_labels_max"],
                                                                  stereo["top_labels_mean"]))


def test_run_record_is_written_last_with_counts(tagged):
    records = [json.loads(Path(p).read_text()) for p in glob.glob(f"{tagged}/runs/*.json")]
    assert len(records) == 1
    record = records[0]
    assert record["status"] == "succeeded"
    files = read_table(tagged, "files").to_pandas()
    assert record["counts"]["files"] == len(files)
    assert record["counts"]["failed"] == int((files.status == "failed").sum())
    assert record["counts"]["frames"] == int(files.num_frames.sum())
    assert not glob.glob(f"{tagged}/_staging/*/*"), "nothing is left staged after publishing"


def test_multiprocessing_workers_real_audio_and_size_options(tmp_path):
    """Two real worker processes (they unpickle the DoFns as Dataflow workers do) on real recordings."""
    model = require_shared(FIXTURE_MODEL)
    clips = sorted(glob.glob(str(require_shared(ESC10) / "audio" / "*.ogg")))[:3]
    clips += sorted(glob.glob(str(require_shared(SPEECH_COMMANDS) / "yes" / "*.flac")))[:3]
    manifest = tmp_path / "manifest.txt"
    manifest.write_text("\n".join(clips))  # read in place through the manifest
    out = tmp_path / "out"
    result = run_tag_audio_subprocess([
        "--input_manifest", str(manifest), "--output", str(out), "--model_path", str(model),
        "--runner", "FnApiRunner", "--direct_running_mode", "multi_processing", "--direct_num_workers", "2",
        "--top_k", "5", "--embedding_dtype", "float16", "--progress_s", "1"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "files      6 total: 6 ok" in result.stdout
    frames = read_table(out, "frames")
    assert "scores" not in frames.column_names
    assert str(frames.schema.field("embedding").type) == "list<item: halffloat>"
    top = frames.column("top_classes").to_pylist()
    assert all(len(t) == 5 and t[0]["score"] >= t[-1]["score"] for t in top)
    files = read_table(out, "files").to_pandas().set_index("uri")
    for clip in clips:
        row = files.loc[clip]
        expected = 5.0 if clip.endswith(".ogg") else 1.0
        assert abs(row.duration_s - expected) < 0.05
        assert row.num_frames == num_frames(round(row.duration_s * 16000), 15600, 7680)


def test_unreachable_model_is_one_clear_line(tmp_path):
    result = run_tag_audio_subprocess(["--input", str(tmp_path), "--output", str(tmp_path / "out"),
                                       "--model_path", str(tmp_path / "no_model_here")])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    message = [line for line in result.stderr.splitlines() if line.startswith("tag_audio:")]
    assert len(message) == 1 and "--model_path" in message[0]


def test_help_lists_the_job_options():
    result = run_tag_audio_subprocess(["--help"])
    assert result.returncode == 0
    for option in ("--input", "--input_manifest", "--output", "--model", "--model_path", "--batch_size",
                   "--top_k", "--embedding_dtype", "--max_failed_fraction", "--unit_s"):
        assert option in result.stdout


def test_max_failed_fraction_fails_the_run_but_keeps_good_output(corpus, tmp_path):
    model = require_shared(FIXTURE_MODEL)
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(corpus["good"]["tone.wav"], inputs)
    shutil.copy(corpus["bad"]["random_as_wav"], inputs)
    shutil.copy(corpus["bad"]["empty"], inputs)
    out = tmp_path / "out"
    status = run_tag_audio(["--input", str(inputs), "--output", str(out), "--model_path", str(model),
                            "--max_failed_fraction", "0.5"])
    assert status == 1
    record = json.loads(Path(glob.glob(f"{out}/runs/*.json")[0]).read_text())
    assert record["status"] == "failed" and "2 of 3 files failed" in record["reason"]
    assert read_table(out, "frames").num_rows == 6  # the good file is still there


def test_decoding_in_thread_gives_the_same_output_as_decoder_processes(corpus, tagged):
    """The default run above decodes in decoder processes; --decode_processes 0 decodes in-thread.

    Same samples reach the model either way; only which windows share a batch differs, which moves
    model outputs in the last bits at most.
    """
    out = corpus["root"] / "out_in_thread"
    status = run_tag_audio(["--input", str(corpus["audio"]), "--input_manifest", str(corpus["manifest"]),
                            "--output", str(out), "--model", "yamnet", "--model_path", str(FIXTURE_MODEL),
                            "--unit_s", "10", "--batch_size", "16", "--decode_processes", "0"])
    assert status == 0
    for table, key in (("frames", ["uri", "frame_index"]), ("files", ["uri"])):
        order = [(k, "ascending") for k in key]
        pooled = read_table(tagged, table).drop_columns(["run"]).sort_by(order).to_pydict()
        in_thread = read_table(out, table).drop_columns(["run"]).sort_by(order).to_pydict()
        assert len(pooled["uri"]) == len(in_thread["uri"]) > 0
        for column, values in pooled.items():
            if column in ("scores", "embedding"):
                np.testing.assert_allclose(np.array(values), np.array(in_thread[column]), atol=1e-5)
            elif column.startswith("top_labels"):  # a near-tie may swap two labels: compare scores
                for mine, theirs in zip(values, in_thread[column], strict=True):
                    np.testing.assert_allclose([x["score"] for x in mine], [x["score"] for x in theirs],
                                               atol=1e-5)
            else:
                assert values == in_thread[column], f"{table}.{column}"
