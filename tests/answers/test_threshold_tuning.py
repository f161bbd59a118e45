"""Per-class event thresholds tuned on labelled spans: the chosen candidate, its F1, and the file it is
written as, read back by the events job's own parser."""

from __future__ import annotations

import numpy as np

from transforms.answers.events import events_from_scores
from transforms.answers.threshold_tuning import (
    DEFAULTS,
    EventScore,
    candidates,
    thresholds_csv,
    tune_thresholds,
)
from transforms.answers.thresholds import ClassThresholds, EventRules, parse_thresholds

HOP_S, WINDOW_S = 0.5, 1.0
CLASSES = ("Dog", "Baby cry, infant cry", "_negative_")


def _track(seconds: float, stretches: dict[str, list[tuple[float, float, float]]]) -> np.ndarray:
    """Scores [frames, classes]: 0.02 everywhere, ``score`` over frames whose centre is in [a, b)."""
    centres = np.arange(int(seconds / HOP_S)) * HOP_S + WINDOW_S / 2
    scores = np.full((centres.size, len(CLASSES)), 0.02, np.float32)
    for name, pieces in stretches.items():
        for a, b, score in pieces:
            scores[(centres >= a) & (centres < b), CLASSES.index(name)] = score
    return scores


# A dog barking twice with a pause, labelled as one span; a stray 0.4 blip elsewhere; a cry that
# never reaches 0.5, labelled once; nothing labelled for the background class.
SCORES = _track(60.0, {"Dog": [(10.0, 12.0, 0.9), (13.0, 15.0, 0.9), (30.0, 31.0, 0.4)],
                       "Baby cry, infant cry": [(40.0, 44.0, 0.35)]})
TRUTHS = [{"file": "r.wav", "class": "Dog", "start_s": 10.0, "end_s": 15.0},
          {"file": "r.wav", "class": "Baby cry, infant cry", "start_s": 40.0, "end_s": 44.0}]


def _detect(thresholds: ClassThresholds, per_class=()) -> list[dict]:
    start = np.arange(SCORES.shape[0]) * HOP_S
    rules = EventRules(thresholds, tuple(per_class), classes=CLASSES[:2])
    return [{"file": "r.wav", "class": e.label, "start_s": e.start_s, "end_s": e.end_s}
            for e in events_from_scores(start, start + WINDOW_S, SCORES, CLASSES, HOP_S, rules)]


def test_each_class_gets_the_candidate_with_the_best_f1_on_its_spans():
    tuned = tune_thresholds(_detect, TRUTHS, CLASSES)
    assert set(tuned) == {"Dog", "Baby cry, infant cry"}  # no spans, nothing to tune on
    dog = tuned["Dog"]
    # At the defaults the pause cuts the bark in two: 2 detections, 1 matched, F1 2/3.
    at_defaults = [d for d in _detect(DEFAULTS) if d["class"] == "Dog"]
    assert len(at_defaults) == 2
    # Merging across the 1 s pause makes one event; on stays above the stray 0.4 blip.
    assert dog.thresholds.merge_gap_s >= 1.0 and dog.thresholds.on > 0.4
    assert (dog.score.detections, dog.score.matched, dog.score.f1) == (1, 1, 1.0)
    cry = tuned["Baby cry, infant cry"]
    assert cry.thresholds.on <= 0.3 and cry.score.recall == 1.0  # the defaults never hear it
    assert not [d for d in _detect(DEFAULTS) if d["class"] == "Baby cry, infant cry"]


def test_a_class_no_candidate_improves_keeps_the_defaults():
    flat = [{"file": "r.wav", "class": "Dog", "start_s": 50.0, "end_s": 52.0}]  # the model hears nothing
    tuned = tune_thresholds(lambda t: [], flat, ["Dog"])
    assert tuned["Dog"].thresholds == DEFAULTS and tuned["Dog"].score == EventScore(1, 0, 0)
    assert candidates()[0] == DEFAULTS and len(set(candidates())) == len(candidates())


def test_the_thresholds_file_reads_back_as_the_tuned_rules():
    tuned = {name: result.thresholds for name, result in tune_thresholds(_detect, TRUTHS, CLASSES).items()}
    rules = parse_thresholds(thresholds_csv(tuned), "thresholds.csv")
    assert rules.default == DEFAULTS
    assert dict(rules.per_class) == tuned  # a class name with a comma survives the CSV
    # The events job detects with exactly these: the same events as the tuning scored.
    assert _detect(rules.default, rules.per_class) == _detect(DEFAULTS, tuned.items())
    dog = [d for d in _detect(rules.default, rules.per_class) if d["class"] == "Dog"]
    assert len(dog) == 1 and dog[0]["start_s"] <= 10.5 and dog[0]["end_s"] >= 14.5
