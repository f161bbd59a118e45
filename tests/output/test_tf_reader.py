"""tf.data over the frames: the stream yields the current view's embeddings and scores (class names from the
metadata), one config at a time, and holds a record batch at a time, never the whole table."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from audio_models.spec import ModelSpec
from schemas.tables import STATUS_OK, FrameColumns
from tests.support import savedmodel_factory as factory
from tests.support.output_factory import FakeFile, scores_with_peaks, write_run
from transforms.output.current import current_frames
from transforms.output.tf_reader import FrameStream


def _config_of_run(history, run_index: int) -> str:
    frames = current_frames(str(history.out), ["config_id"])
    return frames.filter(pc.equal(frames["run"], history.runs[run_index]))["config_id"][0].as_py()


def test_several_configs_need_a_choice(history):
    with pytest.raises(ValueError, match="frames of 2 configs") as error:
        FrameStream(str(history.out))
    assert _config_of_run(history, 2) in str(error.value)
    with pytest.raises(ValueError, match="no frames with config_id 'nope'"):
        FrameStream(str(history.out), config_id="nope")


def test_dataset_yields_the_current_frames_of_one_config(history):
    config = _config_of_run(history, 3)
    stream = FrameStream(str(history.out), config_id=config, rows_per_batch=3)
    assert stream.class_names == factory.BATCHED_LABELS
    assert stream.embedding_dim == factory.EMBEDDING_DIM

    expected = current_frames(str(history.out), ["uri", "start_s", "config_id", "embedding", "scores"])
    expected = expected.filter(pc.equal(expected["config_id"], config))
    by_key = {(r["uri"], round(r["start_s"], 6)): r for r in expected.to_pylist()}

    seen = 0
    for batch in stream.dataset().batch(4):
        assert batch["embedding"].dtype.name == "float32" and batch["scores"].shape[1] == 3
        for uri, start, embedding, scores in zip(batch["uri"].numpy(), batch["start_s"].numpy(),
                                                 batch["embedding"].numpy(), batch["scores"].numpy()):
            row = by_key[(uri.decode(), round(float(start), 6))]
            np.testing.assert_allclose(embedding, row["embedding"], rtol=0, atol=0)
            np.testing.assert_allclose(scores, row["scores"], rtol=0, atol=0)
            seen += 1
    assert seen == len(by_key) == expected.num_rows > 0


def test_all_published_runs_when_not_current(history):
    config = _config_of_run(history, 3)
    every = FrameStream(str(history.out), columns=("uri", "embedding"), config_id=config, current=False)
    now = FrameStream(str(history.out), columns=("uri", "embedding"), config_id=config)
    count = sum(len(b["uri"]) for b in every.numpy_batches())
    # Runs 1, 2 and 4 hold config-1 frames; the killed run 5 is not published and is not read.
    raw = ds.dataset(history.out / "frames", partitioning="hive").to_table(columns=["run", "config_id"])
    published = [history.runs[i] for i in (0, 1, 3)]
    in_published = pc.is_in(raw["run"], pa.array(published))
    expected = raw.filter(pc.and_(pc.equal(raw["config_id"], config), in_published))
    assert count == expected.num_rows > sum(len(b["uri"]) for b in now.numpy_batches())


def test_missing_column_says_why(tmp_path):
    spec = ModelSpec(name="head", sample_rate=16000, window_samples=15600, hop_samples=7680,
                     class_names=("a", "b"), embedding_dim=4, fingerprint="ab" * 32)
    write_run(tmp_path / "out", [FakeFile("/x.wav", STATUS_OK, scores=scores_with_peaks(5, {0: 0.9}, spec))],
              spec=spec, columns=FrameColumns(top_k=1))
    with pytest.raises(ValueError, match="top_classes"):
        FrameStream(str(tmp_path / "out"))


def test_streams_a_batch_at_a_time_not_the_table(tmp_path):
    """Peak Arrow memory while streaming stays a small fraction of the table's size."""
    dim = 512
    spec = ModelSpec(name="wide", sample_rate=16000, window_samples=15600, hop_samples=7680,
                     class_names=tuple(f"c{i}" for i in range(16)), embedding_dim=dim, fingerprint="cd" * 32)
    files = [FakeFile(f"/data/long{i}.wav", STATUS_OK,
                      scores=scores_with_peaks(6000, {i: 0.7}, spec, seed=i)) for i in range(4)]
    write_run(tmp_path / "out", files, spec=spec, frames_parts=2, row_group_size=500)
    table_bytes = 24000 * (dim + 16) * 4
    stream = FrameStream(str(tmp_path / "out"), columns=("uri", "embedding", "scores"), rows_per_batch=500)

    baseline = pa.total_allocated_bytes()
    peak, rows, checksum = 0, 0, 0.0
    for arrays in stream.numpy_batches():
        peak = max(peak, pa.total_allocated_bytes() - baseline)
        rows += len(arrays["uri"])
        checksum += float(arrays["embedding"][:, 0].sum())
    assert rows == 24000
    # A reader holding the table peaks above table_bytes; streaming costs a few row groups' worth.
    assert peak < table_bytes / 5, f"peak {peak} bytes of a {table_bytes}-byte table"
    whole = current_frames(str(tmp_path / "out"), ["embedding"])["embedding"]
    first = pc.list_element(whole, 0).to_numpy(zero_copy_only=False)
    assert checksum == pytest.approx(float(first.sum()), rel=1e-4)
