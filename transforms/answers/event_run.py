"""Events from the frames of earlier runs, published as a run of their own (``beam_jobs.events``).

The events land in ``OUT/events/run=<id>/`` with a run record in ``OUT/runs/<id>.json``
(OUT may be the frames' own output directory or another one), staged and then
published as tag_audio publishes (``transforms.output.publish``), so a run killed
half-way leaves nothing a reader takes as output.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.parquetio import ReadAllFromParquetBatched, WriteToParquetBatched
from apache_beam.options.pipeline_options import PipelineOptions

from schemas.tables import PACKAGE_VERSION
from transforms.answers.event_pipeline import EventContext, FramesToEvents
from transforms.output.layout import EVENTS, LOG_PROTOCOL, SUCCEEDED, RunRecord, new_run_id
from transforms.output.lease import DEFAULT_TTL_S, Lease
from transforms.output.publish import commit, lost_lease, publish
from transforms.output.tidy import tidy

FRAME_COLUMNS = ("uri", "frame_index", "start_s", "end_s")


class PublishEvents(beam.DoFn):
    """Runs once, after the events are written: moves them into place, then commits the run (only while
    it holds the lease of its output)."""

    def __init__(self, record: RunRecord, lease: Lease | None = None):
        self._record = record
        self._lease = lease

    def process(self, staged: list[str], events: int, recordings: int):
        if self._lease is not None and not self._lease.held():
            yield lost_lease(self._record).to_json()
            return
        published = publish(self._record.layout, staged, tables=(EVENTS,))
        finished = time.time()
        final = dataclasses.replace(
            self._record, status=SUCCEEDED, counts={"events": events, "recordings_with_events": recordings},
            finished_at=finished,
            wall_s=finished - self._record.started_at,
            outputs={table: len(paths) for table, paths in published.items()})
        yield commit(final, self._lease).to_json()


@beam.ptransform_fn
def EventsFromFrameFiles(pbegin, frame_files: Sequence[str], score_column: str,  # noqa: N802
                         context: EventContext, record: RunRecord, lease: Lease | None = None,
                         keep: Callable[[str, pa.Table], pa.Table] | None = None):
    """Frames Parquet files -> events Parquet of a new run, published; returns the final record.

    ``keep(path, table)``: the rows of a frames part to use (``FrameSource.keep``: the current rows)."""
    layout = record.layout
    tables = (pbegin
              | "ListFrameFiles" >> beam.Create(list(frame_files))
              | "ReadFrames" >> ReadAllFromParquetBatched(columns=[*FRAME_COLUMNS, score_column],
                                                          with_filename=True)
              | "CurrentRows" >> beam.Map(lambda ft: (ft[0], keep(ft[0], ft[1])) if keep else ft)
              | "Events" >> FramesToEvents(context))
    staged = (tables
              | "WriteEvents" >> WriteToParquetBatched(layout.staging_prefix(EVENTS), context.schema,
                                                       codec="zstd", file_name_suffix=".parquet")
              | "ListWritten" >> beam.combiners.ToList())
    events = (tables
              | "EventRows" >> beam.Map(lambda t: t.num_rows)
              | "CountEvents" >> beam.CombineGlobally(sum))
    recordings = (tables
                  | "EventUris" >> beam.FlatMap(lambda t: set(t.column("uri").to_pylist()))
                  | "DistinctUris" >> beam.Distinct()
                  | "CountRecordings" >> beam.combiners.Count.Globally())
    return (staged
            | "Publish" >> beam.ParDo(PublishEvents(record, lease), events=beam.pvalue.AsSingleton(events),
                                      recordings=beam.pvalue.AsSingleton(recordings)))


def new_record(output: str, parameters: dict, model: dict, run_id: str | None = None) -> RunRecord:
    return RunRecord(run_id=run_id or new_run_id(), out_dir=output.rstrip("/"), started_at=time.time(),
                     version=PACKAGE_VERSION, parameters=dict(parameters), model=dict(model),
                     protocol=LOG_PROTOCOL)


def run_events(frame_files: Sequence[str], score_column: str, context: EventContext, record: RunRecord,
               options: PipelineOptions, lease_ttl_s: float = DEFAULT_TTL_S,
               keep: Callable[[str, pa.Table], pa.Table] | None = None) -> RunRecord:
    """Takes the lease of the events' output (OutputBusyError when a run holds it), tidies it, writes the
    'running' record, runs the pipeline and returns the final record."""
    lease = Lease(record.out_dir, record.run_id, lease_ttl_s).acquire()
    try:
        lease = dataclasses.replace(lease, base_commit=tidy(record.out_dir, record.run_id, check=False).head)
        record.write()
        pipeline = beam.Pipeline(options=options)
        _ = pipeline | "EventsFromFrames" >> EventsFromFrameFiles(frame_files, score_column, context, record,
                                                                  lease, keep)
        pipeline.run().wait_until_finish()
    finally:
        lease.release()
    final = RunRecord.read(record.layout.record_path())
    if final is None or not final.published:
        raise RuntimeError(f"the events run ended without its final record at {record.layout.record_path()}")
    return final
