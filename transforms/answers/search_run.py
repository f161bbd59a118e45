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
import time
from collections.abc import Callable, Sequence

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.parquetio import ReadAllFromParquetBatched

import storage
from schemas.answers import hits_schema
from schemas.tables import METADATA_PREFIX
from transforms.answers.queries import FramesModel, QueryError, embed_queries
from transforms.answers.search import SEARCH_COLUMNS, Candidates, QuerySet, best, table_candidates
from transforms.answers.search_page import write_page
from transforms.output.read_pins import reading

HITS_FILE = "hits.parquet"
SUMMARY_FILE = "search.json"
READ_THREADS = max(2, min(8, os.cpu_count() or 2))
Keep = Callable[[str, pa.Table], pa.Table]  # (frames part, its rows) -> the rows to search


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


def _scan_part(path: str, settings: SearchSettings, keep: Keep | None = None) -> tuple[list[Candidates], int]:
    hits = [Candidates.empty() for _ in settings.names]
    rows = 0
    with storage.open_read(path) as f:
        parquet = pq.ParquetFile(f)
        for group in range(parquet.num_row_groups):
            # Whole row groups on this thread: parts are what runs in parallel (READ_THREADS).
            table = parquet.read_row_group(group, columns=list(SEARCH_COLUMNS), use_threads=False)
            table = keep(path, table) if keep else table
            rows += table.num_rows
            _merge(hits, table_candidates(table, settings.queries, settings.top_k, settings.max_per_file),
                   settings)
    return hits, rows


def search_local(frame_files: Sequence[str], settings: SearchSettings, threads: int = READ_THREADS,
                 keep: Keep | None = None) -> tuple[list[Candidates], int]:
    """(per query its hits, best first; frames scanned), reading ``threads`` parts at once; ``keep``: the
    rows of a part to search (``FrameSource.keep``: the current ones)."""
    hits = [Candidates.empty() for _ in settings.names]
    scanned = 0
    with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
        for part_hits, rows in pool.map(lambda p: _scan_part(p, settings, keep), frame_files):
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
                     metadata: dict[bytes, bytes] | None = None, keep: Keep | None = None):
    return (pbegin
            | "ListFrameFiles" >> beam.Create(list(frame_files))
            | "ReadEmbeddings" >> ReadAllFromParquetBatched(columns=list(SEARCH_COLUMNS), with_filename=True)
            | "CurrentRows" >> beam.Map(lambda ft: keep(ft[0], ft[1]) if keep else ft[1])
            | "ScoreAndKeepTopK" >> beam.ParDo(ScoreFrames(settings))
            | "TopKPerQuery" >> beam.CombinePerKey(TopHits(settings.top_k, settings.max_per_file))
            | "AllQueries" >> beam.combiners.ToList()
            | "WriteHits" >> beam.ParDo(WriteHits(output, settings, metadata)))


def search_beam(frame_files: Sequence[str], settings: SearchSettings, output: str, options,
                metadata: dict[bytes, bytes] | None = None, keep: Keep | None = None
                ) -> tuple[pa.Table, int | None]:
    """Runs the pipeline; returns (the hits table it wrote, frames scanned: None when the runner collects
    no metrics, as Beam's DaskRunner)."""
    pipeline = beam.Pipeline(options=options)
    _ = pipeline | "Search" >> SearchFrameFiles(frame_files, settings, output, metadata, keep)
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
        columns["channel"] += [None if c < 0 else int(c) for c in found.channel]
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



# --- a whole search: queries embedded, frames scanned, hits, page and summary written ---------------

@dataclasses.dataclass(frozen=True)
class SearchRequest:
    queries: tuple[str, ...]  # sound files, or FILE@START_S-END_S
    top_k: int = 100
    max_per_file: int = 0
    pooling: str = "max"  # search.POOLINGS
    model_path: str | None = None  # the frames' model, when its run record's path cannot be read here
    thumbnails: bool = True  # spectrograms on the page (decodes each hit's audio)


@dataclasses.dataclass(frozen=True)
class SearchResult:
    table: pa.Table  # the hits, as written
    summary: dict  # search.json
    hits_path: str
    page_path: str


def check_embeddings(source) -> None:
    """Every run of ``source`` (the frames of one model, ``find_frames``) has embeddings to search;
    raises QueryError."""
    for run in source.runs:
        if "embedding" not in run.columns or int(run.metadata.get("embedding_dim", "0")) <= 0:
            raise QueryError(f"run {run.run_id} has no embedding column to search (its model gives none)")


def search(source, request: SearchRequest, output: str, options=None) -> SearchResult:
    """Embeds the queries, scans the frames of ``source`` (in this process, or as a Beam pipeline with
    ``options``) and writes OUTPUT/hits.parquet, index.html and search.json.  Raises QueryError before
    anything is written."""
    started = time.perf_counter()
    check_embeddings(source)
    record = next((run.record for run in reversed(source.runs) if run.record), None)
    frames_model = FramesModel(source.metadata, record.model if record else {},
                               record.parameters if record else {})
    names, vectors = embed_queries(list(request.queries), source.frame_files, frames_model,
                                   request.model_path)
    embedded = time.perf_counter()
    settings = SearchSettings(tuple(names), QuerySet.of(vectors, request.pooling), request.top_k,
                              request.max_per_file)
    metadata = {(METADATA_PREFIX + k).encode(): v.encode() for k, v in source.metadata.items()}
    output = output.rstrip("/")
    with reading(source.out_dir, source.run_ids, "search"):
        if options is not None:
            table, scanned = search_beam(source.frame_files, settings, output, options, metadata, source.keep)
        else:
            hits, scanned = search_local(source.frame_files, settings, keep=source.keep)
            table = hits_table(names, hits, metadata)
            write_hits(output, table)
    scan_s = time.perf_counter() - embedded
    page = write_page(output, table, thumbnails=request.thumbnails,
                      title=f"Search of {source.out_dir} ({source.metadata.get('model_identity')})")
    summary = {"frames": source.out_dir, "runs": list(source.run_ids), "queries": names,
               "top_k": request.top_k, "max_per_file": request.max_per_file, "query_pooling": request.pooling,
               "engine": "local" if options is None else "beam", "frames_scanned": scanned,
               "embed_queries_s": round(embedded - started, 2), "scan_s": round(scan_s, 2),
               "frames_per_s": round(scanned / scan_s) if scan_s > 0 and scanned is not None else None,
               "model": source.base_model()}
    storage.write_json(storage.join(output, SUMMARY_FILE), summary)
    return SearchResult(table, summary, storage.join(output, HITS_FILE), page)
