"""Sound events from per-frame scores: hysteresis, gap merging, minimum duration (pure functions).

Per class, over one recording's frames in order, hysteresis with two
thresholds (``off <= on``): an event is a run of consecutive frames scoring at
least ``off`` in which some frame reaches ``on``, so a dip between the two
does not cut it and the frames leading up to the peak belong to it as much as
those after it (the regions of ``skimage.filters.apply_hysteresis_threshold``,
in one dimension).  Events closer than ``merge_gap_s`` become one; events
shorter than ``min_duration_s`` are dropped.  Peak and mean score are taken
over the frames that make the event.

Time: frames overlap (YAMNet: 0.96 s windows every 0.48 s), so an event does
not run from its first window's start to its last window's end, which would
add most of a window on each side.  Each frame stands for the hop-long slot
around its window's centre (the first frame also for the audio before it);
an event spans the slots of its frames.  ``docs/answers.md`` measures how
close that comes to real onsets and offsets.

Smoothing (``smooth_s`` > 0): before the thresholds, each frame's score
becomes the mean over the frames within ``smooth_s`` around it (centred; at a
recording's ends and around missing frames, over the frames there are).  A
keyword is heard in several overlapping windows and a word that merely sounds
like one in a single window or two, so the mean keeps the first and lowers
the second; a dip in the middle of a long sound no longer cuts it in two.

Frames below ``off`` for every class selected can never start, continue or
join an event, so callers may drop them before grouping a recording's frames
(``keep_rows`` with ``keep_floor``): a missing frame index reads as a frame
below ``off``.  A smoothed class needs its neighbours' scores, so none of its
frames are dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.answers.thresholds import ClassThresholds, EventRules


@dataclasses.dataclass(frozen=True)
class Event:
    class_index: int
    label: str
    start_s: float
    end_s: float
    peak_s: float  # centre of the best-scoring frame
    peak_score: float
    mean_score: float
    num_frames: int

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclasses.dataclass(frozen=True)
class FrameTrack:
    """Some frames of one recording, in frame order: their index, window centre and the selected classes'
    scores ``[n, classes]``."""

    frame_index: np.ndarray
    centre_s: np.ndarray
    scores: np.ndarray
    channel: int | None = None  # of the recording (tag_audio --channels); None: its channels mixed

    def __len__(self) -> int:
        return int(self.frame_index.size)

    @classmethod
    def merge(cls, pieces: Iterable[FrameTrack]) -> FrameTrack:
        """Pieces of one recording (any order, from several tables) as one track in frame order; a frame
        present twice is kept once."""
        pieces = [p for p in pieces if len(p)]
        if not pieces:
            return cls(np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 0), np.float32))
        index = np.concatenate([p.frame_index for p in pieces])
        order = np.argsort(index, kind="stable")
        index = index[order]
        keep = np.ones(index.size, bool)
        keep[1:] = index[1:] != index[:-1]
        rows = order[keep]
        return cls(index[keep], np.concatenate([p.centre_s for p in pieces])[rows],
                   np.concatenate([p.scores for p in pieces])[rows], pieces[0].channel)


def keep_floor(thresholds: Sequence[ClassThresholds]) -> np.ndarray:
    """Per selected class, the score below which a frame cannot matter to its events: ``off``, or 0 for a
    smoothed class (every frame counts in its neighbours' means)."""
    return np.array([0.0 if t.smooth_s > 0 else t.off for t in thresholds], np.float32)


def keep_rows(scores: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """Rows where at least one selected class reaches its ``keep_floor``: the only frames events use."""
    return (scores >= floor[None, :]).any(axis=1) if scores.size else np.zeros(scores.shape[0], bool)


def smoothed(frame_index: np.ndarray, scores: np.ndarray, width: int) -> np.ndarray:
    """Each frame's mean score over the frames present among the ``width`` frame indices centred on it
    (``frame_index`` ascending, no repeats)."""
    if width <= 1 or scores.size == 0:
        return scores
    position = frame_index - frame_index[0]
    total = np.zeros(int(position[-1]) + 2)
    count = np.zeros_like(total)
    total[position + 1] = scores
    count[position + 1] = 1.0
    total, count = np.cumsum(total), np.cumsum(count)
    low = np.maximum(position - width // 2, 0)
    high = np.minimum(position + (width - 1) // 2 + 1, int(position[-1]) + 1)
    return ((total[high] - total[low]) / (count[high] - count[low])).astype(scores.dtype)


def _slot(frame_index: int, centre_s: float, hop_s: float) -> tuple[float, float]:
    start = 0.0 if frame_index == 0 else centre_s - hop_s / 2
    return max(start, 0.0), centre_s + hop_s / 2


def class_events(track: FrameTrack, column: int, thresholds: ClassThresholds, hop_s: float,
                 class_index: int = 0, label: str = "") -> list[Event]:
    """The events of one class (``track.scores[:, column]``), in time order."""
    scores = smoothed(track.frame_index, track.scores[:, column],
                      int(round(thresholds.smooth_s / hop_s)) if hop_s > 0 else 1)
    rows = np.flatnonzero(scores >= thresholds.off)
    if rows.size == 0:
        return []
    frames = track.frame_index[rows]
    breaks = np.flatnonzero(np.diff(frames) != 1) + 1
    merged: list[list] = []  # [start_s, end_s, peak_s, peak, frames, score sum] per event
    for begin, end in zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [rows.size]])):
        run = rows[begin:end]  # consecutive frames >= off
        values = scores[run]
        if values.max() < thresholds.on:
            continue
        best = run[int(np.argmax(values))]
        start_s, _ = _slot(int(track.frame_index[run[0]]), float(track.centre_s[run[0]]), hop_s)
        _, end_s = _slot(int(track.frame_index[run[-1]]), float(track.centre_s[run[-1]]), hop_s)
        peak_s, peak = float(track.centre_s[best]), float(scores[best])
        total = float(values.sum(dtype=np.float64))
        if merged and start_s - merged[-1][1] < thresholds.merge_gap_s:
            last = merged[-1]
            last[1] = end_s
            if peak > last[3]:
                last[2], last[3] = peak_s, peak
            last[4] += run.size
            last[5] += total
        else:
            merged.append([start_s, end_s, peak_s, peak, run.size, total])
    return [Event(class_index, label, start_s, end_s, peak_s, peak, total / n, n)
            for start_s, end_s, peak_s, peak, n, total in merged
            if end_s - start_s >= thresholds.min_duration_s]


def detect_events(track: FrameTrack, classes: Sequence[tuple[int, str, ClassThresholds]],
                  hop_s: float) -> list[Event]:
    """Events of every selected class (``track.scores`` columns in the order of ``classes``), sorted by
    start, then class."""
    events = [event for column, (index, name, thresholds) in enumerate(classes)
              for event in class_events(track, column, thresholds, hop_s, index, name)]
    return sorted(events, key=lambda e: (e.start_s, e.class_index))


def events_from_scores(start_s: Sequence[float], end_s: Sequence[float], scores: np.ndarray,
                       class_names: Sequence[str], hop_s: float, rules: EventRules | None = None
                       ) -> list[Event]:
    """Every frame of one recording in memory (``scores [frames, classes]``, rows in any order) -> its
    events, as the events table would hold them."""
    start = np.asarray(start_s, np.float64)
    classes = (rules or EventRules()).for_classes(class_names)
    columns = np.asarray(scores, np.float32)[:, [index for index, _, _ in classes]]
    track = FrameTrack.merge([FrameTrack(np.rint(start / hop_s).astype(np.int64),
                                         (start + np.asarray(end_s, np.float64)) / 2, columns)])
    return detect_events(track, classes, hop_s)


# --- frames tables -------------------------------------------------------------------------------------

def class_scores(table: pa.Table, class_indices: Sequence[int]) -> np.ndarray:
    """``[rows, len(class_indices)]`` scores of the selected classes, from a frames table's ``scores`` or,
    written with ``--top_k``, its ``top_classes`` (a class outside a frame's top k scores 0 there)."""
    rows, selected = table.num_rows, np.asarray(class_indices, np.int64)
    if "scores" in table.column_names:
        column = table.column("scores").combine_chunks()
        if rows == 0:
            return np.zeros((0, selected.size), np.float32)
        width = column.value_lengths().to_numpy(zero_copy_only=False)
        if (width != width[0]).any() or (selected.size and selected.max() >= width[0]):
            raise ValueError("frames rows hold different numbers of scores than the model has classes")
        flat = column.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(rows, int(width[0]))[:, selected].astype(np.float32, copy=False)
    if "top_classes" not in table.column_names:
        raise ValueError(f"the frames have neither scores nor top_classes (columns: {table.column_names})")
    column = table.column("top_classes").combine_chunks()
    dense = np.zeros((rows, selected.size), np.float32)
    if rows == 0 or selected.size == 0:
        return dense
    lengths = column.value_lengths().to_numpy(zero_copy_only=False)
    row_of = np.repeat(np.arange(rows), lengths)
    flat = column.flatten()
    class_of = flat.field("index").to_numpy(zero_copy_only=False).astype(np.int64)
    score = flat.field("score").to_numpy(zero_copy_only=False)
    position = np.full(int(max(class_of.max(initial=0), selected.max())) + 1, -1, np.int64)
    position[selected] = np.arange(selected.size)
    columns = position[class_of]
    hit = columns >= 0
    dense[row_of[hit], columns[hit]] = score[hit]
    return dense


def table_tracks(table: pa.Table, class_indices: Sequence[int], floor: np.ndarray
                 ) -> Iterator[tuple[str, FrameTrack]]:
    """(uri, the frames of that uri events can use) for every uri of a frames table (any row order);
    ``floor`` as ``keep_floor`` gives it.  A recording tagged per channel gives one track per channel
    (``FrameTrack.channel``), all under its uri."""
    if table.num_rows == 0:
        return
    scores = class_scores(table, class_indices)
    keep = keep_rows(scores, np.asarray(floor, np.float32))
    if not keep.any():
        return
    rows = np.flatnonzero(keep)
    kept = table.take(pa.array(rows))
    uris = kept.column("uri").combine_chunks()
    frame_index = kept.column("frame_index").to_numpy().astype(np.int64)
    centre = (kept.column("start_s").to_numpy() + kept.column("end_s").to_numpy()) / 2
    encoded = pc.dictionary_encode(uris)
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    names = encoded.dictionary.to_pylist()
    channels = np.full(len(codes), -1, np.int64)  # -1: mixed (null, or a table older than channels)
    if "channel" in kept.column_names:
        channels = pc.fill_null(kept.column("channel"), -1).to_numpy().astype(np.int64)
    group_key = codes * (int(channels.max()) + 2) + channels + 1
    order = np.argsort(group_key, kind="stable")
    bounds = np.flatnonzero(np.diff(group_key[order])) + 1
    for group in np.split(order, bounds):
        channel = int(channels[group[0]])
        piece = FrameTrack(frame_index[group], centre[group], scores[rows[group]],
                           None if channel < 0 else channel)
        yield names[codes[group[0]]], FrameTrack.merge([piece])  # in frame order
