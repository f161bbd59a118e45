"""compact removes the runs holding superseded rows only, on real tag_audio runs: the current view and the
next run's done-set are unchanged, runs still 'running' and runs with any current row are never touched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beam_jobs import compact
from tests.output.sql_docs import duckdb_current_view
from tests.support.pipeline_helpers import run_tag_audio
from transforms.output import compaction
from transforms.output.current import current_files, current_frames, row_states
from transforms.output.lease import Lease
from transforms.output.reader import find_output


def _listing(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}


def _view(out: Path) -> tuple[set, set]:
    connection = duckdb_current_view(out)
    files = set(connection.execute("select run, uri, config_id, num_frames from files_current").fetchall())
    frames = connection.execute(
        "select run, uri, config_id, frame_index, embedding from frames_current").fetchall()
    return files, {(r, u, c, i, tuple(e)) for r, u, c, i, e in frames}


def _plan(history, capsys) -> str:
    capsys.readouterr()
    assert run_tag_audio(history.tag_args("--input", str(history.audio), "--plan_only")) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("plan:")]
    return line


def test_dry_run_names_the_superseded_run_and_removes_nothing(history_copy, capsys):
    before = _listing(history_copy.out)
    assert compact.run([str(history_copy.out), "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert f"would remove  run={history_copy.runs[0]}  succeeded  3 files rows" in out
    assert f"never committed  run={history_copy.running}  status running" in out
    assert "keeping  3 published run(s)" in out and "nothing was" in out
    assert _listing(history_copy.out) == before


def test_compaction_keeps_the_current_view_and_the_done_set(history_copy, capsys):
    out = history_copy.out
    r1 = history_copy.runs[0]
    view_before = _view(out)
    python_before = current_files(str(out)).sort_by([("run", "ascending"), ("uri", "ascending")])
    frames_before = current_frames(str(out), ["uri", "frame_index", "scores"]).num_rows
    plan_before = _plan(history_copy, capsys)
    listing_before = _listing(out)

    assert compact.run([str(out)]) == 0
    assert "removed 1 run(s)" in capsys.readouterr().out

    listing_after = _listing(out)
    removed = set(listing_before) - set(listing_after)
    killed = history_copy.running
    assert removed and all(f"run={r1}" in path or path == f"runs/{r1}.json" or f"run={killed}" in path
                           for path in removed)
    assert f"runs/{r1}.json" in removed and f"runs/compacted/{r1}.json" in listing_after
    assert not (out / "frames" / f"run={r1}").exists() and not (out / "files" / f"run={r1}").exists()
    # The killed run never committed: compaction, holding the lease, removed its Parquet; its record stays
    # and says what happened.
    assert [p for p in listing_before if f"run={killed}" in p]
    assert not [p for p in listing_after if f"run={killed}" in p]
    killed_record = json.loads((out / "runs" / f"{killed}.json").read_text())
    assert killed_record["status"] == "failed" and "never committed" in killed_record["reason"]
    archived = json.loads((out / "runs" / "compacted" / f"{r1}.json").read_text())
    assert archived["run_id"] == r1 and archived["status"] == "succeeded"

    assert _view(out) == view_before
    assert current_files(str(out)).sort_by([("run", "ascending"), ("uri", "ascending")]).equals(python_before)
    assert current_frames(str(out), ["uri", "frame_index", "scores"]).num_rows == frames_before
    assert _plan(history_copy, capsys) == plan_before  # the done-set decides the same
    assert row_states(str(out)).counts() == {"current": 3, "latest": 1, "superseded": 0}

    assert compact.run([str(out)]) == 0  # nothing left to do
    assert "removed 0 run(s)" in capsys.readouterr().out
    assert _listing(out) == listing_after


def test_nothing_is_removed_while_a_run_holds_the_output(history_copy, capsys):
    out = history_copy.out
    before = _listing(out)
    holder = Lease(str(out), "20990101T000000.000Z-abcdef").acquire()  # a tag_audio run at work
    assert compact.run([str(out)]) == 3
    assert "is being tagged by run 20990101T000000.000Z-abcdef" in capsys.readouterr().err
    assert {k: v for k, v in _listing(out).items() if k != "_lease.json"} == before
    holder.release()
    assert compact.run([str(out)]) == 0
    assert not (out / "frames" / f"run={history_copy.runs[0]}").exists()
    assert not (out / "_lease.json").exists()  # compaction gave the lease up


def test_a_compaction_stopped_half_way_is_finished_by_the_next(history_copy):
    out = history_copy.out
    r1 = history_copy.runs[0]
    plan = compaction.plan_compaction(str(out))
    (removal,) = plan.remove
    # Stopped after the frames were deleted: files and record are still in place.
    for part in removal.run.frames:
        Path(part.path).unlink()
    again = compaction.plan_compaction(str(out))
    assert [r.run.run_id for r in again.remove] == [r1]
    assert compaction.compact(again) == [r1]
    assert not (out / "files" / f"run={r1}").exists() and (out / "runs" / "compacted" / f"{r1}.json").exists()


def test_runs_with_current_rows_and_running_runs_are_never_removed(history_copy):
    out = history_copy.out
    plan = compaction.plan_compaction(str(out))
    found = {run.run_id: run for run in [*[r.run for r in plan.remove], *plan.untouched]}
    runs = {run.run_id: run for run in find_output(str(out)).runs}
    with pytest.raises(ValueError, match="holds current or latest rows"):
        compaction.remove_run(compaction.RunRemoval(runs[history_copy.runs[1]], 2, 0), plan.states,
                              plan.out_dir)
    with pytest.raises(ValueError, match="not published"):
        compaction.remove_run(compaction.RunRemoval(runs[history_copy.running], 1, 0), plan.states,
                              plan.out_dir)
    assert history_copy.running in found and (out / "frames" / f"run={history_copy.runs[1]}").exists()


def test_missing_output_is_a_usage_error(tmp_path, capsys):
    assert compact.run([str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()
    (tmp_path / "empty").mkdir()
    assert compact.run([str(tmp_path / "empty")]) == 2


def test_compacts_an_output_on_gcs(history, gcs):
    bucket = gcs.bucket("compact-test")
    gcs.upload_dir(history.out, f"{bucket}/out")
    r1 = history.runs[0]
    assert compact.run([f"{bucket}/out"]) == 0
    uris = gcs.list_uris(f"{bucket}/out")
    assert not [u for u in uris if f"run={r1}" in u]
    assert f"{bucket}/out/runs/compacted/{r1}.json" in uris and f"{bucket}/out/runs/{r1}.json" not in uris
    assert row_states(f"{bucket}/out").counts() == {"current": 3, "latest": 1, "superseded": 0}
    # The killed run never committed: its Parquet is removed, its record kept (and marked failed).
    assert not [u for u in uris if f"run={history.running}" in u]
    assert f"{bucket}/out/runs/{history.running}.json" in uris
    log = sorted(u.rsplit("/", 1)[-1] for u in uris if "/_log/" in u)
    assert log == [f"{n:020d}.json" for n in (1, 2, 3, 4)]
