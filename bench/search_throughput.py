"""Search throughput: frames scanned per second, in process and as a Beam pipeline (FnApiRunner).

    python -m bench.search_throughput [--frames OUT_DIR] [--total 400000] [--queries 1,10]
                                      [--dtype float32] [--work /tmp/search_throughput]

The corpus is real YAMNet frames (``--frames``, default: the ESC-10 clips tagged with
``../shared/models/yamnet-approx`` into WORK/esc10) repeated under new URIs up to ``--total`` frames,
written as tag_audio writes them (zstd, row groups of ~48 MB, parts of 100,000 frames) with the
embedding column only in ``--dtype``.  Rows:

- read only: the embedding column decoded from Parquet into one matrix per row group, one part
  after the other, nothing scored (the bound for the rest);
- in process: ``transforms.answers.search_run.search_local`` (what ``beam_jobs.search`` runs without
  ``--runner``), top 100 per query;
- Beam: ``search_run.search_beam`` on FnApiRunner, top 100 per query, including pipeline start-up.

frames/s is frames over wall time; frames per CPU-s divides by this process's CPU time (every core).
The corpus is read once before the timed rows, so each finds it in the page cache (a first read from
disk costs more CPU: about 75,000 frames per CPU-s instead of 140,000 in the read-only row here).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
PART_FRAMES = 100_000
ROW_GROUP_BYTES = 48 * 1024 * 1024


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", default=None, help="a tag_audio output to repeat (default: ESC-10)")
    parser.add_argument("--shared", default=str(REPO_ROOT.parent / "shared"))
    parser.add_argument("--work", default="/tmp/search_throughput")
    parser.add_argument("--total", type=int, default=400_000, help="frames in the corpus")
    parser.add_argument("--queries", default="1,10", help="query counts to time")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16"))
    parser.add_argument("--skip_beam", action="store_true")
    return parser.parse_args(argv)


def source_frames(args, work: Path) -> pa.Table:
    frames = Path(args.frames) if args.frames else work / "esc10"
    if not args.frames and not (frames / "frames").exists():
        from beam_jobs import tag_audio

        shared = Path(args.shared)
        model = shared / "models" / "yamnet-approx"
        if tag_audio.run(["--input", str(shared / "data" / "esc10" / "audio"), "--output", str(frames),
                          "--model_path", str(model), "--progress_s", "0"]) != 0:
            raise RuntimeError("tag_audio failed")
    import pyarrow.dataset as pads

    dataset = pads.dataset(str(frames / "frames"), format="parquet", partitioning="hive")
    return dataset.to_table(columns=["uri", "frame_index", "start_s", "end_s", "embedding"])


def write_corpus(base: pa.Table, directory: Path, total: int, dtype: str) -> list[str]:
    directory.mkdir(parents=True)
    embedding = base.column("embedding").combine_chunks()
    width = len(embedding[0])
    values = embedding.flatten().to_numpy(zero_copy_only=False).astype(dtype)
    base = base.set_column(base.schema.get_field_index("embedding"), "embedding",
                           pa.ListArray.from_arrays(embedding.offsets, pa.array(values)))
    rows_per_group = max(1, ROW_GROUP_BYTES // (width * np.dtype(dtype).itemsize))
    paths, written, copy = [], 0, 0
    while written < total:
        pieces, size = [], 0
        while size < min(PART_FRAMES, total - written):
            take = min(base.num_rows, min(PART_FRAMES, total - written) - size)
            piece = base.slice(0, take)
            names = [u.rsplit("/", 1)[-1] for u in piece.column("uri").to_pylist()]
            uris = [f"gs://corpus/copy{copy:05d}/{name}" for name in names]
            pieces.append(piece.set_column(0, "uri", pa.array(uris)))
            size += take
            copy += 1
        path = directory / f"part-{len(paths):05d}.parquet"
        pq.write_table(pa.concat_tables(pieces), path, compression="zstd", row_group_size=rows_per_group)
        paths.append(str(path))
        written += size
    return paths


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn):
    wall, cpu = time.perf_counter(), _cpu()
    result = fn()
    return result, time.perf_counter() - wall, _cpu() - cpu


def read_only(paths: list[str]) -> int:
    from transforms.answers.search import embedding_matrix

    rows = 0
    for path in paths:
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            rows += embedding_matrix(parquet.read_row_group(group, columns=["embedding"], use_threads=False)
                                     ).shape[0]
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    work = Path(args.work)
    base = source_frames(args, work)
    corpus = work / f"corpus_{args.total}_{args.dtype}"
    paths = sorted(str(p) for p in corpus.glob("*.parquet")) if corpus.exists() else []
    if sum(pq.read_metadata(p).num_rows for p in paths) != args.total:
        shutil.rmtree(corpus, ignore_errors=True)
        paths = write_corpus(base, corpus, args.total, args.dtype)
    size = sum(os.path.getsize(p) for p in paths)
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.answers.search import QuerySet, unit_rows
    from transforms.answers.search_run import SearchSettings, search_beam, search_local

    rng = np.random.default_rng(0)
    dim = len(base.column("embedding")[0])
    rows = []
    for path in paths:  # every row is timed with the corpus in the page cache, as a second search finds it
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass
    frames, wall, cpu = timed(lambda: read_only(paths))
    rows.append(("read only (decode the embedding column)", "-", frames, wall, cpu))
    for count in [int(q) for q in args.queries.split(",")]:
        vectors = unit_rows(rng.normal(size=(count, dim)))
        settings = SearchSettings(tuple(f"q{i}" for i in range(count)), QuerySet.single(vectors), 100)
        (_, frames), wall, cpu = timed(lambda s=settings: search_local(paths, s))
        rows.append(("in process (search_local)", count, frames, wall, cpu))
        if not args.skip_beam:
            (_, frames), wall, cpu = timed(lambda s=settings: search_beam(
                paths, s, str(work / "beam_out"), PipelineOptions(runner="FnApiRunner")))
            rows.append(("Beam, FnApiRunner (search_beam)", count, frames, wall, cpu))
    results = {"frames": args.total, "dtype": args.dtype, "parquet_bytes": size, "parts": len(paths),
               "cpus": os.cpu_count(), "rows": [dict(zip(("row", "queries", "frames", "wall_s", "cpu_s"), r))
                                                for r in rows]}
    (work / f"results_{args.dtype}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{args.total} frames of {dim}-d {args.dtype} embeddings, {size / 2**20:.0f} MiB of Parquet in "
          f"{len(paths)} parts, {os.cpu_count()} CPUs")
    print("| row | queries | frames/s | MiB/s of Parquet | frames per CPU-s |\n|---|---:|---:|---:|---:|")
    for name, count, frames, wall, cpu in rows:
        mib_s = size / 2**20 * frames / args.total / wall
        print(f"| {name} | {count} | {frames / wall:,.0f} | {mib_s:,.0f} | {frames / cpu:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
