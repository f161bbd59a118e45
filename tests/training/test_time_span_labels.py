"""Labels by time range: rows ``uri,start_s,end_s,label`` label the frames that overlap them.

The end-to-end part tags real files with a small real SavedModel (tests/answers/tone_model.py) and
builds a training set; each frame's label in the TFRecords is checked against its window's overlap
with the spans.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from schemas import training as ts
from tests.answers.tone_model import HOP, RATE, WINDOW, save_tone_model, tone
from tests.support.audio_factory import write_audio
from tests.support.pipeline_helpers import run_tag_audio
from transforms.training import labelled_rows as tset

HOP_S, WINDOW_S = HOP / RATE, WINDOW / RATE


def test_span_rows_with_and_without_a_header():
    table = tset.parse_labels("uri,start_s,end_s,label,fold\nd/a.wav,1.0,2.5,dog,1\nd/a.wav,4,5,bird,1\n"
                              "d/b.wav,,,cat,2\nd/a.wav,1.0,2.5,dog,1\n")
    assert table.has_spans and table.duplicate_rows == 1 and table.labels == ["bird", "cat", "dog"]
    rows = tset.LabelIndex(table).match_rows("gs://x/d/a.wav")
    assert [(r.label, r.start_s, r.end_s) for r in rows] == [("dog", 1.0, 2.5), ("bird", 4.0, 5.0)]
    assert not tset.LabelIndex(table).match("/data/d/b.wav").is_span  # empty span cells: the whole file
    headerless = tset.parse_labels("/d/a.wav,0.5,1.5,dog\n/d/a.wav,2,3,cat\n")
    assert [(r.start_s, r.label) for r in headerless.rows] == [(0.5, "dog"), (2.0, "cat")]
    assert not tset.parse_labels("path,label\na.wav,dog\n").has_spans


@pytest.mark.parametrize("text, message", [
    ("uri,start_s,end_s,label\na.wav,2,1,dog\n", "0 <= start_s < end_s"),
    ("uri,start_s,end_s,label\na.wav,soon,1,dog\n", "must both be seconds"),
    ("uri,start_s,end_s,label\na.wav,1,2,dog\na.wav,,,cat\n", "whole-file label and other rows"),
    ("uri,start_s,end_s,label,fold\na.wav,1,2,dog,1\na.wav,3,4,dog,2\n", "different folds"),
    ("uri,start_s,end_s,label\na.wav,1,2,dog\na.wav,1,2,cat\n", "is labelled 'cat'"),
    ("uri,start_s,label\na.wav,1,dog\n", "both a start_s and an end_s"),
])
def test_bad_span_rows_are_reported_with_their_line(text, message):
    with pytest.raises(tset.LabelsFileError, match=message):
        tset.parse_labels(text, "labels.csv")


def test_a_frame_takes_the_span_it_overlaps_most_else_the_negative_label():
    rows = [("dog", 1.0, 2.0), ("cat", 1.8, 4.0), ("owl", 5.0, 5.5)]
    spans = [tset.LabelRow("a.wav", label, None, line, a, b) for line, (label, a, b) in enumerate(rows, 2)]
    start = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 4.0, 5.5, 4.9])
    # [0, 1] only touches the dog; [1.5, 2.5] overlaps the cat (0.7 s) more than the dog (0.5 s).
    labels = tset.span_labels(start, start + 1.0, spans)
    assert labels == [None, "dog", "dog", "cat", "cat", None, None, "owl"]
    tie = [tset.LabelRow("a.wav", "x", None, 2, 0.0, 0.5), tset.LabelRow("a.wav", "y", None, 3, 0.5, 1.0)]
    labels = tset.span_labels(np.array([0.0, 1.0]), np.array([1.0, 2.0]), tie, "_negative_")
    assert labels == ["x", "_negative_"]  # a tie keeps the first span


# --- build_training_set end to end ---------------------------------------------------------------------

SPANS = {"a.wav": [(1.0, 2.2, "low")], "b.wav": [(0.6, 1.4, "low"), (3.0, 3.9, "high")]}


def _expected(negative: str | None) -> dict[tuple[str, int], str]:
    """(file, frame index) -> label, from each window's overlap with the spans (the first wins a tie)."""
    labels = {}
    for name, spans in SPANS.items():
        for k in range(FRAMES):
            start, end = k * HOP_S, k * HOP_S + WINDOW_S
            best = max(((min(end, b) - max(start, a), label) for a, b, label in spans), key=lambda o: o[0])
            if best[0] > 0:
                labels[(name, k)] = best[1]
            elif negative:
                labels[(name, k)] = negative
    return labels


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    root = tmp_path_factory.mktemp("spans")
    audio = root / "in"
    audio.mkdir()
    for name, spans in [*SPANS.items(), ("unlabelled.wav", [])]:
        signal = np.random.default_rng(0).normal(0, 0.005, 5 * RATE)
        for a, b, label in spans:
            piece = tone(500.0 if label == "low" else 2000.0, b - a)
            signal[int(a * RATE):int(a * RATE) + piece.size] += piece
        write_audio(audio / name, signal[None], RATE)
    out = root / "out"
    assert run_tag_audio(["--input", str(audio), "--output", str(out), "--model", "savedmodel",
                          "--model_path", str(save_tone_model(root / "model"))]) == 0
    labels = root / "labels.csv"
    labels.write_text("uri,start_s,end_s,label\n" + "".join(
        f"{audio / name},{a},{b},{label}\n" for name, spans in SPANS.items() for a, b, label in spans))
    return root, out, labels


def _frame_labels(ds_dir) -> dict[tuple[str, int], str]:
    import tensorflow_transform as tft

    from transforms.training.head_trainer import split_dataset

    output = tft.TFTransformOutput(str(ds_dir / ts.TRANSFORM_DIR))
    vocabulary = [v.decode() for v in output.vocabulary_by_name(ts.LABEL_VOCABULARY)]
    found = {}
    for batch in split_dataset(str(ds_dir), ts.TRAIN, output.transformed_feature_spec(), 64):
        for uri, index, label in zip(batch[ts.URI].numpy(), batch[ts.FRAME_INDEX].numpy(),
                                     batch[ts.LABEL_ID].numpy()):
            found[(uri.decode().rsplit("/", 1)[-1], int(index))] = vocabulary[int(label)]
    return found


FRAMES = 1 + int(np.ceil((5.0 - WINDOW_S) / HOP_S))  # 19 frames of 0.5 s every 0.25 s in 5 s


def test_build_training_set_labels_frames_by_overlap_and_the_rest_as_negatives(tagged, tmp_path):
    from beam_jobs import build_training_set

    _, out, labels = tagged
    ds_dir = tmp_path / "ds"
    assert build_training_set.run(["--frames", str(out), "--labels", str(labels), "--output", str(ds_dir),
                                   "--eval_percent", "0", "--test_percent", "0",
                                   "--negatives_from_labelled_files"]) == 0
    expected = _expected("_negative_")
    assert _frame_labels(ds_dir) == expected
    classes = json.loads((ds_dir / ts.REPORT_FILE).read_text())["splits"][ts.TRAIN]["classes"]
    assert classes["low"] == {"clips": 2, "frames": sum(v == "low" for v in expected.values())}
    assert classes["_negative_"] == {"clips": 2, "frames": sum(v == "_negative_" for v in expected.values())}


def test_without_a_negative_label_the_other_frames_are_left_out(tagged):
    import pyarrow.parquet as pq

    _, out, labels = tagged
    table = pq.read_table(sorted((out / "frames").glob("run=*/*.parquet"))[0])
    layout = ts.FeatureLayout((ts.EMBEDDING,), (16,), ts.POOLING_NONE)
    attach = tset.AttachLabels(tset.read_labels(str(labels)), tset.SplitRule(eval_percent=0, test_percent=0),
                               layout)
    attach.setup()
    outputs = list(attach.process(("out/frames/run=x/part.parquet", table)))
    rows = {(i[ts.URI].rsplit("/", 1)[-1], i[ts.FRAME_INDEX]): i[ts.LABEL] for split, i in
            (o for o in outputs if isinstance(o, tuple))}
    assert rows == _expected(None)
    side = [o for o in outputs if not isinstance(o, tuple)]
    assert [o.value for o in side if o.tag == tset.UNLABELLED] == [str(out.parent / "in" / "unlabelled.wav")]
    clip_facts = [o.value for o in side if o.tag == tset.CLIPS]
    clips = {(uri.rsplit("/", 1)[-1], facts.label) for uri, facts in clip_facts}
    assert clips == {("a.wav", "low"), ("b.wav", "low"), ("b.wav", "high")}


def test_span_labels_refuse_pooling_and_a_negative_label_needs_spans(tagged, tmp_path, capsys):
    from beam_jobs import build_training_set

    root, out, labels = tagged
    whole = root / "whole.csv"
    whole.write_text(f"path,label\n{root / 'in' / 'a.wav'},low\n")
    base = ["--frames", str(out), "--output", str(tmp_path / "ds")]
    assert build_training_set.run(base + ["--labels", str(labels), "--pooling", "mean"]) == 2
    assert build_training_set.run(base + ["--labels", str(whole), "--negatives_from_labelled_files"]) == 2
    assert build_training_set.run(base + ["--labels", str(labels), "--negatives_from_labelled_files",
                                          "low"]) == 2
    assert build_training_set.run(base + ["--labels", str(whole), "--eval_from", "time_blocks"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert "--pooling none" in errors[0] and "whole files only" in errors[1] and "also a label" in errors[2]
    assert "--eval_from time_blocks needs rows with time spans" in errors[3]
