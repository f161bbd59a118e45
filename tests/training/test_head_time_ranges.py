"""A head trained on time-range labels, end to end on real audio: ESC-10 clips planted in pink noise at known
times in three short recordings (``bench.heads_time_ranges``, small), labelled as spans with negatives,
recordings 1-2 for training and 3 for test, tagged with the real-weights YAMNet.

Two training files give no eval file by URI hash, so eval comes from time blocks within them; the head's
report holds per-class precision, recall and AP at frame and event level beside the majority baseline, and
a confusion matrix per span, not one cell per recording.
"""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest

from bench.heads_time_ranges import plant_recordings, run_chain, write_labels
from schemas import training as ts
from tests.support.pipeline_helpers import APPROX_MODEL, ESC10, require_shared
from transforms.answers.thresholds import read_rules

CLASSES = ("dog_bark", "rooster", "baby_cry")
SECONDS, EVENTS = 60.0, 18  # six planted clips per recording: every class twice


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    require_shared(ESC10)
    model = require_shared(APPROX_MODEL)
    work = tmp_path_factory.mktemp("time_ranges")
    truth = plant_recordings(ESC10, work / "audio", SECONDS, EVENTS, CLASSES)
    labels = write_labels(truth, work / "audio", work / "labels.csv")
    # 10 % eval in blocks of 5 s: one block in every 50 s, so each 60 s training recording has eval, and
    # the blocks (placed by a hash of the URI, which holds this run's temporary folder) are too few to take
    # every training span of a class, whatever folder the test runs in.
    metrics = run_chain(work / "audio", labels, model, work,
                        build_extra=["--eval_percent", "10", "--eval_block_s", "5"],
                        train_extra=["--epochs", "40", "--patience", "10"])
    return work, truth, metrics


def _in_unit_interval(value) -> bool:
    return value is not None and 0.0 <= value <= 1.0


def test_eval_comes_from_time_blocks_and_early_stopping_watches_it(trial):
    work, _, metrics = trial
    report = json.loads((work / "ds" / ts.REPORT_FILE).read_text())
    assert report["eval_from"] == "time_blocks" and "time blocks" in report["split_rule"]
    assert report["splits"][ts.EVAL]["frames"] > 0 and report["frames_left_out_near_eval_blocks"] > 0
    assert metrics["eval_split"]["from"] == "time_blocks" and metrics["eval_split"]["rows"] > 0
    assert metrics["early_stopping_monitor"] == "val_loss"
    assert metrics["splits"][ts.EVAL]["rows"] == report["splits"][ts.EVAL]["frames"]
    # No frame is in two splits, and the eval frames are the same recordings' (1-2), never recording 3.
    spans = list(csv.DictReader((work / "ds" / ts.SPANS_FILE).open()))
    assert {row["uri"].rsplit("/", 1)[-1] for row in spans if row["split"] == ts.TEST} == {"rec3.wav"}
    assert {row["uri"].rsplit("/", 1)[-1] for row in spans if row["split"] != ts.TEST} <= {"rec1.wav",
                                                                                          "rec2.wav"}


def test_per_class_metrics_beside_the_majority_baseline(trial):
    _, truth, metrics = trial
    assert metrics["baseline"]["label"] == "_negative_"
    test = metrics["splits"][ts.TEST]
    frame, base = test["per_class"]["frame"], test["baseline"]["frame"]
    assert set(frame) == set(metrics["labels"]) == {*CLASSES, "_negative_"}
    for label in CLASSES:
        for key in ("precision", "recall", "average_precision"):
            assert _in_unit_interval(frame[label][key]), (label, key, frame[label])
        assert base[label]["recall"] == 0.0 and base[label]["precision"] is None
        # The baseline's AP is the class's share of the test frames; the head ranks its frames far better.
        assert base[label]["average_precision"] == pytest.approx(frame[label]["support"] / test["rows"])
        assert frame[label]["average_precision"] > base[label]["average_precision"], label
    assert np.mean([frame[label]["average_precision"] - base[label]["average_precision"]
                    for label in CLASSES]) > 0.3
    assert sum(row["support"] for row in frame.values()) == test["rows"]
    events, base_events = test["per_class"]["event"], test["baseline"]["event"]
    assert "_negative_" not in events
    planted = [t for t in truth if t["file"] == "rec3.wav"]
    for label in CLASSES:
        assert events[label]["truths"] == sum(t["class"] == label for t in planted)
        assert _in_unit_interval(events[label]["recall"])
        assert _in_unit_interval(events[label]["average_precision"])
        assert events[label]["matched"] == round(events[label]["recall"] * events[label]["truths"])
        assert base_events[label] == {**base_events[label], "detections": 0, "recall": 0.0}
    assert np.mean([events[label]["recall"] for label in CLASSES]) >= 2 / 3


def test_confusion_matrix_is_per_span(trial):
    work, truth, metrics = trial
    confusion = metrics["confusion_matrix"]
    matrix = np.array(confusion["matrix"])
    labels = metrics["labels"]
    assert confusion["split"] == ts.TEST and confusion["level"] == "span"
    assert matrix.shape == (len(labels), len(labels))
    # One row entry per planted span of recording 3 (they are apart, so none touch), plus the stretches of
    # negatives between them: far more than the one cell a whole recording would give.
    planted = [t for t in truth if t["file"] == "rec3.wav"]
    for label in CLASSES:
        assert matrix[labels.index(label)].sum() == sum(t["class"] == label for t in planted)
    assert matrix[labels.index("_negative_")].sum() >= len(planted) - 1
    assert metrics["splits"][ts.TEST]["spans"] == matrix.sum()
    assert (work / "head" / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


def test_event_thresholds_are_tuned_on_eval_and_reported_on_test(trial):
    work, truth, metrics = trial
    tuned = metrics["event_thresholds"]
    assert tuned["tuned_on"] == ts.EVAL and tuned["file"] == "thresholds.csv"
    spans = list(csv.DictReader((work / "ds" / ts.SPANS_FILE).open()))
    eval_classes = {row["label"] for row in spans if row["split"] == ts.EVAL} - {"_negative_"}
    assert set(tuned["classes"]) == eval_classes and eval_classes <= set(CLASSES)
    # The file the events job reads holds exactly these thresholds.
    rules = read_rules(str(work / "head" / "thresholds.csv"))
    assert {name: dataclasses.asdict(t) for name, t in rules.per_class} == {
        name: {k: v for k, v in row.items() if k != "splits"} for name, row in tuned["classes"].items()}
    planted = [t for t in truth if t["file"] == "rec3.wav"]
    for label, row in tuned["classes"].items():
        on_eval = row["splits"][ts.EVAL]
        # The defaults are a candidate: tuning never does worse than them on the spans it was tuned on.
        assert on_eval["tuned"]["f1"] >= on_eval["default"]["f1"], (label, on_eval)
        on_test = row["splits"][ts.TEST]
        assert on_test["tuned"]["truths"] == on_test["default"]["truths"] == sum(
            t["class"] == label for t in planted)
        # The defaults' test figures are the per-class event metrics reported beside them.
        reported = metrics["splits"][ts.TEST]["per_class"]["event"][label]
        assert (on_test["default"]["detections"], on_test["default"]["matched"]) == (
            reported["detections"], reported["matched"])
