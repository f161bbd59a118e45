"""The batched model DoFn runs the model one batch behind on its own thread: same rows as running in line."""

from __future__ import annotations

import glob

import numpy as np
import pyarrow as pa
import pytest
from apache_beam import pvalue

from audio_models.loading import load_spec, resolve_source
from audio_models.spec import SCORES
from schemas.tables import FrameColumns
from tests.support.pipeline_helpers import ESC10, FIXTURE_MODEL, require_shared
from transforms.decoding.stream import decode_all
from transforms.decoding.windows import frames_of
from transforms.tagging.frame_table import FrameTableBuilder
from transforms.tagging.inference import RunModelBatched, shared_model
from transforms.tagging.units import WindowChunk

BATCH = 8
CHUNK_FRAMES = 7  # not a divisor of BATCH: batches take pieces of several chunks and files


@pytest.fixture(scope="module")
def clips() -> dict[str, np.ndarray]:
    """Frames of three real recordings, read in place."""
    paths = sorted(glob.glob(str(require_shared(ESC10) / "audio" / "*.ogg")))[:3]
    return {path: frames_of(decode_all(path, 16000), 15600, 7680) for path in paths}


def _run_bundle(source, clips: dict[str, np.ndarray], overlap: bool) -> tuple[pa.Table, dict, list[int]]:
    """Feeds every clip through one bundle; returns frames rows, per-file score sums, batches in flight."""
    dofn = RunModelBatched(source, FrameTableBuilder(load_spec(source), FrameColumns()), BATCH,
                           overlap=overlap)
    dofn.setup()
    dofn.start_bundle()
    outputs, in_flight = [], []
    for uri, frames in clips.items():
        for first in range(0, len(frames), CHUNK_FRAMES):
            outputs.extend(dofn.process(WindowChunk(uri, first, frames[first:first + CHUNK_FRAMES])))
            in_flight.append(dofn.batches_in_flight)
    outputs.extend(windowed.value if not isinstance(windowed, pvalue.TaggedOutput)
                   else pvalue.TaggedOutput(windowed.tag, windowed.value.value)
                   for windowed in dofn.finish_bundle())
    dofn.teardown()
    tables = [out for out in outputs if isinstance(out, pa.Table)]
    score_sums: dict[str, np.ndarray] = {}
    for out in outputs:
        if isinstance(out, pvalue.TaggedOutput):
            uri, stats = out.value
            score_sums[uri] = score_sums.get(uri, 0) + stats.score_sum
    return pa.concat_tables(tables).sort_by([("uri", "ascending"), ("frame_index", "ascending")]), \
        score_sums, in_flight


def test_overlapped_model_writes_the_rows_of_the_in_line_model(clips):
    source = resolve_source("yamnet", str(require_shared(FIXTURE_MODEL)))
    overlapped, overlapped_sums, in_flight = _run_bundle(source, clips, overlap=True)
    in_line, in_line_sums, _ = _run_bundle(source, clips, overlap=False)

    total = sum(len(frames) for frames in clips.values())
    assert overlapped.num_rows == in_line.num_rows == total
    assert overlapped.column("uri").to_pylist() == in_line.column("uri").to_pylist()
    assert overlapped.column("frame_index").to_pylist() == in_line.column("frame_index").to_pylist()
    np.testing.assert_allclose(np.stack(overlapped.column("scores").to_numpy(zero_copy_only=False)),
                               np.stack(in_line.column("scores").to_numpy(zero_copy_only=False)),
                               rtol=0, atol=1e-6)
    for uri in clips:
        np.testing.assert_allclose(overlapped_sums[uri], in_line_sums[uri], rtol=1e-6)
    # Bounded memory: never more than the batch being computed and the one waiting behind it.
    assert max(in_flight) <= 2 and max(in_flight) >= 1


def test_rows_match_the_model_on_each_file(clips):
    source = resolve_source("yamnet", str(require_shared(FIXTURE_MODEL)))
    table, _, _ = _run_bundle(source, clips, overlap=True)
    model = shared_model(source)
    uri = next(iter(clips))
    expected = model.predict(clips[uri])[SCORES]
    rows = table.filter(pa.compute.equal(table.column("uri"), uri))
    np.testing.assert_allclose(np.stack(rows.column("scores").to_numpy(zero_copy_only=False)), expected,
                               atol=1e-5)
