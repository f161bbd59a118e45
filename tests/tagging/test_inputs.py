"""What --input names, however the operator spells it: one URI per file, literal paths before patterns,
patterns in every component, symlinks. End to end through tag_audio's command line (in this process,
from the directory a user would run it in) on the bundled keyword model and example recordings."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.pipeline_helpers import REPO, read_table, run_tag_audio_here

KEYWORD_MODEL = REPO / "examples" / "models" / "keyword"
EXAMPLES = REPO / "examples" / "audio"
RECORDINGS = ("door_answers.opus", "kitchen_lights.mp3", "lift.wav", "robot_commands.flac")


def tag(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """tag_audio from ``cwd`` (relative inputs are relative to it) with the keyword model."""
    return run_tag_audio_here([*args, "--model_path", str(KEYWORD_MODEL)], cwd=cwd)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def plan_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("plan:"))


def files_rows(out: Path) -> dict[str, dict]:
    rows = read_table(out, "files", ["uri", "status", "error"]).to_pylist()
    uris = [row["uri"] for row in rows]
    assert len(uris) == len(set(uris)), f"a file has two rows: {sorted(uris)}"
    return {row["uri"]: row for row in rows}


def copy_examples(folder: Path, names=RECORDINGS) -> Path:
    folder.mkdir(parents=True)
    for name in names:
        shutil.copy2(EXAMPLES / name, folder / name)
    return folder


@pytest.fixture(autouse=True)
def _keyword_model():
    if not (KEYWORD_MODEL / "saved_model.pb").exists():
        pytest.skip(f"{KEYWORD_MODEL} is not here")


def test_one_file_has_one_uri_however_it_is_spelled(tmp_path):
    in5 = copy_examples(tmp_path / "in5")
    out = tmp_path / "out"
    # A folder and one of its files again by another spelling, in one run: one row per file.
    ok(tag(tmp_path, "--input", "in5", "--input", "in5/./lift.wav", "--output", "out"))
    rows = files_rows(out)
    assert sorted(rows) == sorted(str(in5 / name) for name in RECORDINGS)
    assert all(row["status"] == "ok" for row in rows.values())

    # Other spellings of the same folder find every file done: nothing is tagged again.
    stdout = ok(tag(tmp_path, "--input", f"{tmp_path}//in5/", "--output", "out"))
    assert "4 input files: 0 new, 0 changed, 4 done" in plan_line(stdout)
    for spelling in (f"file://{in5}", "./in5/", f"{tmp_path}/./in5/../in5"):
        stdout = ok(tag(tmp_path, "--input", spelling, "--output", "out", "--plan_only"))
        assert "4 input files: 0 new, 0 changed, 4 done" in plan_line(stdout), spelling
    assert len(files_rows(out)) == 4


def test_rows_written_before_uris_were_canonical_still_count_as_done(tmp_path):
    in5 = copy_examples(tmp_path / "in5")
    out = tmp_path / "out"
    ok(tag(tmp_path, "--input", str(in5), "--output", "out"))
    # Rewrite the published rows as an earlier version wrote them: URIs as the user typed them.
    spellings = {str(in5 / name): spelled for name, spelled in zip(
        RECORDINGS, ("in5/door_answers.opus", "./in5//kitchen_lights.mp3", f"{tmp_path}//in5/lift.wav",
                     f"in5/../in5/{RECORDINGS[3]}"), strict=True)}
    (part,) = (out / "files").rglob("*.parquet")
    table = pq.read_table(part)
    uris = [spellings[uri] for uri in table.column("uri").to_pylist()]
    column = table.schema.get_field_index("uri")
    pq.write_table(table.set_column(column, table.schema.field(column), pa.array(uris, pa.string())), part)
    assert set(files_rows(out)) == set(spellings.values())

    stdout = ok(tag(tmp_path, "--input", str(in5), "--output", "out"))
    assert "4 input files: 0 new, 0 changed, 4 done" in plan_line(stdout)
    assert len(files_rows(out)) == 4  # nothing re-tagged


def test_existing_paths_with_glob_characters_are_taken_literally(tmp_path):
    field = copy_examples(tmp_path / "Field Recordings [2024]", ("lift.wav", "door_answers.opus"))
    shutil.copy2(EXAMPLES / "kitchen_lights.mp3", tmp_path / "br[1].mp3")
    shutil.copy2(EXAMPLES / "robot_commands.flac", tmp_path / "br1.mp3")  # what '[1]' as a pattern matches
    stdout = ok(tag(tmp_path, "--input", "Field Recordings [2024]", "--input", "br[1].mp3",
                    "--output", "out"))
    assert "3 input files: 3 new" in plan_line(stdout)
    rows = files_rows(tmp_path / "out")
    assert sorted(rows) == sorted([str(field / "lift.wav"), str(field / "door_answers.opus"),
                                   str(tmp_path / "br[1].mp3")])
    assert all(row["status"] == "ok" for row in rows.values()), rows


def test_patterns_work_in_every_component_and_one_matching_nothing_is_refused(tmp_path):
    inputs = tmp_path / "in"
    for folder, name in (("d0", "lift.wav"), ("d1", "door_answers.opus"), ("d5", "lift.wav"),
                         ("d001", "kitchen_lights.mp3"), ("d002", "robot_commands.flac"), ("d003", "x.txt")):
        (inputs / folder).mkdir(parents=True)
        if name == "x.txt":
            (inputs / folder / name).write_text("not audio")
        else:
            shutil.copy2(EXAMPLES / name, inputs / folder / name)
    stdout = ok(tag(tmp_path, "--input", "in/d00?/*.*", "--input", "in/d[0-3]/*", "--output", "out"))
    assert "5 input files: 5 new" in plan_line(stdout)
    rows = files_rows(tmp_path / "out")
    expected = ["d0/lift.wav", "d1/door_answers.opus", "d001/kitchen_lights.mp3", "d002/robot_commands.flac",
                "d003/x.txt"]  # a pattern takes what it names, audio extension or not
    assert sorted(rows) == sorted(str(inputs / path) for path in expected)
    assert rows[str(inputs / "d003/x.txt")]["error"].startswith("not_audio")

    refused = tag(tmp_path, "--input", "in/d9?/*.wav", "--output", "out2")
    assert refused.returncode == 2
    messages = [line for line in refused.stderr.splitlines() if line.startswith("tag_audio:")]
    assert len(messages) == 1 and "in/d9?/*.wav matches no file" in messages[0], refused.stderr[-2000:]
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "out2" / "files").exists()


def test_symlinks_dangling_ones_get_a_row_and_folders_are_followed_only_when_asked(tmp_path):
    inputs = copy_examples(tmp_path / "in", ("lift.wav",))
    elsewhere = copy_examples(tmp_path / "elsewhere", ("kitchen_lights.mp3", "door_answers.opus"))
    (inputs / "gone.wav").symlink_to(tmp_path / "deleted.wav")
    (inputs / "linked").symlink_to(elsewhere)
    (inputs / "loop").symlink_to(".")  # a link to its own folder: following it must end

    stdout = ok(tag(tmp_path, "--input", "in", "--output", "out"))
    line = plan_line(stdout)
    assert "2 input files: 2 new" in line and "2 symlinked folders not followed" in line, line
    rows = files_rows(tmp_path / "out")
    assert sorted(rows) == [str(inputs / "gone.wav"), str(inputs / "lift.wav")]
    assert rows[str(inputs / "gone.wav")]["status"] == "failed"
    assert rows[str(inputs / "gone.wav")]["error"].startswith("not_found: dangling symlink")

    stdout = ok(tag(tmp_path, "--input", "in", "--follow_symlinks", "--output", "out_followed"))
    line = plan_line(stdout)
    assert "4 input files: 4 new" in line and "not followed" not in line, line
    rows = files_rows(tmp_path / "out_followed")
    assert sorted(rows) == sorted([str(inputs / "gone.wav"), str(inputs / "lift.wav"),
                                   str(inputs / "linked" / "kitchen_lights.mp3"),
                                   str(inputs / "linked" / "door_answers.opus")])
    assert [row["status"] for uri, row in rows.items() if "linked" in uri] == ["ok", "ok"]
