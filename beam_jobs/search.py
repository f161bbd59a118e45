"""search: find the frames that sound like a few examples, and a page to label them from.

    python -m beam_jobs.search --frames OUT_DIR --query clip.wav [--query URI@START-END ...] \\
        [--top_k 100] [--max_per_file N] --output DIR [--runs ID,ID] [--model_path PATH] \\
        [--engine auto|local|beam] [Beam options]

A query is a sound file, or a span of one (``recording.flac@12.5-17``); a span
of a file the frames hold is answered from its own frames, anything else is
embedded with the model that made them (refused when the model is another).
Every frame of OUT_DIR (every succeeded run of one model, or --runs) is scored
by cosine similarity with each query (its best match among the query's frames,
or with their mean: --query_pooling) and the top k kept.  DIR receives hits.parquet
(query, rank, uri, frame_index, start_s, end_s, score), index.html (spectrogram
thumbnails, players for local files, yes/no marks that download as a labels CSV
for build_training_set) and search.json.

--engine local (the default without --runner) scans in this process; beam (the
default with --runner) runs a Beam pipeline, e.g. on Dataflow.
"""

from __future__ import annotations

import argparse
import sys
import time

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

import storage
from beam_jobs import command, parse_job_args
from beam_jobs.runners import expand_runner_alias
from schemas.tables import METADATA_PREFIX
from transforms.answers.queries import FramesModel, QueryError, embed_queries
from transforms.answers.search import POOLINGS, QuerySet
from transforms.answers.search_page import write_page
from transforms.answers.search_run import SearchSettings, hits_table, search_beam, search_local, write_hits
from transforms.training.frame_source import FramesNotUsableError, check_columns, find_frames

SUMMARY_FILE = "search.json"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m beam_jobs.search", description=__doc__, allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any Apache Beam pipeline option is accepted as well (with --engine beam).")
    parser.add_argument("--frames", default=None, help="A tag_audio output directory (local or gs://).")
    parser.add_argument("--query", action="append", default=[],
                        help="A sound file, or FILE@START_S-END_S (a span of it); repeatable.")
    parser.add_argument("--top_k", type=int, default=100, help="Hits kept per query.")
    parser.add_argument("--max_per_file", type=int, default=0,
                        help="At most this many hits of one file per query (0: no limit).")
    parser.add_argument("--query_pooling", default="max", choices=POOLINGS,
                        help="max: a frame scores its best cosine with any frame of the query (finds copies "
                             "of any part of it); mean: its cosine with the query's mean direction.")
    parser.add_argument("--output", default=None, help="Where hits.parquet and index.html are written.")
    parser.add_argument("--runs", default="", help="Comma-separated run ids of --frames to search "
                        "(default: every succeeded run; they must share one model and framing).")
    parser.add_argument("--model_path", default=None,
                        help="The frames' model, when its run record's path cannot be read here.")
    parser.add_argument("--engine", default="auto", choices=("auto", "local", "beam"),
                        help="local: scan in this process; beam: a Beam pipeline; auto: beam when --runner "
                             "is given.")
    parser.add_argument("--no_thumbnails", action="store_true",
                        help="Leave the spectrograms out of the page (no audio is decoded).")
    return parser


def _fail(message: str) -> int:
    print(f"search: {message}", file=sys.stderr)
    return 2


def run(argv: list[str] | None = None) -> int:
    """Runs the search; returns the exit status (0 ok, 2 usage or input error)."""
    parsed = parse_job_args(_parser(), argv)
    if parsed is None:
        return 0
    opts, pipeline_args = parsed
    if not (opts.frames and opts.query and opts.output):
        return _fail("--frames OUT_DIR, at least one --query and --output DIR are required")
    if opts.top_k < 1 or opts.max_per_file < 0:
        return _fail("--top_k must be >= 1 and --max_per_file >= 0")
    started = time.perf_counter()
    try:
        source = find_frames(opts.frames, tuple(r.strip() for r in opts.runs.split(",") if r.strip()))
        check_columns(source, ("embedding",))
        record = next((run.record for run in reversed(source.runs) if run.record), None)
        frames_model = FramesModel(source.metadata, record.model if record else {},
                                   record.parameters if record else {})
        names, vectors = embed_queries(opts.query, source.frame_files, frames_model, opts.model_path)
    except (FramesNotUsableError, QueryError) as e:
        return _fail(str(e))
    embedded = time.perf_counter()
    settings = SearchSettings(tuple(names), QuerySet.of(vectors, opts.query_pooling), opts.top_k,
                              opts.max_per_file)
    metadata = {(METADATA_PREFIX + k).encode(): v.encode() for k, v in source.metadata.items()}
    options = PipelineOptions(expand_runner_alias(pipeline_args))
    standard = options.view_as(StandardOptions)
    engine = opts.engine if opts.engine != "auto" else ("beam" if standard.runner else "local")
    output = opts.output.rstrip("/")
    if engine == "beam":
        standard.runner = standard.runner or "FnApiRunner"  # DirectRunner first tries Prism (a download)
        table, scanned = search_beam(source.frame_files, settings, output, options, metadata)
    else:
        hits, scanned = search_local(source.frame_files, settings)
        table = hits_table(names, hits, metadata)
        write_hits(output, table)
    scan_s = time.perf_counter() - embedded
    page = write_page(output, table, thumbnails=not opts.no_thumbnails,
                      title=f"Search of {source.out_dir} ({source.metadata.get('model_identity')})")
    summary = {"frames": source.out_dir, "runs": list(source.run_ids), "queries": names, "top_k": opts.top_k,
               "max_per_file": opts.max_per_file, "query_pooling": opts.query_pooling, "engine": engine,
               "frames_scanned": scanned,
               "embed_queries_s": round(embedded - started, 2), "scan_s": round(scan_s, 2),
               "frames_per_s": round(scanned / scan_s) if scan_s > 0 and scanned is not None else None,
               "model": source.base_model()}
    storage.write_json(storage.join(output, SUMMARY_FILE), summary)
    rows = table.select(["query", "uri", "start_s", "end_s", "score"]).to_pylist()
    for name in names:
        top = [r for r in rows if r["query"] == name][:3]
        best = "; ".join(f"{r['uri'].rsplit('/', 1)[-1]} {r['start_s']:.2f}-{r['end_s']:.2f} s "
                         f"({r['score']:.3f})" for r in top)
        print(f"{name}: {best or 'no hits'}")
    scanned_text = f"{scanned} frames" if scanned is not None else "frames (uncounted: no runner metrics)"
    print(f"search: {scanned_text} scanned in {scan_s:.2f} s ({engine}); {table.num_rows} hits")
    print(f"  hits       {storage.join(output, 'hits.parquet')}")
    print(f"  page       {page}")
    return 0


if __name__ == "__main__":
    command(run)
