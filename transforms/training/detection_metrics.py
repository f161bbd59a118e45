"""Per-class precision, recall and average precision of a head, at frame and at event level (pure functions).

Accuracy on frames says little when most frames are negatives: always saying
``_negative_`` scores high.  So each class gets, on its own:

- **frame level**: precision and recall of the arg-max prediction, and the
  average precision (AP) of the class's score as a ranking of the frames
  (positives: frames labelled with the class);
- **event level** (labels given as time spans): events detected in the head's
  frame scores per recording with ``transforms.answers.events``, matched one to
  one by overlap to the labelled spans (``transforms.answers.event_matching``,
  the events benchmarks' matching).  Precision and recall at the events job's
  default thresholds (``OPERATING``); AP over the detections at low thresholds
  (``RANKING``) ranked by peak score, each labelled span counting once;

each beside the same numbers for a trivial baseline that gives every frame the
majority label (``majority_scores``; its score is 1 for that label and 0 for
the others, so its frame AP is each class's share of the frames).

AP is not interpolated: the sum over distinct scores, highest first, of the
recall gained at that score times the precision there; tied scores are one
step, so a constant score gets the share of positives.  A number with nothing
to divide by (precision without predictions, recall or AP without positives)
is None, never 0 or 1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from transforms.answers.event_matching import match_by_overlap
from transforms.answers.events import events_from_scores
from transforms.answers.threshold_tuning import DEFAULTS, score_events
from transforms.answers.thresholds import ClassThresholds, EventRules

OPERATING = DEFAULTS  # on 0.5, off 0.3: what beam_jobs.events uses without a thresholds file
RANKING = ClassThresholds(on=0.2, off=0.1)  # low thresholds: the detections AP ranks


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator else None


def average_precision(scores: Sequence[float], hits: Sequence[bool], positives: int | None = None
                      ) -> float | None:
    """AP of ``scores`` as a ranking whose true items are ``hits``; ``positives`` (default: the hits)
    counts true items that no score found too (labelled events never detected)."""
    scores, hits = np.asarray(scores, np.float64), np.asarray(hits, bool)
    total = int(hits.sum()) if positives is None else int(positives)
    if total == 0:
        return None
    if scores.size == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    ranked, found = scores[order], hits[order]
    step_ends = np.r_[np.flatnonzero(np.diff(ranked) != 0), ranked.size - 1]  # last row of each score
    true_positives = np.cumsum(found)[step_ends]
    precision = true_positives / (step_ends + 1)
    recall = true_positives / total
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def frame_metrics(probabilities: np.ndarray, label_ids: np.ndarray, labels: Sequence[str]) -> dict:
    """label -> support (frames labelled so), predicted (frames predicted so), precision, recall, AP."""
    probabilities = np.asarray(probabilities)
    label_ids = np.asarray(label_ids, np.int64)
    predicted = probabilities.argmax(axis=1) if len(label_ids) else np.zeros(0, np.int64)
    rows = {}
    for i, label in enumerate(labels):
        truth, said = label_ids == i, predicted == i
        hits = int((truth & said).sum())
        rows[label] = {"support": int(truth.sum()), "predicted": int(said.sum()),
                       "precision": _ratio(hits, said.sum()), "recall": _ratio(hits, truth.sum()),
                       "average_precision": average_precision(probabilities[:, i], truth)}
    return rows


def majority_label(counts: dict[str, int]) -> str:
    """The label with the most examples (the first in name order on a tie)."""
    return min(counts, key=lambda label: (-counts[label], label))


def majority_scores(rows: int, num_classes: int, majority: int) -> np.ndarray:
    """The baseline's scores: 1 for the majority label on every row, 0 for the others."""
    scores = np.zeros((rows, num_classes), np.float32)
    scores[:, majority] = 1.0
    return scores


# --- frames of a split, in recordings -------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SplitFrames:
    """A split's frame rows and a model's class probabilities for them (rows in any order)."""

    uris: np.ndarray  # per row: the uri, or an int code into ``names``
    frame_index: np.ndarray  # int64
    label_ids: np.ndarray  # int64
    probabilities: np.ndarray  # float32 [rows, classes]
    names: tuple[str, ...] | None = None  # uri of each code, when ``uris`` holds codes (less memory)

    def with_scores(self, probabilities: np.ndarray) -> SplitFrames:
        return dataclasses.replace(self, probabilities=probabilities)

    def recordings(self):
        """(uri, row indices in frame order) per recording."""
        order = np.lexsort((self.frame_index, self.uris))
        uris = self.uris[order]
        bounds = np.flatnonzero(uris[1:] != uris[:-1]) + 1
        for rows in np.split(order, bounds) if order.size else []:
            key = self.uris[rows[0]]
            yield (self.names[int(key)] if self.names is not None else str(key)), rows

    def segments(self):
        """(uri, label id, row indices) per run of consecutive frames of one label: a labelled span (or
        spans of one label that touch), or a stretch of negatives between spans."""
        for uri, rows in self.recordings():
            labels, index = self.label_ids[rows], self.frame_index[rows]
            cuts = np.flatnonzero((labels[1:] != labels[:-1]) | (np.diff(index) != 1)) + 1
            for piece in np.split(rows, cuts):
                yield uri, int(self.label_ids[piece[0]]), piece


def segment_confusion(frames: SplitFrames, num_classes: int) -> np.ndarray:
    """[true, predicted] counts over segments (``SplitFrames.segments``); a segment's prediction is the
    arg-max of its frames' mean probability, as a clip's is."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    for _, label, rows in frames.segments():
        matrix[label, int(frames.probabilities[rows].mean(axis=0).argmax())] += 1
    return matrix


# --- events ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class FrameTiming:
    """Where frame ``k`` of a recording lies: ``[k * hop_s, k * hop_s + window_s)``."""

    hop_s: float
    window_s: float


def detections(frames: SplitFrames, labels: Sequence[str], classes: Sequence[str], timing: FrameTiming,
               thresholds: ClassThresholds, per_class: Mapping[str, ClassThresholds] | None = None
               ) -> list[dict]:
    """Events of ``classes`` in every recording of the split: file, class, start_s, end_s, score (peak);
    a class of ``per_class`` with its own thresholds, the others with ``thresholds``."""
    rules = EventRules(thresholds, tuple((per_class or {}).items()), classes=tuple(classes))
    found = []
    for uri, rows in frames.recordings():
        start = frames.frame_index[rows] * timing.hop_s
        for event in events_from_scores(start, start + timing.window_s, frames.probabilities[rows], labels,
                                        timing.hop_s, rules):
            found.append({"file": uri, "class": event.label, "start_s": event.start_s, "end_s": event.end_s,
                          "score": event.peak_score})
    return found


def event_metrics(frames: SplitFrames, truths: Sequence[dict], labels: Sequence[str], classes: Sequence[str],
                  timing: FrameTiming) -> dict:
    """label -> truths (labelled spans), detections, matched, precision, recall (at ``OPERATING``) and AP
    (detections at ``RANKING`` by peak score), for each of ``classes``.  ``truths`` rows: file (the uri),
    class, start_s, end_s."""
    operating = detections(frames, labels, classes, timing, OPERATING)
    ranking = detections(frames, labels, classes, timing, RANKING)
    rows = {}
    for label in classes:
        at_operating = score_events(operating, truths, label).to_document()
        del at_operating["f1"]
        wanted = [t for t in truths if t["class"] == label]
        ranked = [d for d in ranking if d["class"] == label]
        hit = np.zeros(len(ranked), bool)
        hit[[d_i for d_i, _ in match_by_overlap(ranked, wanted)]] = True
        rows[label] = {**at_operating,
                       "average_precision": average_precision([d["score"] for d in ranked], hit, len(wanted))}
    return rows
