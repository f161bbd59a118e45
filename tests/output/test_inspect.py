"""inspect and the output reader: numbers equal direct DuckDB counts over the Parquet, on every layout."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import duckdb
import pytest

import storage
from beam_jobs import inspect
from schemas.tables import STATUS_FAILED, STATUS_OK
from tests.support.output_factory import (
    FakeFile,
    scores_with_peaks,
    three_files,
    write_run,
)
from transforms.output import inspection
from transforms.output import reader as output_reader

RUN_A = "20250101T000000Z-aaaaaa"
RUN_B = "20250102T000000Z-bbbbbb"
RUN_C = "20250103T000000Z-cccccc"  # still running: its record exists, its data is in _staging


def second_run_files() -> list[FakeFile]:
    return [
        FakeFile("/data/in2/a.wav", STATUS_OK, scores=scores_with_peaks(30, {2: 0.8}, seed=2)),
        FakeFile("/data/in2/b.wav", STATUS_OK, scores=scores_with_peaks(11, {0: 0.95}, seed=3)),
        FakeFile("/data/in/partial.mp3", STATUS_OK, scores=scores_with_peaks(9, {1: 0.6}, seed=4)),
        FakeFile("/data/in2/c.bin", STATUS_FAILED, error="not_audio: not an audio or video file"),
        FakeFile("/data/in2/d.wav", STATUS_FAILED, error="decoder_error: no decodable packet"),
        FakeFile("/data/in2/gone.wav", STATUS_FAILED, error="not_found: the file does not exist"),
    ]


@pytest.fixture()
def two_runs(tmp_path: Path) -> Path:
    """Two published runs, a run still writing into _staging, and an unrelated file."""
    out = tmp_path / "out"
    written = write_run(out, three_files(), RUN_A)
    write_run(out, second_run_files(), RUN_B, frames_parts=3)
    staging = out / "_staging" / f"run={RUN_C}" / "frames"
    staging.mkdir(parents=True)
    shutil.copy(written["frames"][0], staging / "part-00000-of-00001.parquet")
    (out / "runs" / f"{RUN_C}.json").write_text(json.dumps(
        {"run_id": RUN_C, "status": "running", "started_at": 1.8e9, "model": {"identity": "yamnet@0123"}}))
    (out / "README.txt").write_text("notes")
    return out


def duck(sql: str) -> list[tuple]:
    return duckdb.sql(sql).fetchall()


def direct_counts(out: Path, run_id: str) -> dict:
    files = f"'{out}/files/run={run_id}/*.parquet'"
    frames = f"'{out}/frames/run={run_id}/*.parquet'"
    return {
        "files": duck(f"select count(*) from read_parquet({files})")[0][0],
        "by_status": dict(duck(f"select status, count(*) from read_parquet({files}) group by status")),
        "audio_seconds": duck(f"select sum(duration_s) from read_parquet({files})")[0][0],
        "frames": duck(f"select count(*) from read_parquet({frames})")[0][0],
        "problems": {(s, k): n for s, k, n in duck(
            f"select status, trim(split_part(error, ':', 1)), count(*) from read_parquet({files}) "
            "where status <> 'ok' group by all")},
        "top_labels": dict(duck(
            f"select top_labels_mean[1].label, count(*) from read_parquet({files}) "
            "where len(top_labels_mean) > 0 group by all")),
    }


def test_inspect_numbers_equal_direct_counts(two_runs: Path):
    summary = inspection.to_json(inspection.summarize_output(str(two_runs)))

    assert [r["run_id"] for r in summary["runs"]] == [RUN_A, RUN_B, RUN_C]
    running = summary["runs"][2]
    assert running["status"] == "running" and running["models"] == ["yamnet@0123"]
    assert running["files"]["total"] == running["frames"] == running["bytes"]["total"] == 0
    for run in summary["runs"][:2]:
        direct = direct_counts(two_runs, run["run_id"])
        assert run["files"]["total"] == direct["files"]
        assert {s: run["files"][s] for s in direct["by_status"]} == direct["by_status"]
        assert run["audio_seconds"] == pytest.approx(direct["audio_seconds"])
        assert run["audio_hours"] == pytest.approx(direct["audio_seconds"] / 3600)
        assert run["frames"] == direct["frames"]
        assert {(p["status"], p["kind"]): p["count"] for p in run["problems"]} == direct["problems"]
        assert {t["label"]: t["files"] for t in run["top_labels"]} == direct["top_labels"]
        assert run["status"] == "succeeded"
        assert run["models"] == ["head@c0ffeec0ffee"]

    totals = summary["totals"]
    all_files = f"read_parquet('{two_runs}/files/run=*/*.parquet')"
    all_frames = f"read_parquet('{two_runs}/frames/run=*/*.parquet')"
    assert totals["files"]["total"] == duck(f"select count(*) from {all_files}")[0][0]
    assert totals["frames"] == duck(f"select count(*) from {all_frames}")[0][0]
    assert summary["distinct_files"] == duck(f"select count(distinct uri) from {all_files}")[0][0]
    assert totals["files"] == {"total": 9, "ok": 4, "partial": 1, "failed": 4}
    assert {(p["status"], p["kind"]): p["count"] for p in totals["problems"]} == {
        ("failed", "not_audio"): 2, ("failed", "decoder_error"): 1, ("failed", "not_found"): 1,
        ("partial", "decoder_error"): 1}
    # Disk size: every file under OUT_DIR, staging and stray files included.
    on_disk = sum(p.stat().st_size for p in two_runs.rglob("*") if p.is_file())
    assert summary["bytes_on_disk"] == on_disk
    staged = sum(p.stat().st_size for p in (two_runs / "_staging").rglob("*") if p.is_file())
    assert summary["bytes_in_progress"] == staged > 0
    parquet = sum(p.stat().st_size for p in two_runs.glob("f*/run=*/*.parquet"))
    assert totals["bytes"]["total"] == parquet


def test_text_report_is_one_screen_with_the_numbers(two_runs: Path, capsys):
    assert inspect.run([str(two_runs)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert len(lines) <= 40 and max(len(line) for line in lines) <= 120
    for expected in (RUN_A, RUN_B, RUN_C, "running", "succeeded", "head@c0ffeec0ffee", "all runs",
                     "not_audio", "decoder_error", "not_found", "8 distinct files", "Siren 2"):
        assert expected in text, expected
    run_b_row = next(line for line in lines if line.strip().startswith(RUN_B)).split()
    # files ok partial failed audio_h frames
    assert run_b_row[3:7] == ["6", "3", "0", "3"]
    assert run_b_row[8] == "50"


def test_json_cli_and_run_filter(two_runs: Path, capsys):
    assert inspect.run([str(two_runs), "--format", "json", "--run", RUN_A]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in summary["runs"]] == [RUN_A]
    assert summary["totals"]["files"] == {"total": 3, "ok": 1, "partial": 1, "failed": 1}
    assert summary["totals"]["frames"] == 27


def test_missing_or_empty_output_is_a_usage_error(tmp_path: Path, capsys):
    assert inspect.run([str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert inspect.run([str(tmp_path / "empty")]) == 2
    assert "no tag_audio output" in capsys.readouterr().err
    write_run(tmp_path / "one", three_files(), RUN_A)
    assert inspect.run([str(tmp_path / "one"), "--run", "no-such-run"]) == 2


def test_an_out_dir_whose_own_path_holds_run_is_read_by_the_path_below_it(tmp_path: Path):
    out = tmp_path / "backfills" / "run=nightly" / "out"
    write_run(out, three_files(), RUN_A, status="failed")
    found = output_reader.find_output(str(out))
    assert [r.run_id for r in found.runs] == [RUN_A]
    run = found.runs[0]
    assert (len(run.frames), len(run.files)) == (2, 1)
    assert run.status == "failed" and run.published
    summary = inspection.summarize_output(found)
    assert summary.totals.files == 3 and summary.totals.frames == 27
    assert summary.totals.by_status == {"ok": 1, "partial": 1, "failed": 1}


def test_a_table_or_run_directory_can_be_given_as_out_dir(two_runs: Path):
    found = output_reader.find_output(str(two_runs / "frames" / f"run={RUN_B}"))
    assert [r.run_id for r in found.runs] == [RUN_B]
    assert output_reader.count_rows(found.runs[0].frames) == 50 and not found.runs[0].files


def test_reader_projects_columns_and_filters_uri(two_runs: Path):
    run = output_reader.find_output(str(two_runs)).run(RUN_B)
    table = output_reader.read_frames(run, ["frame_index", "start_s"], uri="/data/in2/a.wav")
    assert table.column_names == ["frame_index", "start_s"]
    assert sorted(table["frame_index"].to_pylist()) == list(range(30))
    both = output_reader.read_frames(run, ["uri"], uri=["/data/in2/a.wav", "/data/in2/b.wav"])
    assert both.num_rows == 41
    assert output_reader.read_frames(run, ["uri"], uri="/nope.wav").num_rows == 0
    info = output_reader.model_info(run)
    assert info.class_names[2] == "Siren" and info.sample_rate == 16000 and info.hop_s == pytest.approx(0.48)


class CountingFile(io.FileIO):
    """A real file that tallies the bytes read from it."""

    tally: dict[str, int] = {}

    def read(self, size=-1):
        data = super().read(size)
        CountingFile.tally[self.name] = CountingFile.tally.get(self.name, 0) + len(data)
        return data

    def readinto(self, buffer):
        n = super().readinto(buffer)
        CountingFile.tally[self.name] = CountingFile.tally.get(self.name, 0) + (n or 0)
        return n


def test_frames_are_counted_from_footers_without_reading_column_data(tmp_path: Path, monkeypatch):
    out = tmp_path / "out"
    big = [FakeFile(f"/data/long{i}.wav", STATUS_OK, scores=scores_with_peaks(3000, {3: 0.5}, seed=i))
           for i in range(2)]
    written = write_run(out, big, RUN_A, frames_parts=2, row_group_size=1000)
    CountingFile.tally = {}
    monkeypatch.setattr(storage, "open_read", lambda path: CountingFile(path, "rb"))

    summary = inspection.summarize_output(str(out))

    assert summary.totals.frames == 6000
    # pyarrow reads a footer with one 64 KiB read from the end; the column data is never touched.
    for part in written["frames"]:
        assert part.stat().st_size > 300_000
        assert 0 < CountingFile.tally[str(part)] <= 64 * 1024


def test_inspect_reads_gcs_output(two_runs: Path, gcs):
    bucket = gcs.bucket("inspect-test")
    gcs.upload_dir(two_runs, f"{bucket}/out")

    remote = inspection.to_json(inspection.summarize_output(f"{bucket}/out/"))
    local = inspection.to_json(inspection.summarize_output(str(two_runs)))

    assert remote["out_dir"] == f"{bucket}/out"
    for key in ("runs", "totals", "bytes_on_disk", "bytes_in_progress", "distinct_files"):
        assert remote[key] == local[key], key
    run = output_reader.find_output(f"{bucket}/out").run(RUN_B)
    assert output_reader.read_frames(run, ["frame_index"], uri="/data/in2/b.wav").num_rows == 11
