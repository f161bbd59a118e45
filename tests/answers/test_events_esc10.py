"""Events on real recordings: ESC-10 clips placed on silence at known offsets, tagged with the
real-weights YAMNet (``../shared/models/yamnet-approx``).

A clip's truth is its sounding part (within 30 dB of its loudest 10 ms), which holds the clip's
ambient sound as well as the dog or the baby: the model's score rises with the bark, not with the
room, so boundaries are checked within two hops here.  bench/events_esc10.py measures the share
within one hop on all of fold 3 (docs/answers.md).
"""

from __future__ import annotations

import numpy as np

from bench.events_esc10 import sounding_span
from tests.support.audio_factory import write_audio
from tests.support.pipeline_helpers import APPROX_MODEL, ESC10, read_table, require_shared, run_tag_audio
from transforms.decoding.stream import decode_all

HOP_S = 0.48
TOLERANCE_S = 2 * HOP_S
# The fold-3 clips whose class the model scores at least 0.3 in every frame of the clip on its own:
# the check is about the event chain on real recordings, not about the model's weak classes.
CLIPS = [("Dog", "audio/3-144028-A.ogg"), ("Baby cry, infant cry", "audio/3-151081-A.ogg"),
         ("Dog", "audio/3-180977-A.ogg")]


def test_each_clip_is_one_event_of_its_class_at_its_place(tmp_path):
    require_shared(ESC10)
    model = require_shared(APPROX_MODEL)
    rate, at = 16000, 2.0
    signal, truth = np.zeros(40 * rate), []
    for label, path in CLIPS:
        clip = decode_all(str(ESC10 / path), rate)
        start = int(at * rate)
        signal[start:start + clip.size] += clip
        a, b = sounding_span(clip)  # the bench's definition of the truth, at 16 kHz
        truth.append((label, at + a, at + b))
        at += clip.size / rate + 6.0
    (tmp_path / "in").mkdir()
    write_audio(tmp_path / "in" / "field.wav", signal[None], rate)
    thresholds = tmp_path / "thresholds.csv"
    thresholds.write_text("class,on,off,min_duration_s,merge_gap_s\n*,0.3,0.15,0.5,1.0\n" +
                          "".join(f'"{label}"\n' for label in dict(CLIPS)))
    out = tmp_path / "out"
    assert run_tag_audio(["--input", str(tmp_path / "in"), "--output", str(out), "--model_path", str(model),
                          "--events", "--event_thresholds", str(thresholds)]) == 0
    events = sorted(read_table(out, "events").to_pylist(), key=lambda e: e["start_s"])
    assert [e["label"] for e in events] == [label for label, _, _ in truth], events
    for event, (_, start, end) in zip(events, truth):
        assert abs(event["start_s"] - start) <= TOLERANCE_S, (event, start)
        assert abs(event["end_s"] - end) <= TOLERANCE_S, (event, end)
        assert event["time_source"] is None and event["peak_score"] > 0.9
