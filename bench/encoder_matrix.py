"""The encoder matrix on real recordings: is every valid file ``ok``, as long as FFmpeg decodes it?

    python -m bench.encoder_matrix [--sources speech:30,rooster:10] [--cells opus/] [--markdown]

Each cell of ``tests/decoding/encoder_cells.py`` (one codec, one encoder,
one muxer) writes every source, a real recording from ../shared/data of 10 s
to 3 min (Speech Commands words one after another, or ESC-10 clips of one
class); the product decodes it at its own rate and the row counts the files
that came back ``ok`` and the largest difference from FFmpeg's own decode of
the same file (every frame, no timestamps looked at).  Cells whose tool is
missing, or cannot write the format, are listed with the reason.  The
default sources are few and short; the table in docs/decoding.md used
``--sources speech:10,speech:60,speech:180,rooster:10,rain:60,helicopter:180``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import av

from tests.decoding.encoder_cells import MATRIX, long_recording
from transforms.decoding.stream import AudioStream, probe

DEFAULT_SOURCES = "speech:10,rooster:30"


def ffmpeg_samples(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(frame.samples for frame in container.decode(audio=0))


def run_cell(cell_id: str, sources: list[tuple[str, float]], directory: Path) -> dict:
    cell = MATRIX[cell_id]
    reason = cell.unavailable()
    if reason is not None:
        return {"cell": cell_id, "skipped": reason}
    ok, worst, problems = 0, 0, []
    for kind, seconds in sources:
        signal = long_recording(kind, seconds, cell.rate)
        if signal is None:
            return {"cell": cell_id, "skipped": f"no {kind} recordings under ../shared/data"}
        work = directory / f"{cell_id.replace('/', '_')}_{kind}_{seconds:g}"
        work.mkdir()
        path = cell.write(work, signal)
        with AudioStream(str(path), probe(str(path)).sample_rate) as stream:
            decoded = sum(chunk.size for chunk in stream)
            problem = stream.problem
        worst = max(worst, abs(decoded - ffmpeg_samples(path)))
        if problem is None:
            ok += 1
        else:
            problems.append(f"{kind} {seconds:g} s: {problem}")
        for file in work.iterdir():
            file.unlink()  # a 3-min WAV is 30 MB: keep the disk to one source at a time
    return {"cell": cell_id, "ok": ok, "files": len(sources), "max_diff": worst, "problems": problems}


def parse_sources(text: str) -> list[tuple[str, float]]:
    pairs = [item.split(":") for item in text.split(",") if item]
    return [(kind, float(seconds)) for kind, seconds in pairs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", default=DEFAULT_SOURCES,
                        help="kind:seconds,... (kind: speech or an ESC-10 class)")
    parser.add_argument("--cells", default="", help="Only cells whose id starts with this.")
    parser.add_argument("--markdown", action="store_true", help="Print the table as Markdown.")
    args = parser.parse_args(argv)
    sources = parse_sources(args.sources)
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="encoder_matrix_") as work:
        for cell_id in MATRIX:
            if cell_id.startswith(args.cells):
                rows.append(run_cell(cell_id, sources, Path(work)))
                print(f"  {cell_id}: {rows[-1].get('skipped') or 'done'}", file=sys.stderr, flush=True)
    print(f"Sources: {', '.join(f'{kind} {seconds:g} s' for kind, seconds in sources)}; "
          f"{time.perf_counter() - started:.0f} s")
    if args.markdown:
        print("| cell | ok | max. difference from FFmpeg's decode (samples) |\n|---|---|---|")
    for row in rows:
        if "skipped" in row:
            outcome = ("skipped", row["skipped"])
        else:
            outcome = (f"{row['ok']}/{row['files']}", str(row["max_diff"]))
        print(f"| {row['cell']} | {outcome[0]} | {outcome[1]} |" if args.markdown
              else f"{row['cell']:40s}{outcome[0]:>10s}  {outcome[1]}")
        for problem in row.get("problems", []):
            print(f"    {problem}")
    failed = [row for row in rows if row.get("problems")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
