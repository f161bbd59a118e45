"""Audio stored in tables as inputs: every row of a Parquet table's audio column (Hugging Face's struct of
bytes and path, or plain binary) tagged in place as ``TABLE#row=N`` or ``TABLE#ID_COLUMN=ID``, with the
frames of the files the table was made from; bad rows get rows with reasons; missing columns fail before
any work. End to end through tag_audio on the bundled keyword model and real recordings."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import storage
from beam_jobs import inspect, plot
from tests.support.pipeline_helpers import (
    ESC10,
    REPO,
    SPEECH_COMMANDS,
    frames_by_uri,
    require_shared,
    rows_by_uri,
    run_tag_audio,
)
from transforms.answers.search_page import _audio_src
from transforms.decoding.span import load_audio_span
from transforms.training.keyword_clips import decode_head

KEYWORD_MODEL = REPO / "examples" / "models" / "keyword"
HF_AUDIO = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # datasets' Audio feature
GARBAGE = b"these bytes are no audio format at all " * 8


def tag(*args: str) -> int:
    return run_tag_audio([*args, "--model_path", str(KEYWORD_MODEL)])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """clips/: two Ogg (ESC-10) and two FLAC (Speech Commands) recordings; hf.parquet: them as Hugging
    Face writes Audio, with a null and an undecodable row among them, three row groups; plain.parquet:
    two of them as plain binary in a column 'sound', named by 'clip_id'."""
    require_shared(ESC10)
    require_shared(SPEECH_COMMANDS)
    if not (KEYWORD_MODEL / "saved_model.pb").exists():
        pytest.skip(f"{KEYWORD_MODEL} is not here")
    root = tmp_path_factory.mktemp("tables")
    clips = root / "clips"
    clips.mkdir()
    sources = [*sorted((ESC10 / "audio").glob("*.ogg"))[:2],
               *sorted((SPEECH_COMMANDS / "go").glob("*.flac"))[:2]]
    files = [Path(shutil.copy2(source, clips / source.name)) for source in sources]
    rows = [files[0], files[2], None, files[1], GARBAGE, files[3]]  # row index -> what the row holds
    audio = [None if r is None else {"bytes": r, "path": "garbage.wav"} if isinstance(r, bytes)
             else {"bytes": r.read_bytes(), "path": r.name} for r in rows]
    pq.write_table(pa.table({"audio": pa.array(audio, HF_AUDIO), "label": list(range(len(rows)))}),
                   root / "hf.parquet", row_group_size=2)
    plain = files[1:3]
    pq.write_table(pa.table({"clip_id": [f.stem for f in plain],
                             "sound": pa.array([f.read_bytes() for f in plain], pa.binary())}),
                   root / "plain.parquet")
    return {"root": root, "clips": clips, "files": files, "rows": rows, "plain": plain,
            "hf": str(root / "hf.parquet"), "plain_table": str(root / "plain.parquet")}


@pytest.fixture(scope="module")
def tagged(corpus) -> Path:
    """One run over the clips' folder and hf.parquet (by row index)."""
    out = corpus["root"] / "out"
    assert tag("--input", str(corpus["clips"]), "--input_table", corpus["hf"], "--output", str(out)) == 0
    return out


def test_a_row_reads_as_the_bytes_it_holds(corpus):
    """storage.open_read on TABLE#row=N and TABLE#COLUMN=ID: the row's bytes, whichever way they are
    stored; listing names each row without reading the audio."""
    hf, plain = corpus["hf"], corpus["plain_table"]
    for index, held in enumerate(corpus["rows"]):
        if isinstance(held, Path):
            assert storage.read_bytes(f"{hf}#row={index}") == held.read_bytes()
    names = [m.name for m in storage.list_members(hf)]
    assert names == [f"row={i}" for i in range(len(corpus["rows"]))]
    names = [m.name for m in storage.list_members(plain, "sound", "clip_id")]
    assert names == [f"sound:clip_id={f.stem}" for f in corpus["plain"]]
    for f in corpus["plain"]:
        assert storage.read_bytes(f"{plain}#sound:clip_id={f.stem}") == f.read_bytes()
    assert storage.read_bytes(f"{plain}#sound:row=1") == corpus["plain"][1].read_bytes()
    with pytest.raises(storage.ArchiveError, match="no_audio: the row's audio is null"):
        storage.open_read(f"{hf}#row=2")
    with pytest.raises(storage.ArchiveError, match="not_found: the table has no row with clip_id=nope"):
        storage.open_read(f"{plain}#sound:clip_id=nope")
    assert storage.is_table_row(f"{hf}#row=0") and not storage.is_table_row(f"{hf}.tar#row=0")


def test_duplicate_and_null_ids_are_named_by_index_with_the_reason(tmp_path):
    table = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"audio": pa.array([b"a", b"b", b"c"]), "key": ["x", None, "x"]}), table)
    members = list(storage.list_members(str(table), id_column="key"))
    assert [(m.name, (m.error or "").split(":")[0]) for m in members] == [
        ("key=x", ""), ("row=1", "no_id"), ("row=2", "duplicate_id")]


def test_table_rows_give_the_frames_of_the_files_they_were_made_from(corpus, tagged):
    rows, frames = rows_by_uri(tagged), frames_by_uri(tagged)
    hf = corpus["hf"]
    assert sorted(uri for uri in rows if uri.startswith(f"{hf}#")) == sorted(
        f"{hf}#row={i}" for i in range(len(corpus["rows"])))
    for index, held in enumerate(corpus["rows"]):
        if not isinstance(held, Path):
            continue
        row, file = f"{hf}#row={index}", str(held)
        assert rows[row]["status"] == "ok", rows[row]
        assert rows[row]["num_frames"] == rows[file]["num_frames"] > 0
        np.testing.assert_allclose(frames[row], frames[file], atol=1e-4)
        assert rows[row]["size_bytes"] == os.path.getsize(hf)  # a row's size is its table's


def test_bad_rows_get_one_row_with_the_reason_and_the_rest_completes(corpus, tagged):
    rows = rows_by_uri(tagged)
    null, garbage = rows[f"{corpus['hf']}#row=2"], rows[f"{corpus['hf']}#row=4"]
    assert (null["status"], null["error"]) == ("failed", "no_audio: the row's audio is null")
    assert garbage["status"] == "failed" and garbage["num_frames"] == 0
    kind, _, reason = garbage["error"].partition(": ")
    assert kind.isidentifier() and reason, garbage["error"]
    assert sum(row["status"] == "ok" for row in rows.values()) == 8  # 4 files, 4 rows


def test_done_set_per_row_and_a_rewritten_table_replans_its_rows(corpus, tagged, capsys):
    hf = corpus["hf"]
    assert tag("--input_table", hf, "--output", str(tagged), "--plan_only") == 0
    assert "6 input files: 0 new, 0 changed, 4 done, 2 failed before" in capsys.readouterr().out
    # A manifest line may name one row, as the table's listing names it: that row is done.
    manifest = corpus["root"] / "rows.txt"
    manifest.write_text(f"{hf}#row=0\n{hf}#row=99\n")
    assert tag("--input_manifest", str(manifest), "--output", str(tagged), "--plan_only") == 0
    assert "2 input files: 1 new, 0 changed, 1 done" in capsys.readouterr().out  # row=99: a not_found row
    before = os.stat(hf)
    try:
        os.utime(hf, (before.st_atime, before.st_mtime + 100))  # a new generation of the same table
        assert tag("--input_table", hf, "--output", str(tagged), "--plan_only") == 0
        assert "6 input files: 0 new, 6 changed" in capsys.readouterr().out
    finally:
        os.utime(hf, (before.st_atime, before.st_mtime))


def test_plot_and_inspect_load_a_row_by_its_uri(corpus, tagged, tmp_path, capsys):
    row = f"{corpus['hf']}#row=1"
    figure = tmp_path / "row.png"
    assert plot.run(["--frames", str(tagged), "--uri", row, "--output", str(figure)]) == 0
    printed = capsys.readouterr().out
    assert figure.stat().st_size > 10_000 and "note:" not in printed  # the audio panels were drawn
    span = load_audio_span(row, 16000, 0.0, 0.5)
    from_file = load_audio_span(str(corpus["rows"][1]), 16000, 0.0, 0.5)
    np.testing.assert_allclose(span.samples, from_file.samples, atol=1e-6)
    # Training sets load clips by URI (keyword_clips): a row's clip is its file's.
    np.testing.assert_allclose(decode_head(row, 8000), decode_head(str(corpus["rows"][1]), 8000), atol=1e-6)
    assert inspect.run([str(tagged)]) == 0
    assert "failed" in capsys.readouterr().out
    # A search page links files to play them in the browser; a row is no file: shown, not linked.
    assert _audio_src(row, 0.0, 1.0) is None
    assert _audio_src(str(corpus["rows"][1]), 0.0, 1.0).startswith("file://")


def test_plain_binary_column_named_by_an_id_column(corpus, tmp_path):
    out = tmp_path / "out"
    table = corpus["plain_table"]
    assert tag("--input_table", str(corpus["root"] / "plain.*"), "--audio_column", "sound",
               "--id_column", "clip_id", "--input", str(corpus["plain"][0]), "--output", str(out)) == 0
    rows, frames = rows_by_uri(out), frames_by_uri(out)
    row = f"{table}#sound:clip_id={corpus['plain'][0].stem}"
    assert sorted(rows) == sorted([row, f"{table}#sound:clip_id={corpus['plain'][1].stem}",
                                   str(corpus["plain"][0])])
    assert all(r["status"] == "ok" for r in rows.values()), rows
    np.testing.assert_allclose(frames[row], frames[str(corpus["plain"][0])], atol=1e-4)


@pytest.mark.parametrize("flags, named", [
    (("--audio_column", "sound"), "no column 'sound' (give --audio_column one of: audio, label)"),
    (("--id_column", "clip"), "no column 'clip' (give --id_column one of: audio, label)"),
    (("--audio_column", "label"), "column 'label' holds int64, not audio bytes"),
])
def test_a_missing_column_fails_before_any_work_naming_the_columns(corpus, tmp_path, capsys, flags, named):
    started = time.monotonic()
    assert tag("--input_table", corpus["hf"], *flags, "--output", str(tmp_path / "out")) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], lines
    assert time.monotonic() - started < 30 and not (tmp_path / "out" / "frames").exists()


def test_a_table_on_gcs_gives_the_frames_of_the_local_table(corpus, tagged, tmp_path, gcs, capsys):
    folder = gcs.bucket("tables") + "/data"
    table = gcs.upload_file(corpus["hf"], f"{folder}/hf.parquet")
    (tmp_path / "README.md").write_text("a dataset's card: not a table")
    gcs.upload_file(tmp_path / "README.md", f"{folder}/README.md")
    assert tag("--input_table", f"{folder}/*", "--id_column", "nope", "--output", str(tmp_path / "x")) == 2
    assert f"{table} has no column 'nope'" in capsys.readouterr().err  # the footer read on gs://
    # Decoded on the bundle's thread: this process's decoder pool predates the emulator's environment.
    out = tmp_path / "out"
    assert tag("--input_table", f"{folder}/*", "--output", str(out), "--decode_processes", "0") == 0
    remote_rows, remote_frames = rows_by_uri(out), frames_by_uri(out)
    assert len(remote_rows) == len(corpus["rows"])  # the README is no table
    local_rows, local_frames = rows_by_uri(tagged), frames_by_uri(tagged)
    for index in range(len(corpus["rows"])):
        remote, local = remote_rows[f"{table}#row={index}"], local_rows[f"{corpus['hf']}#row={index}"]
        assert (remote["status"], remote["num_frames"]) == (local["status"], local["num_frames"]), remote
        if remote["status"] == "ok":
            np.testing.assert_allclose(remote_frames[f"{table}#row={index}"],
                                       local_frames[f"{corpus['hf']}#row={index}"], atol=1e-4)


def test_rows_of_one_row_group_are_spread_together(corpus):
    """Units of rows read from one row group share a spread key (one worker decodes them in turn and
    reads the group once); files keep keys of their own."""
    from transforms.decoding.windows import plan_units
    from transforms.tagging.listing import ExpandArchive, FileEntry
    from transforms.tagging.units import spread_key

    table = FileEntry(corpus["hf"], os.path.getsize(corpus["hf"]), os.path.getmtime(corpus["hf"]))
    entries = list(ExpandArchive().process(table))
    assert [e.uri for e in entries] == [f"{corpus['hf']}#row={i}" for i in range(6)]
    keys = [spread_key(plan_units(e.uri, None, 1, 1, 0, e.read_with)[0]) for e in entries]
    assert keys[0] == keys[1] != keys[2] == keys[3] != keys[4] == keys[5]  # row groups of two
    file_unit = plan_units("a.wav", None, 1, 1, 0)[0]
    assert len({spread_key(file_unit) for _ in range(4)}) > 1  # random: a long file's units spread apart
