"""Scanning the frames for the queries' top k: in this process, or as a Beam pipeline.

In process (a laptop): Parquet row groups of the embedding column, one matrix
product per row group, each group's top k per query merged into a running top
k; a few parts are read at once.  As a Beam job (Dataflow, billions of
frames): each Parquet batch is scored where it is read and reduced to its top
k per query, and a CombineFn merges those per query, the per-worker partial
merges first (combiner lifting); the last step writes the hits Parquet.  Both
give the same hits: ``search.best`` is exact under any split of the frames.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from collections.abc import Sequence

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.parquetio import ReadAllFromParquetBatched

import storage
from schemas.answers import hits_schema
from transforms.answers.search import SEARCH_COLUMNS, Candidates, QuerySet, best, table_candidates

HITS_FILE = "hits.parquet"
READ_THREADS = max(2, min(8, os.cpu_count() or 2))


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    names: tuple[str, ...]  # one per query, as given
    queries: QuerySet
    top_k: int = 100
    max_per_file: int = 0  # > 0: at most this many hits of one file


# --- in process ---------------------------------------------------------------------------------

def _merge(into: list[Candidates], found, settings: SearchSettings) -> None:
    for q, candidates in found:
        into[q] = best(Candidates.concat([into[q], candidates]), settings.top_k, settings.max_per_file)


def _scan_part(path: str, settings: SearchSettings) -> tuple[list[Candidates], int]:
    hits = [Candidates.empty() for _ in settings.names]
    rows = 0
    with storage.open_read(path) as f:
        parquet = pq.ParquetFile(f)
        for group in range(parquet.num_row_groups):
            # Whole row groups on this thread: parts are what runs in parallel (READ_THREADS).
            table = parquet.read_row_group(group, columns=list(SEARCH_COLUMNS), use_threads=False)
            rows += table.num_rows
            _merge(hits, table_candidates(table, settings.queries, settings.top_k, settings.max_per_file),
                   settings)
    return hits, rows


def search_local(frame_files: Sequence[str], settings: SearchSettings, threads: int = READ_THREADS
                 ) -> tuple[list[Candidates], int]:
    """(per query its hits, best first; frames scanned), reading ``threads`` parts at once."""
    hits = [Candidates.empty() for _ in settings.names]
    scanned = 0
    with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
        for part_hits, rows in pool.map(lambda p: _scan_part(p, settings), frame_files):
            _merge(hits, enumerate(part_hits), settings)
            scanned += rows
    return hits, scanned


# --- as a Beam pipeline -------------------------------------------------------------------------

class ScoreFrames(beam.DoFn):
    """A frames table -> (query index, that table's top k for the query)."""

    def __init__(self, settings: SearchSettings):
        self._settings = settings
        self._frames = beam.metrics.Metrics.counter("search", "frames")

    def process(self, table: pa.Table):
        self._frames.inc(table.num_rows)
        s = self._settings
        yield from table_candidates(table, s.queries, s.top_k, s.max_per_file)


class TopHits(beam.CombineFn):
    """Per query: the top k of every shard's top k."""

    def __init__(self, top_k: int, max_per_file: int):
        self._k = top_k
        self._max_per_file = max_per_file

    def create_accumulator(self) -> Candidates:
        return Candidates.empty()

    def add_input(self, accumulator: Candidates, candidates: Candidates) -> Candidates:
        return best(Candidates.concat([accumulator, candidates]), self._k, self._max_per_file)

    def merge_accumulators(self, accumulators) -> Candidates:
        return best(Candidates.concat(list(accumulators)), self._k, self._max_per_file)

    def extract_output(self, accumulator: Candidates) -> Candidates:
        return accumulator


class WriteHits(beam.DoFn):
    """Runs once: every query's hits -> OUTPUT/hits.parquet."""

    def __init__(self, output: str, settings: SearchSettings, metadata: dict[bytes, bytes] | None):
        self._output = output
        self._settings = settings
        self._metadata = metadata

    def process(self, per_query: list[tuple[int, Candidates]]):
        found = dict(per_query)
        hits = [found.get(q, Candidates.empty()) for q in range(len(self._settings.names))]
        write_hits(self._output, hits_table(self._settings.names, hits, self._metadata))
        yield len(per_query)


@beam.ptransform_fn
def SearchFrameFiles(pbegin, frame_files: Sequence[str], settings: SearchSettings, output: str,  # noqa: N802
                     metadata: dict[bytes, bytes] | None = None):
    return (pbegin
            | "ListFrameFiles" >> beam.Create(list(frame_files))
            | "ReadEmbeddings" >> ReadAllFromParquetBatched(columns=list(SEARCH_COLUMNS))
            | "ScoreAndKeepTopK" >> beam.ParDo(ScoreFrames(settings))
            | "TopKPerQuery" >> beam.CombinePerKey(TopHits(settings.top_k, settings.max_per_file))
            | "AllQueries" >> beam.combiners.ToList()
            | "WriteHits" >> beam.ParDo(WriteHits(output, settings, metadata)))


def search_beam(frame_files: Sequence[str], settings: SearchSettings, output: str, options,
                metadata: dict[bytes, bytes] | None = None) -> tuple[pa.Table, int | None]:
    """Runs the pipeline; returns (the hits table it wrote, frames scanned, None when the runner
    collects no metrics: Beam's DaskRunner)."""
    pipeline = beam.Pipeline(options=options)
    _ = pipeline | "Search" >> SearchFrameFiles(frame_files, settings, output, metadata)
    result = pipeline.run()
    result.wait_until_finish()
    try:
        counters = result.metrics().query(beam.metrics.MetricsFilter().with_name("frames"))["counters"]
    except NotImplementedError:
        return read_hits(output), None
    scanned = sum(c.committed or c.attempted or 0 for c in counters)
    return read_hits(output), int(scanned)


# --- the hits table -----------------------------------------------------------------------------

def hits_table(names: Sequence[str], hits: Sequence[Candidates], metadata: dict[bytes, bytes] | None = None
               ) -> pa.Table:
    columns: dict[str, list] = {name: [] for name in hits_schema().names}
    for name, found in zip(names, hits):
        n = len(found)
        columns["query"] += [name] * n
        columns["rank"] += list(range(1, n + 1))
        columns["uri"] += [str(u) for u in found.uri]
        columns["frame_index"] += found.frame_index.tolist()
        columns["start_s"] += found.start_s.tolist()
        columns["end_s"] += found.end_s.tolist()
        columns["score"] += found.score.tolist()
    schema = hits_schema(metadata)
    return pa.Table.from_pydict(columns, schema=schema)


def write_hits(output: str, table: pa.Table) -> str:
    path = storage.join(output, HITS_FILE)
    with storage.open_write(path) as f:
        pq.write_table(table, f, compression="zstd")
    return path


def read_hits(output: str) -> pa.Table:
    with storage.open_read(storage.join(output, HITS_FILE)) as f:
        return pq.read_table(f)

