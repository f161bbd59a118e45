"""The current view (latest ok result per file and config) on real tag_audio runs: the Python helper, the
documented DuckDB and BigQuery SQL, and inspect, all agree with what the runs did."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from beam_jobs import inspect
from tests.output.sql_docs import README, bigquery_current_view, duckdb_current_view, sql_block
from transforms.output import current
from transforms.output.inspection import summarize_output, to_json


def _configs(history) -> dict[str, str]:
    """'a@1' / 'a@2' / 'b' ... -> config id, read from the runs' own files rows."""
    rows = ds.dataset(history.out / "files", partitioning="hive").to_table(
        columns=["uri", "config_id", "run"]).to_pylist()
    hop = {r["config_id"] for r in rows if r["run"] == history.runs[2]}
    (second,) = hop
    (first,) = {r["config_id"] for r in rows} - hop
    return {"1": first, "2": second}


def expected_current(history) -> set[tuple[str, str, str]]:
    """(run, uri, config) of the current rows, from the history's script (tests/output/conftest.py)."""
    config = _configs(history)
    r1, r2, r3, r4 = history.runs
    return {(r4, history.uris["a"], config["1"]), (r3, history.uris["a"], config["2"]),
            (r2, history.uris["b"], config["1"])}


def test_row_states_follow_the_runs(history):
    states = current.row_states(str(history.out))
    r1, r2, r3, r4 = history.runs
    assert states.run_ids == history.runs  # the running run is not published: in no state
    by_row = {(row["run"], row["uri"]): row["state"] for row in states.table.to_pylist()}
    a, b, c = (history.uris[k] for k in "abc")
    assert by_row == {
        (r1, a): "superseded", (r1, b): "superseded", (r1, c): "superseded",
        (r2, b): "current", (r2, c): "latest",
        (r3, a): "current",
        (r4, a): "current",
    }
    assert states.counts() == {"current": 3, "latest": 1, "superseded": 3}
    assert states.superseded_runs() == [r1]


def test_python_helper_reads_the_current_rows_and_their_frames(history):
    files = current.current_files(str(history.out))
    assert {(r["run"], r["uri"], r["config_id"]) for r in files.to_pylist()} == expected_current(history)
    assert set(files["status"].to_pylist()) == {"ok"}
    assert current.current_files(str(history.out), ["uri"]).column_names == ["uri", "run"]

    frames = current.current_frames(str(history.out), ["uri", "config_id", "frame_index", "embedding"])
    raw = ds.dataset(history.out / "frames", partitioning="hive").to_table()
    for row in files.to_pylist():
        mine = frames.filter(pc.and_(pc.equal(frames["uri"], row["uri"]),
                                     pc.equal(frames["config_id"], row["config_id"])))
        assert set(mine["run"].to_pylist()) == {row["run"]}
        assert sorted(mine["frame_index"].to_pylist()) == list(range(row["num_frames"]))
        same_key = pc.and_(pc.equal(raw["uri"], row["uri"]), pc.equal(raw["config_id"], row["config_id"]))
        theirs = raw.filter(pc.and_(same_key, pc.equal(raw["run"], row["run"]))).sort_by("frame_index")
        np.testing.assert_allclose(np.stack(mine.sort_by("frame_index")["embedding"].to_numpy(False)),
                                   np.stack(theirs["embedding"].to_numpy(False)), rtol=0, atol=0)
    assert frames.num_rows == sum(files["num_frames"].to_pylist()) < raw.num_rows


def _view_rows(connection, table: str) -> set[tuple]:
    return set(connection.execute(f"select run, uri, config_id from {table}").fetchall())


def test_documented_duckdb_view_equals_the_python_helper(history):
    connection = duckdb_current_view(history.out)
    assert _view_rows(connection, "files_current") == expected_current(history)
    frames = current.current_frames(str(history.out), ["uri", "frame_index"])
    counted = connection.execute("select count(*) from frames_current").fetchone()[0]
    assert counted == frames.num_rows
    # The raw view sees every run, the killed one included; the current view never takes its rows.
    runs = {r for (r,) in connection.execute("select distinct run from files").fetchall()}
    assert history.running in runs
    assert history.running not in {r for r, _, _ in _view_rows(connection, "files_current")}


def test_documented_bigquery_view_equals_the_python_helper(history):
    connection = bigquery_current_view(history.out)
    rows = _view_rows(connection, "dataset.files_current")
    # The commit log decides, as for every reader: the killed run's copy of run 4's rows is in no view.
    expected = expected_current(history)
    assert rows == expected
    frames = connection.execute(
        "select run, uri, count(*) from dataset.frames_current group by all").fetchall()
    assert {(run, uri) for run, uri, _ in frames} == {(run, uri) for run, uri, _ in expected}


def test_inspect_shows_current_against_superseded_rows(history, capsys):
    summary = to_json(summarize_output(str(history.out)))
    view = summary["current_view"]
    connection = duckdb_current_view(history.out)
    assert view["rows"]["current"] == connection.execute("select count(*) from files_current").fetchone()[0]
    assert view["rows"] == {"current": 3, "latest": 1, "superseded": 3}
    assert view["compactable_runs"] == [history.runs[0]]
    on_disk = sum(p.stat().st_size for p in history.out.glob(f"f*/run={history.runs[0]}/*.parquet"))
    assert view["compactable_bytes"] == on_disk > 0
    rows = {r["run_id"]: r.get("rows") for r in summary["runs"]}
    assert rows[history.runs[1]] == {"current": 1, "latest": 1, "superseded": 0}
    assert rows[history.running] is None  # not published: no state

    assert inspect.run([str(history.out)]) == 0
    text = capsys.readouterr().out
    assert "current view: 3 current rows" in text and "3 superseded rows" in text
    assert f"python -m beam_jobs.compact {history.out}" in text
    # One screen wide, whatever the length of the folder it names (a pytest-xdist worker's is longer).
    assert max(len(line.replace(str(history.out), "OUT")) for line in text.splitlines()) <= 120

    assert inspect.run([str(history.out), "--format", "json", "--run", history.runs[1]]) == 0
    assert "current_view" not in json.loads(capsys.readouterr().out)  # one run: nothing to compare


def test_a_status_set_can_widen_what_counts_as_a_result(history):
    states = current.row_states(str(history.out), statuses=("ok", "failed"))
    by_row = {(row["run"], row["uri"]): row["state"] for row in states.table.to_pylist()}
    assert by_row[(history.runs[1], history.uris["c"])] == "current"


@pytest.mark.parametrize("table", ["files", "frames"])
def test_empty_selection_has_the_requested_columns(tmp_path, table):
    (tmp_path / "out" / "runs").mkdir(parents=True)
    (tmp_path / "out" / "runs" / "x.json").write_text(json.dumps({"run_id": "x", "status": "running"}))
    read = current.current_files if table == "files" else current.current_frames
    assert read(str(tmp_path / "out"), ["uri", "start_s"] if table == "frames" else ["uri"]).num_rows == 0


@pytest.mark.parametrize("title", ["DuckDB: the current view", "BigQuery: the current view"])
def test_readme_gives_the_same_sql_as_the_tested_document(title):
    assert sql_block(title, README) == sql_block(title)
