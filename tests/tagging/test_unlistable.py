"""Files FFmpeg cannot open are failed files, not inputs that could not be listed.

A run whose every input could not be listed ends failed with "no input could be listed". Files that were
listed but that FFmpeg cannot open (kind 'unreadable') follow the rule for failed files
(--max_failed_fraction) instead: the two kinds are different words.
"""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from schemas.tables import error_kind  # noqa: E402
from tests.support.pipeline_helpers import read_table, run_tag_audio  # noqa: E402
from transforms.decoding.messages import ERROR, DecodeRequest, decode_messages  # noqa: E402
from transforms.output.layout import FAILED, SUCCEEDED, RunRecord  # noqa: E402
from transforms.output.publish import UNLISTABLE, final_record  # noqa: E402
from transforms.tagging.listing import ExpandInput  # noqa: E402

# An Ogg page marker followed by bytes that make no Ogg page: FFmpeg picks the Ogg demuxer, then fails to
# open the stream with "End of file" (not "invalid data"), which the decoder reports as 'unreadable'.
GARBAGE = {"a.wav": b"OggS", "b.wav": b"OggS" + bytes(200),
           "c.wav": b"OggS\x00\x02" + bytes(20) + b"junk" * 10}


def _decoder_error(path) -> str | None:
    errors = [m[1] for m in decode_messages(DecodeRequest(str(path), 16000)) if m[0] == ERROR]
    return errors[0] if errors else None


def test_a_run_whose_every_file_ffmpeg_cannot_open_ends_by_the_failed_files_rule(tmp_path, small_corpus):
    audio = tmp_path / "audio"
    audio.mkdir()
    for name, garbage in GARBAGE.items():
        (audio / name).write_bytes(garbage)
        probed = _decoder_error(audio / name)
        if probed is None or not probed.startswith("unreadable: FFmpeg cannot open the file"):
            pytest.skip(f"this FFmpeg build does not fail to open {garbage[:12]!r}... ({probed!r})")
    out = tmp_path / "out"
    status = run_tag_audio(["--input", str(audio), "--output", str(out), "--model", "savedmodel",
                            "--model_path", str(small_corpus.model),
                            "--decode_processes", "0", "--max_failed_fraction", "0.5"])

    files = read_table(out, "files", ["uri", "status", "error"]).to_pylist()
    assert sorted(os.path.basename(f["uri"]) for f in files) == ["a.wav", "b.wav", "c.wav"]
    assert {(f["status"], error_kind(f["error"])) for f in files} == {("failed", "unreadable")}
    (record,) = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    assert record["status"] == FAILED and status == 1
    assert record["reason"] == "3 of 3 files failed, more than --max_failed_fraction=0.5"
    assert "listed" not in record["reason"]


def _summary(kinds: dict[str, int]) -> dict:
    total = sum(kinds.values())
    return {"files": total, "failed": total, "failures_by_kind": kinds}


def test_only_inputs_that_could_not_be_listed_make_a_run_say_no_input_could_be_listed():
    record = RunRecord("r1", started_at=1.0)
    unlisted = final_record(record, _summary({UNLISTABLE: 2}), {}, {}, max_failed_fraction=1.0, now=2.0)
    assert unlisted.status == FAILED
    assert unlisted.reason == f"no input could be listed (2 of 2 inputs: {UNLISTABLE})"
    # Under the default --max_failed_fraction (1.0) files that all failed still make a succeeded run.
    unopened = final_record(record, _summary({"unreadable": 2}), {}, {}, max_failed_fraction=1.0, now=2.0)
    assert unopened.status == SUCCEEDED and unopened.reason is None


def test_an_input_the_filesystem_cannot_stat_is_unlistable(tmp_path):
    too_long = tmp_path / ("x" * 300 + ".wav")  # longer than any filesystem's name limit: ENAMETOOLONG
    entry = ExpandInput._literal(str(too_long))
    assert error_kind(entry.error) == UNLISTABLE == "unlistable"
    assert "too long" in entry.error
