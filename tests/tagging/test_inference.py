"""The batched model DoFn on CPU: packing across files, fixed batches, one model per process."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pytest
from apache_beam import pvalue
from apache_beam.utils.windowed_value import WindowedValue

from audio_models.loading import load_spec, resolve_source
from schemas.tables import FrameColumns
from tests.support.pipeline_helpers import FIXTURE_MODEL, require_shared
from transforms.tagging.file_report import ScoreStats
from transforms.tagging.frame_table import FrameTableBuilder
from transforms.tagging.inference import RunModelBatched, WindowQueue, shared_model
from transforms.tagging.units import WindowChunk

WINDOW = 15600


def _chunk(uri: str, first: int, n: int, seed: int) -> WindowChunk:
    rng = np.random.default_rng(seed)
    return WindowChunk(uri, first, rng.uniform(-1, 1, (n, WINDOW)).astype(np.float32))


def test_queue_cuts_fixed_batches_across_files_in_order():
    queue = WindowQueue()
    chunks = [_chunk("a", 0, 5, 1), _chunk("b", 0, 7, 2), _chunk("a", 5, 2, 3)]
    for c in chunks:
        queue.push(c)
    assert queue.size == 14
    pieces, batch = queue.pop(8)
    assert [(p.uri, p.first_frame, len(p.windows)) for p in pieces] == [("a", 0, 5), ("b", 0, 3)]
    np.testing.assert_allclose(batch, np.concatenate([chunks[0].windows, chunks[1].windows[:3]]),
                               rtol=0, atol=1e-7)
    pieces, batch = queue.pop(6)
    assert [(p.uri, p.first_frame, len(p.windows)) for p in pieces] == [("b", 3, 4), ("a", 5, 2)]
    assert queue.size == 0


@pytest.fixture(scope="module")
def source():
    return resolve_source("yamnet", str(require_shared(FIXTURE_MODEL)))


def _drain(dofn: RunModelBatched, chunks: list[WindowChunk]):
    dofn.setup()
    dofn.start_bundle()
    outputs = []
    for chunk in chunks:
        outputs.extend(dofn.process(chunk))
    outputs.extend(dofn.finish_bundle())
    tables, stats = [], []
    for out in outputs:
        if isinstance(out, pvalue.TaggedOutput):
            value = out.value.value if isinstance(out.value, WindowedValue) else out.value
            stats.append(value)
        else:
            tables.append(out.value if isinstance(out, WindowedValue) else out)
    return tables, stats


def test_batches_from_many_files_equal_per_window_results(source):
    model = shared_model(source)
    spec = model.spec
    dofn = RunModelBatched(source, FrameTableBuilder(spec, FrameColumns()), batch_size=8)
    chunks = [_chunk("a", 0, 5, 1), _chunk("b", 0, 7, 2), _chunk("c", 0, 1, 3), _chunk("a", 5, 2, 4)]
    tables, stats = _drain(dofn, chunks)
    assert [t.num_rows for t in tables] == [8, 7]  # a full batch, then the partial last one
    frames = {(r["uri"], r["frame_index"]): r for t in tables for r in t.to_pylist()}
    assert len(frames) == 15
    for chunk in chunks:
        expected = model.predict(chunk.windows)["scores"]
        for i in range(len(chunk.windows)):
            got = np.array(frames[(chunk.uri, chunk.first_frame + i)]["scores"])
            # Zero-padding the last batch and mixing files never changes a frame.
            np.testing.assert_allclose(got, expected[i], atol=1e-5)
    per_uri: dict[str, ScoreStats] = {}
    for uri, s in stats:
        per_uri[uri] = s if uri not in per_uri else per_uri[uri].merge(s)
    assert {u: s.count for u, s in per_uri.items()} == {"a": 7, "b": 7, "c": 1}


def test_one_model_per_process_shared_by_threads_and_dofns(source):
    models = []
    threads = [threading.Thread(target=lambda: models.append(shared_model(source))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for dofn in (RunModelBatched(source, None, 8), RunModelBatched(source, None, 8)):
        dofn.setup()  # takes the process's model: no second copy is loaded
    assert len({id(m) for m in models} | {id(shared_model(source))}) == 1


def test_batch_size_zero_takes_the_devices_default(source):
    from audio_models.device import default_batch_size

    spec = load_spec(source)
    dofn = RunModelBatched(source, FrameTableBuilder(spec, FrameColumns()), batch_size=0, device="cpu",
                           overlap=False)
    dofn.setup()
    dofn.start_bundle()
    size = default_batch_size("cpu")
    windows = np.zeros((2 * size + 3, spec.window_samples), np.float32)
    tables = [out for out in dofn.process(WindowChunk("a.wav", 0, windows)) if isinstance(out, pa.Table)]
    tables += [w.value for w in dofn.finish_bundle() if isinstance(w.value, pa.Table)]
    assert [t.num_rows for t in tables] == [size, size, 3] and size > 0


def test_varying_batch_sizes_do_not_retrace(source):
    model = shared_model(source)
    for n in (1, 3, 8, 32):
        model.predict(np.zeros((n, WINDOW), np.float32))
    assert model.graph_traces == 1
