"""Model outputs -> Arrow tables of frames rows, built column-wise (never row by row).

Also ``CoalesceTables``: Beam's Parquet sink writes every incoming table as
its own row group, so small per-batch tables are merged first into row groups
of a size readers like.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from audio_models.logmel_features import logmel_statistics
from audio_models.spec import EMBEDDING, LOGMEL, SCORES, ModelSpec
from schemas.tables import TOP_CLASS, FrameColumns, config_id, frames_schema
from transforms.tagging.bundle_outputs import in_global_window


def _list_column(values: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    """[rows, width] -> list<value_type> without a Python loop."""
    rows, width = values.shape[0], int(np.prod(values.shape[1:]))
    offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * np.int32(width))  # width may be 0 (no scores)
    flat = pa.array(values.reshape(-1).astype(value_type.to_pandas_dtype(), copy=False), type=value_type)
    return pa.ListArray.from_arrays(offsets, flat)


class FrameTableBuilder:
    """Builds frames tables for one model and one choice of optional columns."""

    def __init__(self, spec: ModelSpec, columns: FrameColumns, config: str | None = None):
        self.spec = spec
        self.columns = columns
        self.schema = frames_schema(spec, columns, config)
        self._labels = pa.array(spec.class_names, pa.string())
        self._config_id = config or config_id(spec)

    @property
    def needs_logmel(self) -> bool:
        return self.columns.logmel_stats or self.columns.logmel_patch

    def build(self, uris: list[str], frame_index: np.ndarray, outputs: dict[str, np.ndarray],
              channels: list[int | None] | None = None) -> pa.Table:
        """``channels``: each row's channel of its file (None, or omitted: channels mixed)."""
        n = len(uris)
        hop_s, window_s = self.spec.hop_s, self.spec.window_s
        start = frame_index.astype(np.float64) * hop_s
        columns = {
            "uri": pa.array(uris, pa.string()),
            "channel": pa.array(channels if channels is not None else [None] * n, pa.int32()),
            "frame_index": pa.array(frame_index.astype(np.int32)),
            "start_s": pa.array(start),
            "end_s": pa.array(start + window_s),
        }
        scores = outputs[SCORES]
        if not self.columns.scores:
            pass
        elif self.columns.top_k > 0:
            columns["top_classes"] = self._top_classes(scores)
        else:
            columns["scores"] = _list_column(scores, pa.float32())
        if self.spec.embedding_dim > 0:
            columns["embedding"] = _list_column(outputs[EMBEDDING],
                                                pa.from_numpy_dtype(self.columns.embedding_dtype))
        if self.columns.logmel_stats:
            columns["logmel_stats"] = _list_column(logmel_statistics(outputs[LOGMEL]), pa.float32())
        if self.columns.logmel_patch:
            columns["logmel_patch"] = _list_column(outputs[LOGMEL], pa.float16())
        columns["model"] = pa.array([self.spec.identity] * n, pa.string())
        columns["config_id"] = pa.array([self._config_id] * n, pa.string())
        return pa.Table.from_arrays([columns[f.name] for f in self.schema], schema=self.schema)

    def _top_classes(self, scores: np.ndarray) -> pa.ListArray:
        k = min(self.columns.top_k, scores.shape[1])
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        flat_index = top.reshape(-1)
        structs = pa.StructArray.from_arrays(
            [pa.array(flat_index.astype(np.int32)),
             self._labels.take(pa.array(flat_index)),
             pa.array(np.take_along_axis(scores, top, axis=1).reshape(-1).astype(np.float32))],
            fields=list(TOP_CLASS))
        offsets = pa.array(np.arange(0, (scores.shape[0] + 1) * k, k, dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, structs)


class CoalesceTables(beam.DoFn):
    """Concatenates small tables of a bundle into tables of about ``target_bytes``.

    With ``sort_by``, each table is sorted, so Parquet row-group statistics let
    readers that filter on those columns (e.g. one URI) skip most row groups.
    """

    def __init__(self, target_bytes: int = 48 * 1024 * 1024, sort_by: tuple[str, ...] = ()):
        self._target_bytes = target_bytes
        self._sort_by = list(sort_by)

    def start_bundle(self):
        self._tables: list[pa.Table] = []
        self._bytes = 0

    def process(self, table: pa.Table):
        self._tables.append(table)
        self._bytes += table.nbytes
        if self._bytes >= self._target_bytes:
            yield self._flush()

    def finish_bundle(self):
        if self._tables:
            yield in_global_window(self._flush())

    def _flush(self) -> pa.Table:
        # No copy of the rows (the Parquet writer cuts row groups by rows, not by chunks): they are
        # put in order by moving runs of them.  A gather of every list value (``take``) took most of
        # this step's time, and each copy of a 48 MB table added to the worker's peak memory.
        table = pa.concat_tables(self._tables)
        self._tables, self._bytes = [], 0
        return in_order(table, self._sort_by) if self._sort_by else table


def _ascending(table: pa.Table, columns: list[str]) -> np.ndarray:
    """``[rows - 1]``: whether each row is <= the next in the order of ``columns`` (compared in turn)."""
    rows = table.num_rows
    if rows < 2:
        return np.ones(0, bool)
    ascending = np.zeros(rows - 1, bool)
    tied = np.ones_like(ascending)  # equal to the next row on every column so far
    for name in columns:
        column = table.column(name)
        before, after = column.slice(0, rows - 1), column.slice(1)
        less = _known(pc.less(before, after))
        ascending |= tied & less
        tied &= _same(before, after)
        if not tied.any():
            break
    return ascending | tied


def _known(comparison) -> np.ndarray:
    """A comparison as booleans, null (a null operand, e.g. a mixed run's ``channel``) as False."""
    return pc.fill_null(comparison, False).to_numpy(zero_copy_only=False).astype(bool)


def _same(before, after) -> np.ndarray:
    """Equal, with two nulls equal too."""
    both_null = pc.and_(pc.is_null(before), pc.is_null(after))
    return pc.or_(pc.fill_null(pc.equal(before, after), False), both_null).to_numpy(
        zero_copy_only=False).astype(bool)


def is_sorted(table: pa.Table, columns: list[str]) -> bool:
    """Whether the rows are in ascending order of ``columns`` (compared in turn, as ``sort_by`` does)."""
    return bool(_ascending(table, columns).all())


def in_order(table: pa.Table, columns: list[str]) -> pa.Table:
    """The rows in ascending order of ``columns``, as zero-copy slices where they come in runs.

    A run is rows equal on every column but the last and ascending on it (frames of one file).
    A bundle's frames come in such runs (decoded units interleave chunk by chunk) while the runs
    come in any order: they are sorted by their first row and the result is made of zero-copy
    slices.  (Pass it on typed ``ARROW_TABLE``: Beam's default coder would pickle it to measure
    it, and a pickled slice carries its whole parent buffer.)  Runs that overlap (the same file's
    frames in an order no run sort fixes) fall back to ``sort_by``, which copies.
    """
    if is_sorted(table, columns):
        return table
    rows = table.num_rows
    same_run = _ascending(table, columns[-1:])
    for name in columns[:-1]:
        column = table.column(name)
        same_run &= _same(column.slice(0, rows - 1), column.slice(1))
    starts = np.concatenate([[0], np.flatnonzero(~same_run) + 1])
    ends = np.concatenate([starts[1:], [rows]])
    firsts = table.select(columns).take(pa.array(starts)).to_pylist()
    # (is-not-null, value): nulls first, as ``_known`` never calls a null less than a value
    runs = sorted(zip(firsts, starts, ends),
                  key=lambda run: [(run[0][c] is not None, run[0][c]) for c in columns])
    pieces = [table.slice(int(start), int(end - start)) for _, start, end in runs]
    moved = pa.concat_tables(pieces)
    if is_sorted(moved, columns):
        return moved
    return table.sort_by([(column, "ascending") for column in columns])
