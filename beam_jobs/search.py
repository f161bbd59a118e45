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

from beam_jobs import cli
from transforms.answers.queries import QueryError
from transforms.answers.search import POOLINGS
from transforms.answers.search_run import SearchRequest, search
from transforms.output.frame_source import FramesNotUsableError, find_frames

JOB = "search"


def add_options(parser: argparse.ArgumentParser) -> None:
    cli.add_frames_options(parser, runs="search")
    parser.add_argument("--query", action="append", default=[],
                        help="A sound file, or FILE@START_S-END_S (a span of it); repeatable.")
    parser.add_argument("--top_k", type=int, default=100, help="Hits kept per query.")
    parser.add_argument("--max_per_file", type=int, default=0,
                        help="At most this many hits of one file per query (0: no limit).")
    parser.add_argument("--query_pooling", default="max", choices=POOLINGS,
                        help="max: a frame scores its best cosine with any frame of the query (finds copies "
                             "of any part of it); mean: its cosine with the query's mean direction.")
    parser.add_argument("--output", default=None, help="Where hits.parquet and index.html are written.")
    parser.add_argument("--model_path", default=None,
                        help="The frames' model, when its run record's path cannot be read here.")
    parser.add_argument("--engine", default="auto", choices=("auto", "local", "beam"),
                        help="local: scan in this process; beam: a Beam pipeline; auto: beam when --runner "
                             "is given.")
    parser.add_argument("--no_thumbnails", action="store_true",
                        help="Leave the spectrograms out of the page (no audio is decoded).")


@cli.job(JOB, add_options, beam=True,
         epilog="Any Apache Beam pipeline option is accepted as well (--engine beam).")
def run(opts: argparse.Namespace, pipeline_args: list[str]) -> int:
    """Runs the search; returns the exit status (0 ok, 2 usage or input error)."""
    cli.require(opts, frames="OUT_DIR", query="FILE (one or more)", output="DIR")
    if opts.top_k < 1 or opts.max_per_file < 0:
        raise cli.UsageError("--top_k must be >= 1 and --max_per_file >= 0")
    engine = opts.engine
    if engine == "auto":
        engine = "beam" if cli.names_a_runner(pipeline_args) else "local"
    request = SearchRequest(tuple(opts.query), opts.top_k, opts.max_per_file, opts.query_pooling,
                            opts.model_path, thumbnails=not opts.no_thumbnails)
    try:
        result = search(find_frames(opts.frames, cli.comma_separated(opts.runs)), request, opts.output,
                        cli.pipeline_options(pipeline_args) if engine == "beam" else None)
    except (FramesNotUsableError, QueryError) as e:
        return cli.fail(JOB, str(e))
    summary = result.summary
    rows = result.table.select(["query", "uri", "start_s", "end_s", "score"]).to_pylist()
    for name in summary["queries"]:
        top = [r for r in rows if r["query"] == name][:3]
        best = "; ".join(f"{r['uri'].rsplit('/', 1)[-1]} {r['start_s']:.2f}-{r['end_s']:.2f} s "
                         f"({r['score']:.3f})" for r in top)
        print(f"{name}: {best or 'no hits'}")
    scanned = summary["frames_scanned"]
    scanned = f"{scanned} frames" if scanned is not None else "frames (uncounted: no runner metrics)"
    print(f"search: {scanned} scanned in {summary['scan_s']:.2f} s ({engine}); "
          f"{result.table.num_rows} hits")
    print(f"  hits       {result.hits_path}")
    print(f"  page       {result.page_path}")
    return 0


main = cli.main_for(run, __name__)
