"""The events table in the output layout: found by the reader, published like frames and files."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.answers import events_schema
from tests.support.output_factory import three_files, write_run
from transforms.output.layout import EVENTS, RunLayout
from transforms.output.publish import publish
from transforms.output.reader import find_output, read_events


def _events(uri: str) -> pa.Table:
    row = {"uri": uri, "label": "Siren", "class_index": 2, "start_s": 1.0, "end_s": 2.5, "peak_s": 1.5,
           "peak_score": 0.9, "mean_score": 0.7, "num_frames": 3, "start_utc": None, "end_utc": None,
           "time_source": None, "model": "head@x", "config_id": "c"}
    return pa.Table.from_pylist([row], schema=events_schema())


def test_an_output_dir_named_like_a_table_is_still_an_output_dir(tmp_path):
    out = tmp_path / "results" / "events"  # e.g. beam_jobs.events --output results/events
    write_run(out, three_files(), run_id="20250101T000000Z-aaaaaa")
    layout = RunLayout(str(out), "20250101T000000Z-aaaaaa")
    path = Path(layout.table_dir(EVENTS)) / "part-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(_events("/data/in/ok.wav"), path)

    output = find_output(str(out))
    assert [run.run_id for run in output.runs] == ["20250101T000000Z-aaaaaa"]
    run = output.runs[0]
    assert len(run.frames) == 2 and [p.path for p in run.events] == [str(path)]
    assert read_events(run).column("label").to_pylist() == ["Siren"]
    # A table directory given as OUT_DIR still names its output (the runs below it only).
    assert [r.run_id for r in find_output(str(out / "events")).runs] == ["20250101T000000Z-aaaaaa"]


def test_publish_moves_staged_events_and_makes_only_the_run_tables(tmp_path):
    layout = RunLayout(str(tmp_path), "20250102T000000Z-bbbbbb")
    staged = Path(layout.staging_prefix(EVENTS) + "-00000-of-00001.parquet")
    staged.parent.mkdir(parents=True)
    pq.write_table(_events("/a.wav"), staged)
    published = publish(layout, [str(staged)], tables=(EVENTS,))
    assert list(published) == [EVENTS] and Path(published[EVENTS][0]).exists()
    assert not (tmp_path / "frames").exists() and not staged.exists()


def test_compaction_takes_a_superseded_runs_events_and_keeps_events_only_runs(tmp_path):
    import json

    from transforms.output.compaction import compact, plan_compaction

    out = tmp_path / "out"
    old, new, events_only = "20250101T000000Z-aaaaaa", "20250102T000000Z-bbbbbb", "20250103T000000Z-cccccc"
    write_run(out, three_files(), run_id=old)
    write_run(out, three_files(), run_id=new)  # the same files again: every row of the old run is superseded
    for run_id in (old, events_only):
        path = Path(RunLayout(str(out), run_id).table_dir(EVENTS)) / "part-00000-of-00001.parquet"
        path.parent.mkdir(parents=True)
        pq.write_table(_events("/data/in/ok.wav"), path)
    Path(RunLayout(str(out), events_only).record_path()).write_text(json.dumps(
        {"run_id": events_only, "status": "succeeded", "started_at": 1.8e9, "out_dir": str(out)}))

    plan = plan_compaction(str(out))
    assert [r.run.run_id for r in plan.remove] == [old]
    assert compact(plan) == [old]
    assert not (out / EVENTS / f"run={old}").exists()
    runs = {run.run_id: run for run in find_output(str(out)).runs}
    assert set(runs) == {new, events_only} and len(runs[events_only].events) == 1
