"""Per-class event thresholds chosen on labelled spans (pure functions).

For each class, the candidate thresholds with the best event F1 against the labelled spans: a
detection counts when it matches a span of its class one to one (``event_matching``), so F1 is
``2 * matched / (detections + spans)``.  Candidates are a small grid, ``on`` with ``off = on / 2``,
a minimum duration and a merge gap (a sound with pauses, such as a dog barking three times, is one
labelled span and several events without one); the defaults come first, so a class that no
candidate improves keeps them.  The result is written as a thresholds file that ``beam_jobs.events``
(``--thresholds``) and ``tag_audio --event_thresholds`` read.

The F1 a tuning reports is measured on the spans it was tuned on: optimistic.  Figures to quote come
from other recordings (train_head tunes on its eval split and reports the test split).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
from collections.abc import Callable, Mapping, Sequence

from transforms.answers.event_matching import match_by_overlap
from transforms.answers.thresholds import DEFAULT_ROW, FIELDS, ClassThresholds

DEFAULTS = ClassThresholds()  # what the events job uses without a thresholds file
GRID_ON = (0.2, 0.3, 0.5, 0.7)
GRID_MIN_DURATION_S = (0.0, 0.5)
GRID_MERGE_GAP_S = (0.0, 1.0, 2.0)


def candidates(default: ClassThresholds = DEFAULTS) -> list[ClassThresholds]:
    """``default`` first, then the grid (smoothing as in ``default``)."""
    grid = [ClassThresholds(on, on / 2, min_duration, gap, default.smooth_s)
            for on, min_duration, gap in itertools.product(GRID_ON, GRID_MIN_DURATION_S, GRID_MERGE_GAP_S)]
    return [default, *(c for c in grid if c != default)]


@dataclasses.dataclass(frozen=True)
class EventScore:
    """Detections of one class against its labelled spans."""

    truths: int
    detections: int
    matched: int

    @property
    def precision(self) -> float | None:
        return self.matched / self.detections if self.detections else None

    @property
    def recall(self) -> float | None:
        return self.matched / self.truths if self.truths else None

    @property
    def f1(self) -> float:
        total = self.detections + self.truths
        return 2 * self.matched / total if total else 0.0

    def to_document(self) -> dict:
        return {"truths": self.truths, "detections": self.detections, "matched": self.matched,
                "precision": self.precision, "recall": self.recall, "f1": self.f1}


def score_events(detections: Sequence[Mapping], truths: Sequence[Mapping], label: str) -> EventScore:
    """``label``'s detections against its truths; rows have file, class, start_s and end_s."""
    said = [d for d in detections if d["class"] == label]
    wanted = [t for t in truths if t["class"] == label]
    return EventScore(len(wanted), len(said), len(match_by_overlap(said, wanted)))


@dataclasses.dataclass(frozen=True)
class TunedClass:
    thresholds: ClassThresholds
    score: EventScore  # on the spans it was tuned on


def tune_thresholds(detect: Callable[[ClassThresholds], Sequence[Mapping]], truths: Sequence[Mapping],
                    classes: Sequence[str], default: ClassThresholds = DEFAULTS
                    ) -> dict[str, TunedClass]:
    """Per class of ``classes`` that has labelled spans in ``truths``, the candidate (``candidates``)
    with the best F1; ties keep the earlier one.  ``detect(thresholds)``: the detections of every class
    of ``classes`` with those thresholds."""
    labelled = [label for label in classes if any(t["class"] == label for t in truths)]
    best: dict[str, TunedClass] = {}
    for thresholds in candidates(default):
        found = detect(thresholds)
        for label in labelled:
            score = score_events(found, truths, label)
            if label not in best or score.f1 > best[label].score.f1:
                best[label] = TunedClass(thresholds, score)
    return best


def thresholds_csv(per_class: Mapping[str, ClassThresholds], default: ClassThresholds = DEFAULTS
                   ) -> str:
    """A thresholds file (``transforms.answers.thresholds``): the default row, then one row per class."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("class", *FIELDS))
    for name, thresholds in [(DEFAULT_ROW, default), *per_class.items()]:
        writer.writerow((name, *(f"{getattr(thresholds, field):g}" for field in FIELDS)))
    return text.getvalue()
