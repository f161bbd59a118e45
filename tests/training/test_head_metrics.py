"""Per-class metrics, the majority baseline, span-level confusion and eval from time blocks, on hand-made
cases whose answers are worked out in the comments (not by the code under test)."""

from __future__ import annotations

import numpy as np
import pytest

from schemas import training as ts
from transforms.training import detection_metrics as dm
from transforms.training import labelled_rows as tset


def test_average_precision_by_hand():
    # Ranked 0.9 hit, 0.8 miss, 0.7 hit, 0.6 miss: precision 1/1 at the first hit, 2/3 at the second,
    # each worth half the recall: 0.5 * 1 + 0.5 * 2/3.
    assert dm.average_precision([0.6, 0.9, 0.7, 0.8], [0, 1, 1, 0]) == pytest.approx(0.5 + 1 / 3)
    # One score for all: one step at precision 1/4 (the share of positives) and recall 1.
    assert dm.average_precision([0.5] * 4, [1, 0, 0, 0]) == pytest.approx(0.25)
    # Three positives, one found at rank 1: 1/3 of the recall at precision 1; the other two never found.
    assert dm.average_precision([0.9, 0.8], [1, 0], positives=3) == pytest.approx(1 / 3)
    assert dm.average_precision([], [], positives=2) == 0.0
    assert dm.average_precision([0.3, 0.1], [0, 0]) is None  # no positives: nothing to rank for


def test_frame_metrics_and_the_majority_baseline_by_hand():
    labels = ["_negative_", "dog", "cat"]
    truth = np.array([0, 0, 0, 0, 1, 1, 2])
    probabilities = np.array([[0.8, 0.1, 0.1],   # neg, said neg
                              [0.6, 0.3, 0.1],   # neg, said neg
                              [0.2, 0.7, 0.1],   # neg, said dog
                              [0.5, 0.2, 0.3],   # neg, said neg
                              [0.1, 0.9, 0.0],   # dog, said dog
                              [0.4, 0.35, 0.25],  # dog, said neg
                              [0.1, 0.2, 0.7]])  # cat, said cat
    rows = dm.frame_metrics(probabilities, truth, labels)
    # dog: said on frames 2 and 4, right on 4: P 1/2; of the 2 dog frames 1 found: R 1/2.
    # dog scores ranked: 0.9 (dog) 0.7 (neg) 0.35 (dog) 0.3 0.2 0.1 0.1: AP = 0.5 * 1 + 0.5 * 2/3.
    assert rows["dog"] == {"support": 2, "predicted": 2, "precision": 0.5, "recall": 0.5,
                           "average_precision": pytest.approx(0.5 + 1 / 3)}
    # _negative_: said on frames 0, 1, 3, 5, right on 3 of them: P 3/4, R 3/4.
    # neg scores ranked: 0.8 n, 0.6 n, 0.5 n, 0.4 d, 0.2 n, 0.1, 0.1: AP = 3/4 * 1 + 1/4 * 4/5.
    assert rows["_negative_"]["precision"] == 0.75 and rows["_negative_"]["recall"] == 0.75
    assert rows["_negative_"]["average_precision"] == pytest.approx(0.75 + 0.2)
    assert rows["cat"]["precision"] == 1.0 and rows["cat"]["average_precision"] == pytest.approx(1.0)

    majority = dm.majority_label({"_negative_": 4, "dog": 2, "cat": 1})
    assert majority == "_negative_" and dm.majority_label({"b": 2, "a": 2}) == "a"
    base = dm.frame_metrics(dm.majority_scores(7, 3, 0), truth, labels)
    # Always "_negative_": P 4/7, R 1; never dog or cat: no precision; constant scores: AP = share.
    assert base["_negative_"]["precision"] == pytest.approx(4 / 7) and base["_negative_"]["recall"] == 1.0
    assert base["dog"]["precision"] is None and base["dog"]["recall"] == 0.0
    assert base["dog"]["average_precision"] == pytest.approx(2 / 7)
    assert base["cat"]["average_precision"] == pytest.approx(1 / 7)


def _frames(labels_per_frame, dog_scores, uri="rec.wav") -> dm.SplitFrames:
    n = len(labels_per_frame)
    dog = np.asarray(dog_scores, np.float32)
    probabilities = np.stack([1 - dog, dog], axis=1)
    return dm.SplitFrames(np.array([uri] * n), np.arange(n), np.asarray(labels_per_frame), probabilities)


def test_event_metrics_match_detections_to_spans_by_hand():
    # Frames of 1 s every 0.5 s; an event spans its frames' hop-long slots around their centres
    # (frame k: centre k / 2 + 0.5).  Dog scores: frames 2-4 (0.8 peak) and 10-11 (0.9 peak).
    dog = [0.0] * 16
    dog[2:5] = [0.6, 0.8, 0.6]
    dog[10:12] = [0.9, 0.7]
    labels_per_frame = [0] * 16
    frames = _frames(labels_per_frame, dog)
    truths = [{"file": "rec.wav", "class": "dog", "start_s": 1.0, "end_s": 3.0},
              {"file": "rec.wav", "class": "dog", "start_s": 7.0, "end_s": 8.0}]
    timing = dm.FrameTiming(hop_s=0.5, window_s=1.0)
    rows = dm.event_metrics(frames, truths, ["_negative_", "dog"], ["dog"], timing)
    # Detections [1.25, 2.75] (overlaps the first span) and [5.25, 6.25] (overlaps neither): P 1/2, R 1/2.
    # Ranked by peak: 0.9 (miss), 0.8 (hit at precision 1/2): AP = 1/2 (of the spans) * 1/2.
    assert rows["dog"] == {"truths": 2, "detections": 2, "matched": 1, "precision": 0.5, "recall": 0.5,
                           "average_precision": pytest.approx(0.25)}
    silent = dm.event_metrics(frames.with_scores(dm.majority_scores(16, 2, 0)), truths,
                              ["_negative_", "dog"], ["dog"], timing)
    assert silent["dog"] == {"truths": 2, "detections": 0, "matched": 0, "precision": None, "recall": 0.0,
                             "average_precision": 0.0}


def test_span_confusion_counts_runs_of_one_label():
    # Labels neg neg dog dog neg dog | frame 7 missing | dog: four runs in rec.wav (neg, dog, neg, dog)
    # and one after the gap.  Predicted dog where the mean dog score is above 0.5.
    frames = dm.SplitFrames(np.array(["a.wav"] * 7), np.array([0, 1, 2, 3, 4, 5, 7]),
                            np.array([0, 0, 1, 1, 0, 1, 1]),
                            np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.4, 0.6], [0.2, 0.8],
                                      [0.7, 0.3]], np.float32))
    # runs: [0,1] neg said neg; [2,3] dog mean 0.55 said dog; [4] neg said dog; [5] dog said dog; [7] dog
    # said neg.
    assert dm.segment_confusion(frames, 2).tolist() == [[1, 1], [1, 2]]


def test_time_blocks_take_whole_spans_and_leave_a_gap():
    spans = [tset.LabelRow("a.wav", "dog", "1", 2, 9.0, 12.0),
             tset.LabelRow("a.wav", "cat", "1", 3, 40.0, 41.0)]
    rule = tset.SplitRule(("1",), (), ("2",), eval_percent=20, eval_from="time_blocks", eval_block_s=4.0,
                          eval_gap_s=1.0)
    assert rule.eval_period_s == pytest.approx(20.0)
    regions = rule.eval_regions("/d/a.wav", spans, 60.0)
    assert len(regions) >= 3 and regions == sorted(regions)
    for a, b in regions:
        assert b - a >= 4.0
        for span in spans:  # no span crosses a block's edge
            assert not (span.start_s < a < span.end_s or span.start_s < b < span.end_s)
    starts = np.arange(0, 59.0, 0.5)
    splits = rule.frame_splits(regions, starts, starts + 1.0)
    for start, split in zip(starts, splits):
        inside = any(a <= start and start + 1.0 <= b for a, b in regions)
        near = any(start < b + 1.0 and start + 1.0 > a - 1.0 for a, b in regions)
        assert split == (ts.EVAL if inside else None if near else ts.TRAIN)
    assert splits.count(ts.EVAL) and splits.count(None) and splits.count(ts.TRAIN)
    assert rule.assign("/d/a.wav", "1") == ts.TRAIN  # no file goes to eval whole
    # auto: two span-labelled training files at 10 % would give no eval file by URI hash.
    table = tset.parse_labels("uri,start_s,end_s,label,fold\n"
                              "a.wav,1,2,dog,1\nb.wav,1,2,dog,1\nc.wav,1,2,dog,2\n")
    assert tset.SplitRule(("1",), (), ("2",), eval_from="auto").resolved(table).eval_by_time
    assert not tset.SplitRule(("1",), ("2",), eval_from="auto").resolved(table).eval_by_time  # eval folds
    whole = tset.parse_labels("path,label,fold\na.wav,dog,1\nc.wav,cat,2\n")
    assert not tset.SplitRule(("1",), (), ("2",), eval_from="auto").resolved(whole).eval_by_time
    with pytest.raises(tset.LabelsFileError, match="time spans"):
        tset.SplitRule(eval_from="time_blocks").resolved(whole)


def test_a_missing_eval_split_is_said_not_hidden():
    from transforms.training import head_metrics as hm

    document = {"split_rule": {"eval_from": "files", "description": "by fold: train 1,2; eval 10% ..."}}
    none = hm.eval_split(document, 0, "loss")
    assert none["from"] == "none" and none["rows"] == 0
    assert "NONE (0 rows)" in hm.format_eval_split(none) and "training loss" in hm.format_eval_split(none)
    blocks = hm.eval_split({"split_rule": {"eval_from": "time_blocks"}}, 120, "val_loss")
    assert hm.format_eval_split(blocks) == (
        "eval split: 120 rows from time blocks within the training files; early stopping watched val_loss")
