"""The output contract: run ids, the one run-id parser, run records, publishing."""

from __future__ import annotations

import dataclasses
import json

import pytest

from transforms.output.layout import RunLayout, RunRecord, new_run_id, run_id_of
from transforms.output.publish import final_record, publish


def test_run_ids_sort_by_start_time_to_the_millisecond_and_differ_when_launched_together():
    first, second = new_run_id(1_700_000_000.001), new_run_id(1_700_000_000.002)
    assert first < second and first[:20] == "20231114T221320.001Z"
    assert len({new_run_id(1_700_000_000.0) for _ in range(50)}) == 50


@pytest.mark.parametrize(("path", "expected"), [
    ("OUT/frames/run=A/part-0.parquet", "A"),
    ("OUT/files/run=B/part-0.parquet", "B"),
    ("OUT/runs/C.json", "C"),
    ("OUT/_staging/run=D/frames/part-0.parquet", None),
    ("OUT/frames/part-0.parquet", None),
    ("ELSEWHERE/frames/run=E/part-0.parquet", None),
])
def test_run_id_is_read_below_the_output_root_only(path, expected):
    root = "gs://bucket/backfills/run=nightly/OUT"  # the root itself holds 'run='
    assert run_id_of(root, path.replace("OUT", root, 1) if path.startswith("OUT") else path) == expected


def test_run_record_round_trips_through_json_and_ignores_unknown_keys(tmp_path):
    record = RunRecord(run_id="R", out_dir=str(tmp_path), started_at=1.0, version="1.2.3",
                       parameters={"input": ["a"]}, model={"identity": "m@1"})
    record.write()
    stored = json.loads((tmp_path / "runs" / "R.json").read_text())
    assert stored["status"] == "running" and "counts" not in stored
    stored["added_by_a_later_version"] = True
    (tmp_path / "runs" / "R.json").write_text(json.dumps(stored))
    assert RunRecord.read(str(tmp_path / "runs" / "R.json")) == record
    (tmp_path / "runs" / "R.json").write_text('{"run_id": "R", "sta')  # half written
    assert RunRecord.read(str(tmp_path / "runs" / "R.json")) is None
    with pytest.raises(RuntimeError, match="run R ended without its record"):
        record.reread()
    dataclasses.replace(record, status="succeeded").write()
    assert record.reread().status == "succeeded" and record.status == "running"


def test_publish_moves_staged_parts_and_is_idempotent(tmp_path):
    layout = RunLayout(str(tmp_path), "R")
    staged = []
    for table in ("frames", "files"):
        path = tmp_path / "_staging" / "run=R" / table / "part-00000.parquet"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"PAR1")
        staged.append(str(path))
    first = publish(layout, staged)
    again = publish(layout, staged)  # a retried step finds nothing left to move
    assert first == again == {"frames": [f"{tmp_path}/frames/run=R/part-00000.parquet"],
                              "files": [f"{tmp_path}/files/run=R/part-00000.parquet"]}
    assert (tmp_path / "frames" / "run=R" / "part-00000.parquet").read_bytes() == b"PAR1"
    assert not (tmp_path / "_staging" / "run=R").exists()


def test_a_run_with_too_many_failed_files_is_published_as_failed():
    record = RunRecord(run_id="R", out_dir="/o", started_at=10.0)
    summary = {"files": 10, "ok": 6, "failed": 4}
    ok = final_record(record, summary, {}, {"frames": ["a"], "files": ["b"]}, 0.5, now=12.0)
    bad = final_record(record, summary, {}, {"frames": [], "files": ["b"]}, 0.3, now=12.0)
    assert (ok.status, ok.wall_s) == ("succeeded", 2.0)
    assert ok.outputs == {"frames": 1, "files": 1}
    assert bad.status == "failed" and "4 of 10 files failed" in bad.reason
    assert record.status == "running"  # the record the run started with is not changed
