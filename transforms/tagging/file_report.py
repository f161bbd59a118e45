"""Everything that happens to one input file, combined into exactly one files row.

Several steps learn something about a file: listing (size, or 'not found'),
each decoded work unit (codec, length, problems) and the model (scores).  Each
emits a small report keyed by URI; ``CombineFileReports`` merges them, so a file
gets its row whether it failed at listing, at decoding, or never failed.  With
``--channels`` other than mix, a file gets one row per kept channel (its
``channel`` column says which); a file that failed before its channels were
known (or whose channels do not exist) gets one row with ``channel`` null.
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam
import numpy as np

from schemas.tables import FILE_TOP_LABELS, STATUS_FAILED, STATUS_OK, STATUS_PARTIAL, error_kind
from transforms.tagging.listing import FileEntry


@dataclasses.dataclass
class UnitReport:
    """What decoding one work unit found."""

    unit_index: int
    num_units: int
    codec: str | None = None
    sample_rate: int | None = None  # of the source
    channels: int | None = None
    end_sample: int = 0  # model-rate sample index where decoding of this unit stopped
    reached_eof: bool = False
    error: str | None = None  # 'kind: message'; the unit produced nothing usable after this
    problem: str | None = None  # stream ended short ('truncated: ...', 'decoder_error: ...')
    kept: tuple[int, ...] | None = None  # the channels decoded on their own; None: mixed to mono


@dataclasses.dataclass
class ScoreStats:
    """Sum, max and count of frame scores for part of a file (for clip-level labels)."""

    count: int
    score_sum: np.ndarray
    score_max: np.ndarray
    channel: int | None = None  # of the file; None: its channels mixed

    @classmethod
    def of(cls, scores: np.ndarray, channel: int | None = None) -> ScoreStats:
        """The stats of frames ``scores [n, classes]``."""
        return cls(len(scores), scores.sum(axis=0, dtype=np.float64), scores.max(axis=0), channel)

    def merge(self, other: ScoreStats) -> ScoreStats:
        return ScoreStats(self.count + other.count, self.score_sum + other.score_sum,
                          np.maximum(self.score_max, other.score_max), self.channel)


@dataclasses.dataclass
class FileAccumulator:
    size_bytes: int | None = None
    last_modified: float | None = None
    listing_error: str | None = None
    sidecar: str | None = None
    units: dict[int, UnitReport] = dataclasses.field(default_factory=dict)
    num_units: int | None = None
    scores: dict[int | None, ScoreStats] = dataclasses.field(default_factory=dict)  # by channel

    @property
    def kept(self) -> tuple[int, ...] | None:
        """The channels this file was decoded into (None: mixed, or unknown because decoding failed)."""
        return next((u.kept for u in self.units.values() if u.kept is not None), None)


def _merge_into(acc: FileAccumulator, item) -> FileAccumulator:
    if isinstance(item, FileEntry):
        _take_listing(acc, item.size_bytes, item.last_modified, item.error, item.sidecar)
    elif isinstance(item, UnitReport):
        acc.units[item.unit_index] = item
        acc.num_units = item.num_units
    elif isinstance(item, ScoreStats):
        known = acc.scores.get(item.channel)
        acc.scores[item.channel] = item if known is None else known.merge(item)
    elif isinstance(item, FileAccumulator):
        for unit in item.units.values():
            _merge_into(acc, unit)
        for stats in item.scores.values():
            _merge_into(acc, stats)
        _take_listing(acc, item.size_bytes, item.last_modified, item.listing_error, item.sidecar)
    else:
        raise TypeError(f"unexpected file report {type(item).__name__}")
    return acc


def _take_listing(acc: FileAccumulator, size_bytes, last_modified, error, sidecar) -> None:
    """What the listing said of the file, where it said anything."""
    acc.size_bytes = size_bytes if size_bytes is not None else acc.size_bytes
    acc.last_modified = last_modified if last_modified is not None else acc.last_modified
    acc.listing_error = error or acc.listing_error
    acc.sidecar = sidecar if sidecar is not None else acc.sidecar


def status_and_error(acc: FileAccumulator, num_frames: int) -> tuple[str, str]:
    """The file's status ('ok' | 'partial' | 'failed') and one error text (empty when ok).

    Status and frames agree: 'failed' files have no frames, and a file with a
    problem and frames is 'partial' (frames before NaN/Inf samples or a decoder
    crash hold only audio that came before it; the error says where).
    """
    if acc.listing_error:
        return STATUS_FAILED, acc.listing_error
    if not acc.units:
        return STATUS_FAILED, "internal: no decoding report for this file"
    units = [acc.units[i] for i in sorted(acc.units)]
    errors = [u.error for u in units if u.error] + [u.problem for u in units if u.problem]
    missing = (acc.num_units or 0) - len(units)
    if missing > 0:
        errors.append(f"internal: {missing} of {acc.num_units} work units did not report")
    if not errors:
        return STATUS_OK, ""
    first = errors[0]
    if num_frames == 0:
        return STATUS_FAILED, first
    return STATUS_PARTIAL, first


def top_labels(values: np.ndarray, class_names: tuple[str, ...], k: int) -> list[dict]:
    order = np.argsort(-values, kind="stable")[:k]
    return [{"label": class_names[i], "score": float(values[i])} for i in order]


def file_rows(uri: str, acc: FileAccumulator, model_rate: int, class_names: tuple[str, ...],
              model_identity: str, config_id: str) -> list[dict]:
    """The files rows of one URI: one, or one per kept channel (see schemas.tables.files_schema)."""
    return [file_row(uri, acc, model_rate, class_names, model_identity, config_id, channel)
            for channel in (acc.kept or (None,))]


def file_row(uri: str, acc: FileAccumulator, model_rate: int, class_names: tuple[str, ...],
             model_identity: str, config_id: str, channel: int | None = None) -> dict:
    """The files row for one URI, or for one channel of it."""
    scores = acc.scores.get(channel)
    num_frames = scores.count if scores is not None else 0
    status, error = status_and_error(acc, num_frames)
    units = [acc.units[i] for i in sorted(acc.units)]
    first = units[0] if units else UnitReport(0, 1)
    decoded_end = max((u.end_sample for u in units), default=0)
    mean_labels = max_labels = []
    if scores is not None and scores.count:
        mean_labels = top_labels(scores.score_sum / scores.count, class_names, FILE_TOP_LABELS)
        max_labels = top_labels(scores.score_max, class_names, FILE_TOP_LABELS)
    return {
        "uri": uri,
        "channel": channel,
        "status": status,
        "error": error,
        "duration_s": decoded_end / model_rate if units and first.codec else None,
        "sample_rate": first.sample_rate,
        "channels": first.channels,
        "codec": first.codec,
        "size_bytes": acc.size_bytes,
        "last_modified": acc.last_modified,
        "num_frames": num_frames,
        "top_labels_mean": mean_labels,
        "top_labels_max": max_labels,
        "model": model_identity,
        "config_id": config_id,
        "sidecar": acc.sidecar,  # written only when the schema has the column (--archive_sidecar)
    }


class CombineFileReports(beam.CombineFn):
    """Merges FileEntry / UnitReport / ScoreStats of one URI into a FileAccumulator."""

    def create_accumulator(self) -> FileAccumulator:
        return FileAccumulator()

    def add_input(self, acc: FileAccumulator, item) -> FileAccumulator:
        return _merge_into(acc, item)

    def merge_accumulators(self, accumulators) -> FileAccumulator:
        merged = FileAccumulator()
        for acc in accumulators:
            _merge_into(merged, acc)
        return merged

    def extract_output(self, acc: FileAccumulator) -> FileAccumulator:
        return acc


class MakeFileRows(beam.DoFn):
    """(uri, FileAccumulator) -> files row, counting outcomes in Beam metrics (Dataflow's UI shows them)."""

    def __init__(self, model_rate: int, class_names: tuple[str, ...], model_identity: str, config_id: str):
        self._row_args = (model_rate, class_names, model_identity, config_id)

    def process(self, element):
        uri, acc = element
        for row in file_rows(uri, acc, *self._row_args):
            beam.metrics.Metrics.counter("files", row["status"]).inc()
            if row["status"] != STATUS_OK:
                beam.metrics.Metrics.counter("failures", error_kind(row["error"])).inc()
            yield row
