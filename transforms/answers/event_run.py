"""Events from the frames of earlier runs, published as a run of their own (``beam_jobs.events``).

The events land in ``OUT/events/run=<id>/`` with a run record in ``OUT/runs/<id>.json``
(OUT may be the frames' own output directory or another one), staged and then
committed as tag_audio commits (``transforms.output.publish``), holding OUT's
lease, so a run killed half-way leaves nothing a reader takes as output.  It
reads the current rows of the frames only (``FrameSource.keep``): frames that a
later run re-tagged are stale.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.parquetio import ReadAllFromParquetBatched, WriteToParquetBatched
from apache_beam.options.pipeline_options import PipelineOptions

from schemas.tables import METADATA_PREFIX, PACKAGE_VERSION
from transforms.answers.event_options import EventOptionsError, check_for_model
from transforms.answers.event_pipeline import EventContext, EventSettings, FramesToEvents
from transforms.output.layout import EVENTS, LOG_PROTOCOL, SUCCEEDED, RunRecord, new_run_id
from transforms.output.lease import DEFAULT_TTL_S, Lease
from transforms.output.publish import commit, lost_lease, publish
from transforms.output.read_pins import reading
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


@dataclasses.dataclass(frozen=True)
class FramesForEvents:
    """The frames an events run reads, the score column it finds events in, and the settings resolved
    against the frames' model (``events_over``)."""

    frames_dir: str
    run_ids: tuple[str, ...]
    frame_files: tuple[str, ...]
    score_column: str  # scores, or top_classes when the runs kept the top k only
    context: EventContext
    base_model: dict  # what made the frames, for the run record
    keep: Callable[[str, pa.Table], pa.Table] | None = None  # the current rows of a frames part

    def parameters(self) -> dict:
        return {"frames": self.frames_dir, "runs": list(self.run_ids), **self.context.settings.to_document()}


def score_column(runs) -> str:
    """The column of every run's frames that events are found in; raises EventOptionsError."""
    for column in ("scores", "top_classes"):
        if all(column in run.columns for run in runs):
            return column
    columns = sorted({c for run in runs for c in run.columns})
    raise EventOptionsError(f"the runs have no scores column to find events in (columns: "
                            f"{', '.join(columns)})")


def events_over(source, settings: EventSettings, classes_option: str) -> FramesForEvents:
    """Checks ``settings`` against ``source``, the frames of one model (``find_frames``): a score column,
    the classes asked for (named ``classes_option`` in the error); raises EventOptionsError."""
    column = score_column(source.runs)
    meta = source.metadata
    class_names = json.loads(meta.get("class_names", "[]"))
    check_for_model(settings, class_names, classes_option)
    context = EventContext.for_model(
        settings, class_names, float(meta["hop_s"]), meta["model_identity"], meta["config_id"],
        {(METADATA_PREFIX + k).encode(): v.encode() for k, v in meta.items()})
    context = dataclasses.replace(context, run_order=tuple(source.run_ids))
    return FramesForEvents(source.out_dir, tuple(source.run_ids), tuple(source.frame_files), column, context,
                           source.base_model(), source.keep)


def _new_record(output: str, parameters: dict, model: dict, run_id: str | None = None) -> RunRecord:
    return RunRecord(run_id=run_id or new_run_id(), out_dir=output.rstrip("/"), started_at=time.time(),
                     version=PACKAGE_VERSION, parameters=dict(parameters), model=dict(model),
                     protocol=LOG_PROTOCOL)


def run_events(frames: FramesForEvents, output: str, options: PipelineOptions, run_id: str | None = None,
               lease_ttl_s: float = DEFAULT_TTL_S) -> RunRecord:
    """Takes the lease of ``output`` (OutputBusyError when a run holds it), tidies it, writes the
    'running' record of a new events run there, runs the pipeline and returns the final record."""
    record = _new_record(output, frames.parameters(), frames.base_model, run_id)
    lease = Lease(record.out_dir, record.run_id, lease_ttl_s).acquire()
    try:
        lease = dataclasses.replace(lease, base_commit=tidy(record.out_dir, record.run_id, check=False).head)
        record.write()
        pipeline = beam.Pipeline(options=options)
        _ = pipeline | "EventsFromFrames" >> EventsFromFrameFiles(frames.frame_files, frames.score_column,
                                                                  frames.context, record, lease, frames.keep)
        with reading(frames.frames_dir, frames.run_ids, "events"):
            pipeline.run().wait_until_finish()
    finally:
        lease.release()
    return record.reread()
