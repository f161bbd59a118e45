"""Each composite of the tagging pipeline on its own: TestPipeline + assert_that on a few real elements."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas.tables import config_id
from tests.support.audio_factory import sine, write_audio
from tests.support.output_factory import SPEC, FakeFile, scores_with_peaks, write_run
from transforms.output.summary import SummarizeFiles
from transforms.tagging.done_set import (
    CHANGED,
    DONE,
    FAILED_BEFORE,
    NEW,
    TRANSIENT_BEFORE,
    CountPlan,
    PriorResults,
    SkipDone,
)
from transforms.tagging.file_report import CombineFileReports, MakeFileRows, UnitReport
from transforms.tagging.frame_table import CoalesceTables, in_order, is_sorted
from transforms.tagging.listing import FileEntry, ListInputFiles, input_specs
from transforms.tagging.units import REPORTS, DecodeUnits, Framing, PlanUnits


def _pipeline() -> TestPipeline:
    return TestPipeline(runner="FnApiRunner")


def test_list_input_files_expands_directories_globs_and_manifests_once_per_file(tmp_path):
    audio = tmp_path / "audio"
    (audio / "sub").mkdir(parents=True)
    for name in ("a.wav", "sub/b.flac", "notes.txt"):
        (audio / name).write_bytes(b"x" * 10)
    manifest = tmp_path / "manifest.txt"
    manifest.write_text(f"# a comment\n{audio / 'a.wav'}\n\n{tmp_path / 'missing.wav'}\n{audio / 'sub'}\n")
    specs = input_specs([str(audio), str(audio / "sub" / "*.flac")])
    with _pipeline() as p:
        listed = (p | ListInputFiles(specs, str(manifest))
                  | beam.Map(lambda e: (e.uri.rsplit("/", 1)[-1], (e.error or "").split(":", 1)[0])))
        assert_that(listed, equal_to([("a.wav", ""), ("b.flac", ""), ("missing.wav", "not_found"),
                                      ("sub", "is_directory")]))


def _prior_output(tmp_path):
    """An earlier run: done.wav ok, failed.wav failed, changed.wav ok but since rewritten."""
    out = tmp_path / "out"
    files = [FakeFile("/in/done.wav", "ok", scores=scores_with_peaks(2, {0: 0.9})),
             FakeFile("/in/failed.wav", "failed", error="not_audio: text"),
             FakeFile("/in/changed.wav", "ok", scores=scores_with_peaks(2, {1: 0.9}))]
    write_run(out, files, "20250101T000000.000Z-aaaaaa")
    return out


def test_skip_done_keeps_new_and_changed_files_and_counts_every_decision(tmp_path):
    out = _prior_output(tmp_path)
    # output_factory's rows say size 1000 + frames, modified at 1.7e9.
    entries = [FileEntry("/in/done.wav", 1002, 1.7e9), FileEntry("/in/failed.wav", 1000, 1.7e9),
               FileEntry("/in/changed.wav", 1002, 1.8e9), FileEntry("/in/new.wav", 5, 1.7e9)]
    with _pipeline() as p:
        prior = p | PriorResults(str(out), {"20250101T000000.000Z-aaaaaa": 1}, config_id(SPEC))
        work, categories = p | beam.Create(entries) | SkipDone(prior, retry_failed=False)
        assert_that(work | "Uris" >> beam.Map(lambda e: e.uri), equal_to(["/in/changed.wav", "/in/new.wav"]),
                    label="work")
        assert_that(categories | CountPlan(),
                    equal_to([{NEW: 1, CHANGED: 1, DONE: 1, FAILED_BEFORE: 1, TRANSIENT_BEFORE: 0}]),
                    label="plan")


def test_prior_results_ignore_rows_of_another_model(tmp_path):
    out = _prior_output(tmp_path)
    with _pipeline() as p:
        prior = p | PriorResults(str(out), {"20250101T000000.000Z-aaaaaa": 1}, "another-config")
        assert_that(prior, equal_to([]))


def test_plan_and_decode_units_cover_every_frame_of_a_cut_file_once(tmp_path):
    # WAV holds exactly 7 s: 13 one-second windows at a 0.5 s hop, cut into 2-second units.
    path = write_audio(tmp_path / "long.wav", sine(300.0, 7.0, 16000), 16000)
    framing = Framing(16000, window=16000, hop=8000, unit_frames=4)
    with _pipeline() as p:
        planned = (p | beam.Create([FileEntry(str(path), path.stat().st_size)])
                   | beam.ParDo(PlanUnits(framing)).with_outputs(REPORTS, main="units"))
        decoded = planned.units | beam.ParDo(DecodeUnits(framing)).with_outputs(REPORTS, main="chunks")
        frames = decoded.chunks | beam.FlatMap(lambda c: range(c.first_frame, c.first_frame + len(c.windows)))
        assert_that(frames, equal_to(list(range(13))), label="frames")
        units = decoded[REPORTS] | beam.Map(lambda kv: (kv[1].unit_index, kv[1].num_units, kv[1].error))
        assert_that(units, equal_to([(i, 4, None) for i in range(4)]), label="units")


def test_file_reports_combine_into_exactly_one_row_per_uri():
    reports = [
        ("/a.wav", FileEntry("/a.wav", 100, 1.0)),
        ("/a.wav", UnitReport(1, 2, codec="flac", sample_rate=48000, channels=2, end_sample=32000,
                              reached_eof=True)),
        ("/a.wav", UnitReport(0, 2, codec="flac", sample_rate=48000, channels=2, end_sample=16000)),
        ("/b.wav", FileEntry("/b.wav", error="not_found: no such file")),
        ("/c.mp3", FileEntry("/c.mp3", 50, 2.0)),
        ("/c.mp3", UnitReport(0, 1, codec="mp3", end_sample=8000, problem="truncated: stream ends early")),
    ]
    with _pipeline() as p:
        rows = (p | beam.Create(reports) | beam.CombinePerKey(CombineFileReports())
                | beam.ParDo(MakeFileRows(16000, ("x",), "m@1", "cfg"))
                | beam.Map(lambda r: (r["uri"], r["status"], r["error"].split(":", 1)[0], r["duration_s"])))
        # no ScoreStats arrived: no frames, so a file with a problem has failed.
        assert_that(rows, equal_to([("/a.wav", "ok", "", 2.0), ("/b.wav", "failed", "not_found", None),
                                    ("/c.mp3", "failed", "truncated", 0.5)]))


def test_summarize_files_counts_statuses_frames_and_failure_kinds():
    rows = [{"status": "ok", "num_frames": 10, "duration_s": 5.0, "error": ""},
            {"status": "partial", "num_frames": 3, "duration_s": 1.5, "error": "truncated: cut"},
            {"status": "failed", "num_frames": 0, "duration_s": None, "error": "not_audio: text"},
            {"status": "failed", "num_frames": 0, "duration_s": None, "error": "not_audio: random"}]
    with _pipeline() as p:
        summary = p | beam.Create(rows) | beam.CombineGlobally(SummarizeFiles())
        assert_that(summary, equal_to([{
            "files": 4, "ok": 1, "partial": 1, "failed": 2, "frames": 13, "audio_seconds": 6.5,
            "failures_by_kind": {"not_audio": 2, "truncated": 1}}]))


def test_coalesce_tables_merges_a_bundle_and_sorts_it():
    tables = [pa.table({"uri": ["b", "a"], "frame_index": [1, 0]}),
              pa.table({"uri": ["a", "b"], "frame_index": [1, 0]})]
    with _pipeline() as p:
        merged = (p | beam.Create(tables, reshuffle=False)
                  | beam.ParDo(CoalesceTables(sort_by=("uri", "frame_index")))
                  | beam.FlatMap(lambda t: list(zip(t["uri"].to_pylist(), t["frame_index"].to_pylist()))))
        assert_that(merged, equal_to([("a", 0), ("a", 1), ("b", 0), ("b", 1)]))


def test_coalesced_rows_come_out_in_uri_and_frame_order_whether_or_not_they_came_in_order():
    def coalesced(tables):
        fn = CoalesceTables(sort_by=("uri", "frame_index"))
        fn.start_bundle()
        out = [t for table in tables for t in fn.process(table)] + [w.value for w in fn.finish_bundle()]
        return [list(zip(t["uri"].to_pylist(), t["frame_index"].to_pylist())) for t in out]

    def table(uris, frames):
        return pa.table({"uri": uris, "frame_index": frames})

    assert coalesced([table(["a", "a"], [0, 1]), table(["b"], [0])]) == [[("a", 0), ("a", 1), ("b", 0)]]
    assert coalesced([table(["b", "a"], [1, 2]), table(["a"], [1])]) == [[("a", 1), ("a", 2), ("b", 1)]]


def test_runs_of_rows_are_put_in_order_without_copying_and_the_rest_is_sorted():
    # Three files' frames in runs, the runs out of order (units decoded side by side interleave).
    uris = ["c"] * 3 + ["a"] * 2 + ["b"] * 2 + ["a"] * 2
    frames = [0, 1, 2, 2, 3, 0, 1, 0, 1]
    table = pa.table({"uri": uris, "frame_index": frames, "value": list(range(9))})
    ordered = in_order(table, ["uri", "frame_index"])
    assert list(zip(ordered["uri"].to_pylist(), ordered["frame_index"].to_pylist())) == [
        ("a", 0), ("a", 1), ("a", 2), ("a", 3), ("b", 0), ("b", 1), ("c", 0), ("c", 1), ("c", 2)]
    assert ordered["value"].to_pylist() == [7, 8, 3, 4, 5, 6, 0, 1, 2]  # rows moved whole
    assert ordered["value"].num_chunks == 4  # one slice per file's run: nothing was copied
    # Runs whose ranges interleave cannot be ordered by moving runs: a real sort.
    mixed = pa.table({"uri": ["a", "a", "a"], "frame_index": [0, 2, 1]})
    assert in_order(mixed, ["uri", "frame_index"])["frame_index"].to_pylist() == [0, 1, 2]


@pytest.mark.parametrize("uris, frames, expected", [
    (["a", "a", "b"], [0, 1, 0], True),
    (["a", "a", "b"], [1, 0, 0], False),  # frames out of order within a uri
    (["a", "b", "a"], [0, 0, 1], False),  # a uri comes back
    (["a", "b", "b"], [5, 0, 1], True),  # frame numbers restart with each uri
    (["a"], [3], True),
])
def test_is_sorted_compares_columns_in_turn(uris, frames, expected):
    table = pa.concat_tables([pa.table({"uri": [u], "frame_index": [f]}) for u, f in zip(uris, frames)])
    assert is_sorted(table, ["uri", "frame_index"]) is expected
    ordered = table.sort_by([("uri", "ascending"), ("frame_index", "ascending")])
    assert is_sorted(ordered, ["uri", "frame_index"])


@pytest.mark.parametrize("frames", [0, 1])
def test_file_rows_carry_clip_labels_when_frames_were_scored(frames):
    from transforms.tagging.file_report import ScoreStats

    reports = [("/a.wav", FileEntry("/a.wav", 10, 1.0)),
               ("/a.wav", UnitReport(0, 1, codec="wav", end_sample=16000, reached_eof=True))]
    if frames:
        reports.append(("/a.wav", ScoreStats(2, np.array([0.2, 1.6]), np.array([0.1, 0.9]))))
    with _pipeline() as p:
        rows = (p | beam.Create(reports) | beam.CombinePerKey(CombineFileReports())
                | beam.ParDo(MakeFileRows(16000, ("quiet", "loud"), "m@1", "cfg"))
                | beam.Map(lambda r: (r["num_frames"], [x["label"] for x in r["top_labels_mean"]])))
        assert_that(rows, equal_to([(2, ["loud", "quiet"])] if frames else [(0, [])]))
