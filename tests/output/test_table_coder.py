"""Arrow tables between Beam steps: carried as Arrow IPC, measured without being pickled."""

from __future__ import annotations

import copyreg

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from transforms.output.table_coder import ARROW_TABLE, ArrowTableCoder


def frames_like(rows: int, seed: int = 0) -> pa.Table:
    values = np.random.default_rng(seed).random((rows, 521), np.float32)
    offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * 521)
    return pa.table({"uri": [f"/a/{i % 3}.wav" for i in range(rows)],
                     "scores": pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1)))})


def test_a_table_survives_the_coder_and_its_size_is_its_bytes():
    table = frames_like(50)
    coder = ArrowTableCoder()
    assert coder.decode(coder.encode(table)).equals(table)
    assert coder.estimate_size(table) == table.nbytes
    assert beam.coders.registry.get_coder(ARROW_TABLE) == coder


@pytest.fixture
def pickled_tables():
    """Counts tables pickled while the test runs (Beam's default coder pickles what it measures)."""
    counted = []
    reduce = pa.Table.__reduce__

    def counting(table):
        counted.append(table.num_rows)
        return reduce(table)

    copyreg.pickle(pa.Table, counting)
    yield counted
    del copyreg.dispatch_table[pa.Table]


class MakeTables(beam.DoFn):
    def process(self, seed):
        yield frames_like(2000, seed)  # ~4 MB


@pytest.mark.parametrize("typed", [False, True])
def test_typed_tables_are_measured_without_pickling_and_cross_a_shuffle_intact(pickled_tables, typed):
    make = beam.ParDo(MakeTables())
    if typed:
        make = make.with_output_types(ARROW_TABLE)
    with beam.Pipeline(options=PipelineOptions(runner="FnApiRunner")) as p:
        tables = p | beam.Create([0, 1, 2]) | make
        rows = (tables
                | beam.Reshuffle()  # encoded and decoded by the PCollection's coder
                | beam.Map(lambda t: (t.num_rows, round(float(np.asarray(t["scores"][0].values)[0]), 6))))
        assert_that(rows, equal_to([(2000, round(float(np.asarray(frames_like(1, s)["scores"][0].values)[0]),
                                                 6)) for s in (0, 1, 2)]))
    # Untyped, every table is pickled at least once just to estimate the PCollection's size.
    assert (len(pickled_tables) == 0) if typed else (len(pickled_tables) >= 3)
