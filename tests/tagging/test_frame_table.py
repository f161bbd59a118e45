"""Frames tables built from model outputs: column types hold every model's values."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from audio_models.spec import EMBEDDING, SCORES, ModelSpec
from schemas.tables import FrameColumns
from transforms.tagging.frame_table import FrameTableBuilder


def test_top_class_indices_past_32767_survive_a_parquet_round_trip(tmp_path):
    classes = 40_000
    names = tuple(f"class_{i}" for i in range(classes))
    spec = ModelSpec("savedmodel", 16000, 16000, 8000, names, embedding_dim=0, fingerprint="f" * 64)
    builder = FrameTableBuilder(spec, FrameColumns(top_k=3))
    scores = np.zeros((2, classes), np.float32)
    scores[0, [39_999, 32_768, 5]] = [0.9, 0.8, 0.7]
    scores[1, [12, 35_000, 39_000]] = [0.95, 0.85, 0.75]

    table = builder.build(["a.wav", "a.wav"], np.array([0, 1]), {SCORES: scores, EMBEDDING: np.zeros((2, 0))})
    pq.write_table(table, tmp_path / "frames.parquet")
    rows = pq.read_table(tmp_path / "frames.parquet").column("top_classes").to_pylist()

    assert [[c["index"] for c in row] for row in rows] == [[39_999, 32_768, 5], [12, 35_000, 39_000]]
    assert [c["label"] for c in rows[0]] == ["class_39999", "class_32768", "class_5"]
    np.testing.assert_allclose([c["score"] for c in rows[1]], [0.95, 0.85, 0.75], rtol=1e-6)
    assert pa.types.is_int32(table.schema.field("top_classes").type.value_type.field("index").type)
