"""From tagged frames and a labels file to labelled rows of a training set.

Pure functions first (labels parsing and matching, split assignment, pooling,
the tf.Transform ``preprocessing_fn``), then the thin Beam shells the
``build_training_set`` job wires together.

Labels: a CSV with a path (or URI), a label and optionally a fold.  A frames
URI takes the label of the row whose path equals it or is its longest suffix
on '/' boundaries, so ``audio/1-100032-A.ogg`` labels
``gs://bucket/esc10/audio/1-100032-A.ogg`` and ``/data/esc10/audio/1-100032-A.ogg``.

Rows may also name a time span (``uri,start_s,end_s,label``): the frames of
that file that overlap a span take its label (the span they overlap most, when
several do); its other frames are left out, or become negatives of a label of
the user's choice (``negative_label``).  A file is labelled either whole or by
spans, and all rows of one file share its fold.

Splits are decided per URI (by fold, or by a salted SHA-256 of the URI), never
per frame, so the frames of one clip always land in one split.  The one
exception is eval carved from few long files labelled by time spans
(``SplitRule.eval_from``): there, stretches of each training file are eval,
whole spans at a time, with a gap of frames in no split around them.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import io
from collections.abc import Iterable, Iterator, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam import pvalue

import storage
from schemas import training as ts
from transforms.output.layout import run_of_path

# Accepted header names of the labels CSV, per role.
PATH_HEADERS = ("path", "uri", "file", "filename")
LABEL_HEADERS = ("label", "class", "category")
FOLD_HEADERS = ("fold",)
START_HEADERS = ("start_s", "start", "begin_s", "begin")
END_HEADERS = ("end_s", "end")


class LabelsFileError(ValueError):
    """The labels file cannot be used as it is; ``str(e)`` says where and why."""


# --- labels -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LabelRow:
    path: str  # as written in the file, normalised (see normalise_path)
    label: str
    fold: str | None
    line: int  # 1-based line in the labels file, for messages
    start_s: float | None = None  # a span of the file, in seconds; None: the whole file
    end_s: float | None = None

    @property
    def is_span(self) -> bool:
        return self.start_s is not None


@dataclasses.dataclass(frozen=True)
class LabelTable:
    rows: tuple[LabelRow, ...]
    has_fold: bool
    source: str
    duplicate_rows: int = 0  # identical repeated rows, collapsed

    @property
    def has_spans(self) -> bool:
        return any(row.is_span for row in self.rows)

    @property
    def labels(self) -> list[str]:
        return sorted({row.label for row in self.rows})

    @property
    def folds(self) -> list[str]:
        return sorted({row.fold for row in self.rows if row.fold is not None})


def normalise_path(path: str) -> str:
    path = path.strip().replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return path


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_labels(text: str, source: str = "labels") -> LabelTable:
    """Parses a labels CSV: header ``path,label[,fold]`` or ``uri,start_s,end_s,label[,fold]`` (or those
    columns without a header)."""
    records = [(i + 1, row) for i, row in enumerate(csv.reader(io.StringIO(text)))
               if row and any(cell.strip() for cell in row)]
    if not records:
        raise LabelsFileError(f"{source} is empty: expected rows of path,label[,fold]")
    header = [cell.strip().lower() for cell in records[0][1]]
    start_col = end_col = None
    if any(name in LABEL_HEADERS for name in header):
        path_col = _column(header, PATH_HEADERS, source)
        label_col = _column(header, LABEL_HEADERS, source)
        fold_col = next((header.index(n) for n in FOLD_HEADERS if n in header), None)
        start_col = next((header.index(n) for n in START_HEADERS if n in header), None)
        end_col = next((header.index(n) for n in END_HEADERS if n in header), None)
        if (start_col is None) != (end_col is None):
            raise LabelsFileError(f"{source}: a time span needs both a start_s and an end_s column")
        records = records[1:]
    elif len(records[0][1]) >= 4 and all(_is_number(c.strip()) for c in records[0][1][1:3]):
        path_col, start_col, end_col, label_col = 0, 1, 2, 3  # no header: uri,start_s,end_s,label[,fold]
        fold_col = 4 if len(records[0][1]) > 4 else None
    else:  # no header: positional path,label[,fold]
        path_col, label_col = 0, 1
        fold_col = 2 if len(records[0][1]) > 2 else None

    by_key: dict[tuple, LabelRow] = {}
    duplicates = 0
    problems: list[str] = []
    for line, row in records:
        cells = [cell.strip() for cell in row]
        needed = max(path_col, label_col)
        if len(cells) <= needed or not cells[path_col] or not cells[label_col]:
            problems.append(f"line {line}: needs a path and a label, got {row!r}")
            continue
        fold = cells[fold_col] if fold_col is not None and fold_col < len(cells) and cells[fold_col] else None
        span, problem = _span(cells, start_col, end_col)
        if problem:
            problems.append(f"line {line}: {problem}")
            continue
        entry = LabelRow(normalise_path(cells[path_col]), cells[label_col], fold, line, *span)
        key = (entry.path, entry.start_s, entry.end_s)
        previous = by_key.get(key)
        if previous is None:
            by_key[key] = entry
        elif (previous.label, previous.fold) == (entry.label, entry.fold):
            duplicates += 1
        else:
            problems.append(f"line {line}: {entry.path}{_span_text(entry)} is labelled {entry.label!r} "
                            f"(fold {entry.fold}) but line {previous.line} says {previous.label!r} "
                            f"(fold {previous.fold})")
    problems += _file_conflicts(by_key.values())
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise LabelsFileError(f"{source}: {len(problems)} unusable row(s): {shown}")
    if not by_key:
        raise LabelsFileError(f"{source} has a header but no rows")
    return LabelTable(tuple(by_key.values()), fold_col is not None, source, duplicates)


def _span(cells: list[str], start_col: int | None, end_col: int | None
          ) -> tuple[tuple[float | None, float | None], str | None]:
    """((start_s, end_s), problem): (None, None) for a whole-file row (no span columns, or both empty)."""
    if start_col is None or end_col is None:
        return (None, None), None
    start = cells[start_col] if start_col < len(cells) else ""
    end = cells[end_col] if end_col < len(cells) else ""
    if not start and not end:
        return (None, None), None
    if not (_is_number(start) and _is_number(end)):
        return (None, None), f"start_s and end_s must both be seconds, got {start!r} and {end!r}"
    if not 0 <= float(start) < float(end):
        return (None, None), f"needs 0 <= start_s < end_s, got {start} and {end}"
    return (float(start), float(end)), None


def _span_text(row: LabelRow) -> str:
    return f" [{row.start_s:g}, {row.end_s:g}] s" if row.is_span else ""


def _file_conflicts(rows: Iterable[LabelRow]) -> list[str]:
    """A file is labelled whole or by spans, and in one fold."""
    by_path: dict[str, list[LabelRow]] = {}
    for row in rows:
        by_path.setdefault(row.path, []).append(row)
    problems = []
    for path, entries in by_path.items():
        if len(entries) < 2:
            continue
        first = min(entries, key=lambda r: r.line)
        if any(not r.is_span for r in entries):
            problems.append(f"line {first.line}: {path} has a whole-file label and other rows; label it "
                            "whole or by time spans")
        elif len({r.fold for r in entries}) > 1:
            problems.append(f"line {first.line}: the spans of {path} are in different folds "
                            f"({', '.join(sorted(str(r.fold) for r in entries))}); a file is in one fold")
    return problems


def _column(header: list[str], names: tuple[str, ...], source: str) -> int:
    for name in names:
        if name in header:
            return header.index(name)
    raise LabelsFileError(f"{source}: the header {header} has no {' or '.join(names)} column")


def read_labels(path: str) -> LabelTable:
    """Reads and parses a labels CSV from a local path or ``gs://`` URI."""
    try:
        text = storage.read_bytes(path).decode("utf-8-sig")
    except Exception as e:  # missing file, no access: one line for the user
        raise LabelsFileError(f"cannot read labels file {path}: {' '.join(str(e).split())[:200]}") from None
    return parse_labels(text, path)


class LabelIndex:
    """Finds a URI's label rows: exact match, else the longest path suffix on '/' boundaries."""

    def __init__(self, table: LabelTable):
        self._rows: dict[str, list[LabelRow]] = {}
        for row in table.rows:
            self._rows.setdefault(row.path, []).append(row)

    def match(self, uri: str) -> LabelRow | None:
        """The URI's label row (its first, for a file labelled by spans)."""
        rows = self.match_rows(uri)
        return rows[0] if rows else None

    def match_rows(self, uri: str) -> list[LabelRow] | None:
        """Every row of the path that labels ``uri``: one whole-file row, or its spans."""
        for candidate in uri_suffixes(uri):
            rows = self._rows.get(candidate)
            if rows is not None:
                return rows
        return None


def span_labels(start_s: np.ndarray, end_s: np.ndarray, spans: Sequence[LabelRow],
                negative_label: str | None = None) -> list[str | None]:
    """Per frame ``[start_s, end_s)``: the label of the span it overlaps most (the first such span on a
    tie), else ``negative_label`` (None: the frame is left out)."""
    best = np.zeros(len(start_s))
    chosen = np.full(len(start_s), -1)
    for i, span in enumerate(spans):
        overlap = np.minimum(end_s, span.end_s) - np.maximum(start_s, span.start_s)
        better = overlap > best
        best[better], chosen[better] = overlap[better], i
    return [spans[i].label if i >= 0 else negative_label for i in chosen]


def uri_suffixes(uri: str) -> Iterator[str]:
    """``uri`` itself, then its path suffixes from longest to shortest."""
    yield uri
    path = uri.split("://", 1)[1] if "://" in uri else uri
    parts = path.split("/")
    for start in range(len(parts)):
        suffix = "/".join(parts[start:])
        if suffix and suffix != uri:
            yield suffix


# --- splits -------------------------------------------------------------------------------------

EVAL_FROM_FILES, EVAL_FROM_TIME_BLOCKS, EVAL_FROM_AUTO = "files", "time_blocks", "auto"
EVAL_FROM = (EVAL_FROM_AUTO, EVAL_FROM_FILES, EVAL_FROM_TIME_BLOCKS)
MIN_EVAL_FILES = 3  # auto: fewer eval files than this by URI hash, and spans to cut by: eval from time blocks


@dataclasses.dataclass(frozen=True)
class SplitRule:
    """Fold lists (when any is given) or hash percentages; eval may be carved from train by hash, or from
    time blocks within the training files (``eval_from``, see ``eval_regions``)."""

    train_folds: tuple[str, ...] = ()
    eval_folds: tuple[str, ...] = ()
    test_folds: tuple[str, ...] = ()
    eval_percent: float = 10.0
    test_percent: float = 10.0
    salt: str = ""
    eval_from: str = EVAL_FROM_FILES  # files | time_blocks | auto (resolved by ``resolved`` before a run)
    eval_block_s: float = 10.0  # time blocks: one block of this length in every block_s / eval share
    eval_gap_s: float = 1.0  # time blocks: frames this close to an eval block go to no split

    def __post_init__(self):
        named = [set(self.train_folds), set(self.eval_folds), set(self.test_folds)]
        if (named[0] & named[1]) or (named[0] & named[2]) or (named[1] & named[2]):
            raise ValueError("a fold can be in only one of --train_folds, --eval_folds, --test_folds")
        if not 0 <= self.eval_percent < 100 or not 0 <= self.test_percent < 100 or \
                self.eval_percent + self.test_percent >= 100:
            raise ValueError("--eval_percent and --test_percent must be >= 0 and leave room for training")
        if self.eval_from not in EVAL_FROM:
            raise ValueError(f"--eval_from must be one of {', '.join(EVAL_FROM)}")
        if self.eval_block_s <= 0 or self.eval_gap_s < 0:
            raise ValueError("--eval_block_s must be > 0 and --eval_gap_s >= 0")

    @property
    def eval_by_time(self) -> bool:
        return self.eval_from == EVAL_FROM_TIME_BLOCKS

    @property
    def eval_period_s(self) -> float:
        """Time blocks: each period of this length holds one eval block."""
        return self.eval_block_s * 100.0 / self.eval_percent

    def resolved(self, table: LabelTable) -> SplitRule:
        """``auto`` made concrete: time blocks when the labels are time spans, eval is carved from the
        training files, and the URI hash would give it fewer than MIN_EVAL_FILES files; else files.
        Raises LabelsFileError for time blocks without spans."""
        carved = not self.eval_folds and self.eval_percent > 0
        if self.eval_from == EVAL_FROM_TIME_BLOCKS:
            if not table.has_spans:
                raise LabelsFileError(f"--eval_from time_blocks needs rows with time spans; {table.source} "
                                      "labels whole files only")
            if not carved:
                raise LabelsFileError("--eval_from time_blocks carves eval from the training files: it needs "
                                      "--eval_percent > 0 and no --eval_folds")
            return self
        if self.eval_from == EVAL_FROM_FILES:
            return self
        expected = self.training_files(table) * self.eval_percent / 100.0
        blocks = carved and table.has_spans and expected < MIN_EVAL_FILES
        return dataclasses.replace(self, eval_from=EVAL_FROM_TIME_BLOCKS if blocks else EVAL_FROM_FILES)

    def training_files(self, table: LabelTable) -> float:
        """Labelled files that would be trained on (by hash: the expected number)."""
        folds = {row.path: row.fold for row in table.rows}
        if not self.by_fold:
            return len(folds) * (100.0 - self.test_percent) / 100.0
        named = set(self.eval_folds) | set(self.test_folds)
        return sum(1 for fold in folds.values() if fold not in named and
                   (not self.train_folds or fold in self.train_folds))

    def eval_regions(self, uri: str, spans: Sequence[LabelRow], until_s: float) -> list[tuple[float, float]]:
        """Time blocks: the eval stretches of a training file, ``[start_s, end_s]`` in time order.

        In each period of ``eval_period_s`` one block of ``eval_block_s`` at a place picked by a hash of
        the URI and the period, widened to whole spans where a span crosses its edge (an event is in one
        split), merged where they meet.  ``until_s``: the end of the frames at hand; spans are taken whole
        into account, so every piece of a file gets the same regions.
        """
        if not self.eval_by_time:
            return []
        period, block = self.eval_period_s, self.eval_block_s
        last = max([until_s, *(s.end_s for s in spans if s.is_span)])
        regions = []
        for k in range(int(last // period) + 2):
            start = k * period + uri_fraction(f"{uri}#{k}", self.salt) * max(period - block, 0.0)
            end = start + block
            moved = True
            while moved:  # spans crossing an edge join the block (spans may chain)
                moved = False
                for span in spans:
                    if span.is_span and span.start_s < start < span.end_s:
                        start, moved = span.start_s, True
                    if span.is_span and span.start_s < end < span.end_s:
                        end, moved = span.end_s, True
            if regions and start <= regions[-1][1]:
                regions[-1] = (regions[-1][0], max(end, regions[-1][1]))
            else:
                regions.append((start, end))
        return regions

    def frame_splits(self, regions: Sequence[tuple[float, float]], start_s: np.ndarray, end_s: np.ndarray
                     ) -> list[str | None]:
        """Per frame of a training file: eval inside an eval region, None within ``eval_gap_s`` of one
        (neither split sees audio next to the other's), else train."""
        splits: list[str | None] = [ts.TRAIN] * len(start_s)
        for a, b in regions:
            inside = (start_s >= a) & (end_s <= b)
            near = (start_s < b + self.eval_gap_s) & (end_s > a - self.eval_gap_s)
            for i in np.flatnonzero(near):
                splits[i] = ts.EVAL if inside[i] else None
        return splits

    def span_split(self, regions: Sequence[tuple[float, float]], span: LabelRow) -> str:
        return ts.EVAL if any(a <= span.start_s and span.end_s <= b for a, b in regions) else ts.TRAIN

    @property
    def by_fold(self) -> bool:
        return bool(self.train_folds or self.eval_folds or self.test_folds)

    def assign(self, uri: str, fold: str | None) -> str | None:
        """The split of a labelled URI; None when its fold is in none of the named lists."""
        share = uri_fraction(uri, self.salt) * 100.0
        if not self.by_fold:
            if share < self.test_percent:
                return ts.TEST
            eval_share = 0.0 if self.eval_by_time else self.eval_percent
            return ts.EVAL if share < self.test_percent + eval_share else ts.TRAIN
        if fold in self.test_folds:
            return ts.TEST
        if fold in self.eval_folds:
            return ts.EVAL
        if self.train_folds and fold not in self.train_folds:
            return None
        if not self.eval_folds and not self.eval_by_time and share < self.eval_percent:
            return ts.EVAL  # carved from the training folds, whole clips only
        return ts.TRAIN

    def describe(self) -> str:
        blocks = (f"time blocks of the training files ({self.eval_block_s:g} s in every "
                  f"{self.eval_period_s:g} s, widened to whole spans; frames within {self.eval_gap_s:g} s of "
                  f"a block in no split)") if self.eval_by_time else ""
        if not self.by_fold:
            eval_ = f"eval from {blocks}" if blocks else f"{self.eval_percent:g}% eval"
            return f"by SHA-256 of the URI: {self.test_percent:g}% test, {eval_}, rest train"
        train = ",".join(self.train_folds) or "every other fold"
        eval_ = (",".join(self.eval_folds) or blocks
                 or f"{self.eval_percent:g}% of the training clips by URI hash")
        return f"by fold: train {train}; eval {eval_}; test {','.join(self.test_folds) or 'none'}"

    def check_folds(self, table: LabelTable) -> None:
        if not self.by_fold:
            return
        if not table.has_fold:
            raise LabelsFileError(f"{table.source} has no fold column, so --train_folds/--eval_folds/"
                                  "--test_folds cannot be used (leave them out to split by URI hash)")
        unknown = sorted(set(self.train_folds + self.eval_folds + self.test_folds) - set(table.folds))
        if unknown:
            raise LabelsFileError(f"{table.source} has no rows in fold(s) {', '.join(unknown)} "
                                  f"(folds present: {', '.join(table.folds)})")


def uri_fraction(uri: str, salt: str = "") -> float:
    """A stable number in [0, 1) per URI (the same on every worker and every run)."""
    digest = hashlib.sha256(f"{salt}\0{uri}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


# --- features -----------------------------------------------------------------------------------

def frame_arrays(table: pa.Table, columns: Iterable[str], dims: Iterable[int]) -> dict[str, np.ndarray]:
    """List columns of a frames table as ``[rows, width]`` float32 arrays (widths checked)."""
    arrays = {}
    for column, dim in zip(columns, dims):
        if column not in table.column_names:
            present = ", ".join(table.column_names)
            raise ValueError(f"the frames have no {column!r} column (present: {present})")
        values = table.column(column).combine_chunks()
        lengths = values.value_lengths().to_numpy(zero_copy_only=False)
        if values.null_count or (lengths != dim).any():
            raise ValueError(f"frames column {column!r} should hold {dim} values per row")
        flat = values.flatten().to_numpy(zero_copy_only=False)
        arrays[column] = flat.astype(np.float32, copy=False).reshape(len(table), dim)
    return arrays


def pool_frames(frames: dict[str, np.ndarray], layout: ts.FeatureLayout) -> dict[str, np.ndarray]:
    """Raw clip features from a clip's frames (``{column: [n, dim]}``), per the layout's statistics."""
    pooled = {}
    for name, column, stat, _ in layout.raw_features():
        values = frames[column]
        pooled[name] = values.mean(axis=0) if stat == "mean" else values.max(axis=0)
    return {name: value.astype(np.float32) for name, value in pooled.items()}


def preprocessing_fn_for(layout: ts.FeatureLayout):
    """The tf.Transform ``preprocessing_fn``: concatenated, element-wise z-scored features and label ids.

    Keys and counts pass through so a reader can rebuild clips from frame rows.
    """
    names = layout.raw_feature_names()

    def preprocessing_fn(inputs):
        import tensorflow as tf
        import tensorflow_transform as tft

        features = tf.concat([tf.cast(inputs[name], tf.float32) for name in names], axis=1)
        return {
            ts.FEATURES: tft.scale_to_z_score(features, elementwise=True),
            ts.LABEL_ID: tft.compute_and_apply_vocabulary(inputs[ts.LABEL],
                                                          vocab_filename=ts.LABEL_VOCABULARY),
            ts.URI: tf.identity(inputs[ts.URI]),
            ts.FRAME_INDEX: tf.identity(inputs[ts.FRAME_INDEX]),
            ts.NUM_FRAMES: tf.identity(inputs[ts.NUM_FRAMES]),
        }

    return preprocessing_fn


# --- Beam shells --------------------------------------------------------------------------------

# Side outputs of AttachLabels.
UNLABELLED = "unlabelled"  # uri
EXCLUDED = "excluded"  # (uri, fold, label path): labelled, but its fold is in no split
CLIPS = "clips"  # (uri, ClipFacts) per table piece; summed per uri downstream
SPANS = "spans"  # (split, uri, label, start_s, end_s) per labelled span of a file in a split (per piece)
LEFT_OUT = "left_out"  # ClipFacts.split of frames near an eval time block, which go to no split


@dataclasses.dataclass(frozen=True)
class ClipFacts:
    split: str
    label: str
    label_path: str  # the label row's path, to find label rows that matched nothing
    frames: int


def run_of(path: str) -> str:
    """The run id of a ``.../frames/run=<id>/part.parquet`` path ('' when there is none)."""
    return run_of_path(path) or ""


class AttachLabels(beam.DoFn):
    """(file name, frames table) -> (split, raw instance) per labelled frame, plus side outputs.

    With ``latest_run`` (uri -> run id), frames of a URI tagged by several runs
    are taken from its latest run only.  Frames of a file labelled by spans take
    the label of the span they overlap; the others take ``negative_label``, or
    are left out without one.  With eval from time blocks, the frames of a
    training file go to train or eval by the time they cover (``SplitRule.eval_regions``).
    """

    def __init__(self, labels: LabelTable, rule: SplitRule, layout: ts.FeatureLayout,
                 negative_label: str | None = None):
        self._labels = labels
        self._rule = rule
        self._layout = layout
        self._negative_label = negative_label

    def setup(self):
        self._index = LabelIndex(self._labels)

    def process(self, element: tuple[str, pa.Table], latest_run: dict | None = None):
        filename, table = element
        run = run_of(filename)
        arrays = frame_arrays(table, self._layout.columns, self._layout.dims)
        uris = table.column(ts.URI).to_pylist()
        frame_index = table.column(ts.FRAME_INDEX).to_numpy(zero_copy_only=False)
        rows_by_uri: dict[str, list[int]] = {}
        for row, uri in enumerate(uris):
            rows_by_uri.setdefault(uri, []).append(row)
        for uri, rows in rows_by_uri.items():
            if latest_run and latest_run.get(uri, run) != run:
                continue
            matches = self._index.match_rows(uri)
            if matches is None:
                yield pvalue.TaggedOutput(UNLABELLED, uri)
                continue
            match = matches[0]
            split = self._rule.assign(uri, match.fold)
            if split is None:
                yield pvalue.TaggedOutput(EXCLUDED, (uri, match.fold, match.path))
                continue
            splits = [split] * len(rows)
            if match.is_span:
                times = [table.column(c).to_numpy(zero_copy_only=False)[rows] for c in ("start_s", "end_s")]
                labels = span_labels(*times, matches, self._negative_label)
                regions = self._rule.eval_regions(uri, matches, float(times[1].max())) if split == ts.TRAIN \
                    else []
                if regions:
                    splits = self._rule.frame_splits(regions, *times)
                for span in matches:
                    span_split = self._rule.span_split(regions, span) if regions else split
                    yield pvalue.TaggedOutput(SPANS, (span_split, uri, span.label, span.start_s, span.end_s))
            else:
                labels = [match.label] * len(rows)
            counts = collections.Counter((s or LEFT_OUT, x) for s, x in zip(splits, labels) if x is not None)
            for (frames_split, label), count in counts.items():
                yield pvalue.TaggedOutput(CLIPS, (uri, ClipFacts(frames_split, label, match.path, count)))
            for row, label, frame_split in zip(rows, labels, splits):
                if label is None or frame_split is None:
                    continue
                # Keyed by frame column: a frame row's raw feature names are its columns' names.
                instance = {column: arrays[column][row] for column in self._layout.columns}
                instance.update({ts.LABEL: label, ts.URI: uri,
                                 ts.FRAME_INDEX: int(frame_index[row]), ts.NUM_FRAMES: 1})
                yield frame_split, instance


def pool_clip(element: tuple[tuple[str, str], Iterable[dict]], layout: ts.FeatureLayout
              ) -> tuple[str, dict]:
    """((split, uri), frame instances) -> (split, one clip instance) with pooled features."""
    (split, uri), instances = element
    instances = sorted(instances, key=lambda i: i[ts.FRAME_INDEX])
    frames = {column: np.stack([i[column] for i in instances]) for column in layout.columns}
    clip = pool_frames(frames, layout)
    clip.update({ts.LABEL: instances[0][ts.LABEL], ts.URI: uri, ts.FRAME_INDEX: -1,
                 ts.NUM_FRAMES: len(instances)})
    return split, clip


@beam.ptransform_fn
def PoolClips(rows, layout: ts.FeatureLayout):  # noqa: N802
    """(split, frame instance) -> (split, clip instance): mean/max over each URI's frames."""
    return (rows
            | "KeyByClip" >> beam.Map(lambda kv: ((kv[0], kv[1][ts.URI]), kv[1]))
            | "GroupClipFrames" >> beam.GroupByKey()
            | "Pool" >> beam.Map(pool_clip, layout))

