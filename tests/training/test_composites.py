"""The training-set composites on their own: TestPipeline + assert_that on a few elements."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas import training as ts
from transforms.training.labelled_rows import PoolClips


def _frame(uri: str, index: int, value: list[float], label: str = "dog") -> tuple[str, dict]:
    return ts.TRAIN, {"embedding": np.array(value, np.float32), ts.LABEL: label, ts.URI: uri,
                      ts.FRAME_INDEX: index}


def test_pool_clips_makes_one_instance_per_clip_with_mean_and_max_of_its_frames():
    layout = ts.FeatureLayout(("embedding",), (2,), "mean_max")
    rows = [_frame("a.wav", 0, [1.0, 4.0]), _frame("a.wav", 1, [3.0, 0.0]),
            _frame("b.wav", 0, [2.0, 2.0], "cat")]
    with TestPipeline(runner="FnApiRunner") as p:
        clips = (p | beam.Create(rows) | PoolClips(layout)
                 | beam.MapTuple(lambda split, clip: (split, clip[ts.URI], clip[ts.LABEL],
                                                      clip[ts.NUM_FRAMES], clip[ts.FRAME_INDEX],
                                                      tuple(float(x) for x in clip["embedding_mean"]),
                                                      tuple(float(x) for x in clip["embedding_max"]))))
        assert_that(clips, equal_to([(ts.TRAIN, "a.wav", "dog", 2, -1, (2.0, 2.0), (3.0, 4.0)),
                                     (ts.TRAIN, "b.wav", "cat", 1, -1, (2.0, 2.0), (2.0, 2.0))]))
