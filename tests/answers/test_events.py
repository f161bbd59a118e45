"""Events from frame scores: hysteresis, merging, minimum duration, times, thresholds files."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from transforms.answers.events import (
    FrameTrack,
    class_scores,
    detect_events,
    events_from_scores,
    keep_floor,
    table_tracks,
)
from transforms.answers.thresholds import (
    ClassThresholds,
    EventRules,
    ThresholdsError,
    parse_thresholds,
    read_rules,
    rules_above,
)

HOP, WINDOW = 0.5, 1.0


def track(scores, first: int = 0) -> FrameTrack:
    """Consecutive frames from ``first``; one column per class."""
    scores = np.asarray(scores, np.float32)
    if scores.ndim == 1:
        scores = scores[:, None]
    index = np.arange(first, first + len(scores))
    return FrameTrack(index, index * HOP + WINDOW / 2, scores)


def spans(events):
    return [(e.label, round(e.start_s, 3), round(e.end_s, 3)) for e in events]


def one_class(scores, **thresholds):
    return detect_events(track(scores), [(0, "a", ClassThresholds(**thresholds))], HOP)


def test_hysteresis_keeps_the_run_above_off_around_a_frame_above_on():
    # frame:      0    1    2    3    4    5    6    7    8    9
    scores = [0.1, 0.4, 0.6, 0.45, 0.7, 0.35, 0.2, 0.9, 0.45, 0.42]
    events = one_class(scores, on=0.5, off=0.4)
    # Frames 1-4 stay >= off (0.4) and 2 and 4 reach on: one event, the lead-in frame 1 included.
    # Frame k stands for [centre - hop/2, centre + hop/2] = [0.5k + 0.25, 0.5k + 0.75].
    assert spans(events) == [("a", 0.75, 2.75), ("a", 3.75, 5.25)]
    assert events[0].num_frames == 4
    assert events[0].peak_score == pytest.approx(0.7) and events[0].peak_s == pytest.approx(2.5)
    assert events[0].mean_score == pytest.approx((0.4 + 0.6 + 0.45 + 0.7) / 4)
    # A run above off that never reaches on is no event.
    assert one_class([0.1, 0.45, 0.45, 0.1], on=0.5, off=0.4) == []
    # Without hysteresis (off = on) the dip at frame 3 cuts the event in two.
    assert spans(one_class(scores, on=0.5, off=0.5)) == [
        ("a", 1.25, 1.75), ("a", 2.25, 2.75), ("a", 3.75, 4.25)]


def test_short_gaps_merge_and_short_events_go():
    scores = [0.9, 0.0, 0.9, 0.9, 0.0, 0.0, 0.0, 0.9]
    assert spans(one_class(scores, on=0.5, off=0.5)) == [
        ("a", 0.0, 0.75), ("a", 1.25, 2.25), ("a", 3.75, 4.25)]
    # A one-frame gap is 0.5 s between slots; merge_gap 0.6 joins it, not the 1.5 s one.
    merged = one_class(scores, on=0.5, off=0.5, merge_gap_s=0.6)
    assert spans(merged) == [("a", 0.0, 2.25), ("a", 3.75, 4.25)]
    assert merged[0].num_frames == 3 and merged[0].mean_score == pytest.approx(0.9)
    # Minimum duration applies after merging: the merged event stays, the lone frame goes.
    longer = one_class(scores, on=0.5, off=0.5, merge_gap_s=0.6, min_duration_s=1.0)
    assert spans(longer) == [("a", 0.0, 2.25)]


def test_frames_missing_from_a_track_end_an_event():
    # Frames 0-2 and 5-6 only (3 and 4 were below every class's off and dropped before grouping).
    index = np.array([0, 1, 2, 5, 6])
    sparse = FrameTrack(index, index * HOP + WINDOW / 2, np.full((5, 1), 0.8, np.float32))
    events = detect_events(sparse, [(0, "a", ClassThresholds(0.5, 0.3))], HOP)
    assert spans(events) == [("a", 0.0, 1.75), ("a", 2.75, 3.75)]


def test_dropping_frames_below_every_off_changes_no_event():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 1, (400, 3)).astype(np.float32) ** 2
    classes = [(4, "x", ClassThresholds(0.6, 0.3, 0.0, 0.6)), (7, "y", ClassThresholds(0.8, 0.5, 1.0, 0.0)),
               (9, "z", ClassThresholds(0.5, 0.5, 0.0, 1.1))]
    full = detect_events(track(scores), classes, HOP)
    off = np.array([t.off for _, _, t in classes], np.float32)
    keep = (scores >= off).any(axis=1)
    whole = track(scores)
    pieces = [FrameTrack(whole.frame_index[keep][i::3], whole.centre_s[keep][i::3], whole.scores[keep][i::3])
              for i in range(3)]  # out of order and in several pieces, as a grouping delivers them
    assert len(full) > 20
    assert detect_events(FrameTrack.merge(pieces[::-1]), classes, HOP) == full


def test_smoothing_drops_a_one_frame_blip_and_keeps_a_word_heard_in_several_windows():
    # frame:   0    1    2    3    4    5    6    7    8    9
    scores = [0.0, 0.0, 0.9, 0.0, 0.0, 0.6, 0.7, 0.6, 0.0, 0.0]
    assert len(one_class(scores, on=0.5, off=0.3)) == 2  # each frame on its own: the blip is an event
    # Over 1.5 s (3 frames at 0.5 s): the blip's frames 1-3 at 0.3 (never on), the word's 5-7 at
    # 0.43, 0.63, 0.43 (frames 4 and 8 at 0.2, below off).
    events = one_class(scores, on=0.5, off=0.3, smooth_s=1.5)
    assert spans(events) == [("a", 2.75, 4.25)]
    assert events[0].peak_score == pytest.approx((0.6 + 0.7 + 0.6) / 3)


def test_smoothing_averages_only_the_frames_there_are():
    # At the ends and around a missing frame the mean is over the frames present, never over zeros.
    index = np.array([0, 1, 2, 4, 5])
    sparse = FrameTrack(index, index * HOP + WINDOW / 2, np.array([[0.6], [0.6], [0.6], [0.9], [0.3]],
                                                                  np.float32))
    events = detect_events(sparse, [(0, "a", ClassThresholds(0.55, 0.55, smooth_s=1.5))], HOP)
    # means: frame 0 (0.6+0.6)/2, 1 0.6, 2 (0.6+0.6)/2, 4 (0.9+0.3)/2, 5 (0.9+0.3)/2
    assert spans(events) == [("a", 0.0, 1.75), ("a", 2.25, 3.25)]
    assert events[1].peak_score == pytest.approx(0.6)


def test_a_smoothed_class_keeps_every_frame_and_gives_the_same_events_from_a_table():
    rng = np.random.default_rng(1)
    scores = rng.uniform(0, 1, (200, 2)).astype(np.float32) ** 3
    thresholds = [ClassThresholds(0.4, 0.2, smooth_s=1.0), ClassThresholds(0.5, 0.3)]
    np.testing.assert_allclose(keep_floor(thresholds), [0.0, 0.3])
    table = frames_table([("x.wav", i, list(row)) for i, row in enumerate(scores)])
    (_, from_table), = table_tracks(table, [0, 1], keep_floor(thresholds))
    assert len(from_table) == 200  # frames below both offs still count in their neighbours' means
    classes = [(0, "p", thresholds[0]), (1, "q", thresholds[1])]
    full = detect_events(track(scores), classes, HOP)
    assert any(e.label == "p" for e in full)
    assert detect_events(from_table, classes, HOP) == full


def test_a_keyword_model_in_memory_background_classes_are_no_events():
    names = ("_silence_", "_unknown_", "yes", "no")
    scores = np.array([[0.9, 0.05, 0.03, 0.02],  # silence
                       [0.1, 0.1, 0.7, 0.1],  # yes
                       [0.0, 0.1, 0.85, 0.05],  # yes, stronger
                       [0.2, 0.2, 0.4, 0.2],  # yes, under 0.5 but above off (0.3): still the same word
                       [0.0, 0.0, 0.1, 0.9]])  # no
    starts = np.arange(5) * HOP
    backwards = slice(None, None, -1)  # rows in any order
    events = events_from_scores(starts[backwards], starts[backwards] + WINDOW, scores[backwards], names, HOP,
                                rules_above(0.5))
    assert spans(events) == [("yes", 0.75, 2.25), ("no", 2.25, 2.75)]
    assert events[0].peak_score == pytest.approx(0.85) and events[0].peak_s == pytest.approx(1.5)


def frames_table(rows: list[tuple[str, int, list[float]]]) -> pa.Table:
    return pa.table({"uri": [r[0] for r in rows], "frame_index": pa.array([r[1] for r in rows], pa.int32()),
                     "start_s": [r[1] * HOP for r in rows], "end_s": [r[1] * HOP + WINDOW for r in rows],
                     "scores": pa.array([r[2] for r in rows], pa.list_(pa.float32()))})


def test_tracks_from_a_frames_table_by_uri_and_in_order():
    table = frames_table([("b.wav", 1, [0.9, 0.0]), ("a.wav", 0, [0.0, 0.0]), ("b.wav", 0, [0.2, 0.7]),
                          ("a.wav", 1, [0.6, 0.1])])
    tracks = dict(table_tracks(table, [1, 0], np.array([0.5, 0.5], np.float32)))
    assert sorted(tracks) == ["a.wav", "b.wav"]
    np.testing.assert_array_equal(tracks["b.wav"].frame_index, [0, 1])
    np.testing.assert_allclose(tracks["b.wav"].scores, [[0.7, 0.2], [0.0, 0.9]])  # columns in the asked order
    np.testing.assert_array_equal(tracks["a.wav"].frame_index, [1])  # frame 0 is below both offs


def test_top_classes_frames_give_zero_for_classes_outside_the_top_k():
    top = pa.StructArray.from_arrays([pa.array([2, 0, 1], pa.int16()), pa.array(["c", "a", "b"]),
                                      pa.array([0.9, 0.1, 0.8], pa.float32())],
                                     names=["index", "label", "score"])
    table = pa.table({"top_classes": pa.ListArray.from_arrays(pa.array([0, 2, 3], pa.int32()), top)})
    np.testing.assert_allclose(class_scores(table, [2, 1]), [[0.9, 0.0], [0.0, 0.8]])


# --- thresholds and classes ---------------------------------------------------------------------------

def test_thresholds_csv_sets_defaults_and_classes():
    rules = parse_thresholds("class,on,off,min_duration_s,merge_gap_s,smooth_s\n*,0.6,0.4,,,\n"
                             "Dog,0.3,0.2,0.5,1.0,0.75\n\"Baby cry, infant cry\",0.7,,,,\n")
    assert rules.default == ClassThresholds(0.6, 0.4, 0.0, 0.0)
    assert rules.thresholds("Dog") == ClassThresholds(0.3, 0.2, 0.5, 1.0, 0.75)
    assert rules.thresholds("Baby cry, infant cry") == ClassThresholds(0.7, 0.4, 0.0, 0.0)
    names = ("Speech", "Dog", "Baby cry, infant cry")
    assert [(i, n) for i, n, _ in rules.for_classes(names)] == [(1, "Dog"), (2, "Baby cry, infant cry")]


def test_thresholds_json_in_both_shapes_and_defaults_without_a_file(tmp_path):
    nested = parse_thresholds(json.dumps({"default": {"on": 0.4},
                                          "classes": {"yes": {"on": 0.8, "off": 0.6}}}))
    rows = parse_thresholds(json.dumps([{"class": "*", "on": 0.4}, {"class": "yes", "on": 0.8, "off": 0.6}]))
    assert nested == rows
    assert nested.default == ClassThresholds(0.4, 0.3)
    assert nested.thresholds("yes") == ClassThresholds(0.8, 0.6)
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"classes": {"yes": {}}}))
    assert [n for _, n, _ in read_rules(str(path), classes=("no",)).for_classes(("yes", "no"))] == ["no"]
    # No file, no classes: every class but the background ones.
    names = ("_silence_", "_unknown_", "yes", "no")
    assert [n for _, n, _ in EventRules().for_classes(names)] == ["yes", "no"]


@pytest.mark.parametrize("text, message", [
    ("class,on,off\nDog,0.3,0.5\n", "off <= on"),
    ("class,on\nDog,high\n", "must be a number"),
    ("class,on,smooth_s\nDog,0.3,-1\n", "smooth_s must be >= 0"),
    ("name,on\nDog,0.3\n", "'class' column"),
    ('{"classes": ', "not valid JSON"),
])
def test_bad_thresholds_files_are_one_line(text, message):
    with pytest.raises(ThresholdsError, match=message) as raised:
        parse_thresholds(text, "t.csv")
    assert "\n" not in str(raised.value)


def test_an_unknown_class_names_close_ones():
    with pytest.raises(ThresholdsError, match="'Dgo'.*close: Dog"):
        EventRules(classes=("Dgo",)).for_classes(("Dog", "Cat"))
