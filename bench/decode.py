"""Decoding alone: the product's decoder against the ffmpeg command line, in CPU seconds per frame.

    python -m bench.decode [--clips 240] [--rounds 3] [--json FILE]

On the same corpus as ``bench.compare`` (ESC-10: Ogg Vorbis, 44.1 kHz, 5 s),
every row turns each file into mono float32 at 16 kHz, the model's input:

- ``product decoder``: ``transforms.decoding.stream.decode_all`` in this
  process (FFmpeg through PyAV, channels averaged, soxr at the product's
  quality);
- ``product decoder, decoder process``: the same through one decoder process
  (``transforms.decoding.pool``), as tag_audio runs it: adds the messages
  (pickled chunks through a pipe) and the reply thread of this process;
- ``open + probe only``: ``AudioStream`` opened and closed, no sample decoded:
  the per-file cost;
- ``FFmpeg + soxr floor``: the least any decoder on PyAV can do: demux, decode,
  one soxr call per file, no checks, no timeline;
- ``ffmpeg CLI``: one ``ffmpeg`` process per file (the binary of the
  ``imageio-ffmpeg`` wheel), ``-ac 1`` and ``aresample`` with soxr at the same
  precision, raw float32 to a pipe; its CPU is the child's plus this process's;
- ``ffmpeg CLI, start-up only``: the same command on a 1 ms generated input:
  what a process costs before it decodes anything.

CPU seconds per frame divide by the YAMNet frames of the decoded audio (one
per 0.48 s), so the figures compare with the model's cost per frame. Rows run
interleaved, ``--rounds`` times; the table gives the median and the spread
(min-max) over rounds. The load average before and after goes with them: on a
shared machine compare rows of one run only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.corpus import clip_corpus

SAMPLE_RATE = 16000
WINDOW, HOP = 15600, 7680
# soxr's precision in bits for each quality recipe (soxr.h): what ffmpeg's aresample is given.
SOXR_PRECISION = {"QQ": 8, "LQ": 16, "MQ": 16, "HQ": 20, "VHQ": 28}


def ffmpeg_exe() -> str | None:
    """The ffmpeg of the imageio-ffmpeg wheel, when it runs the rows' command (a build with soxr)."""
    from tests.audio_tools import succeeds

    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()  # IMAGEIO_FFMPEG_EXE may point it at another build
    except (ImportError, RuntimeError):
        return None
    return exe if succeeds(startup_command(exe, "VHQ"), min_output_bytes=4) else None  # 16 float32 samples


def ffmpeg_command(exe: str, uri: str, quality: str) -> list[str]:
    return [exe, "-nostdin", "-v", "error", "-threads", "1", "-i", uri, "-ac", "1",
            "-af", f"aresample=resampler=soxr:precision={SOXR_PRECISION[quality]}",
            "-ar", str(SAMPLE_RATE), "-f", "f32le", "-"]


def own_and_children_cpu() -> float:
    """CPU seconds of this process (all threads) and its children, finished or running."""
    from bench.compare import cpu_seconds

    return cpu_seconds()


def frames_of(samples: int) -> int:
    from transforms.decoding.windows import num_frames

    return num_frames(samples, WINDOW, HOP)


# --- one function per row: each decodes every file and returns the samples it produced ------------

def product(files: list[str]) -> int:
    from transforms.decoding.stream import decode_all

    return sum(decode_all(uri, SAMPLE_RATE).size for uri in files)


def product_in_decoder_process(files: list[str], pool) -> int:
    """Through ``pool`` (started and warmed before timing, as in a worker that has run for a while)."""
    from transforms.decoding.messages import FINAL_KINDS, SAMPLES, DecodeRequest
    from transforms.decoding.pool import DecodeSession

    session = DecodeSession(pool)
    total = 0
    try:
        for uri in files:
            session.submit(DecodeRequest(uri, SAMPLE_RATE), uri)
            while True:
                _, message = session.next_message()
                if message[0] == SAMPLES:
                    total += message[1].size
                elif message[0] in FINAL_KINDS:
                    break
    finally:
        session.close()
    return total


def open_and_probe(files: list[str]) -> int:
    from transforms.decoding.stream import AudioStream

    for uri in files:
        with AudioStream(uri, SAMPLE_RATE):
            pass
    return 0


def floor(files: list[str], quality: str) -> int:
    import av
    import soxr

    total = 0
    for uri in files:
        with av.open(uri) as container:
            stream = container.streams.audio[0]
            parts = [frame.to_ndarray() for packet in container.demux(stream) for frame in packet.decode()]
        waveform = np.concatenate(parts, axis=1).mean(axis=0, dtype=np.float32)  # planar float: [channels, n]
        total += soxr.resample(waveform, stream.sample_rate, SAMPLE_RATE, quality=quality).size
    return total


def ffmpeg_cli(files: list[str], exe: str, quality: str) -> int:
    total = 0
    for uri in files:
        out = subprocess.run(ffmpeg_command(exe, uri, quality), capture_output=True, check=True).stdout
        total += len(out) // 4
    return total


def startup_command(exe: str, quality: str) -> list[str]:
    """The rows' command on a 1-ms generated input: what a process costs before it decodes anything."""
    command = ffmpeg_command(exe, "anullsrc=r=44100:cl=mono", quality)
    command[command.index("-i"):command.index("-i")] = ["-f", "lavfi", "-t", "0.001"]
    return command


def ffmpeg_startup(files: list[str], exe: str, quality: str) -> int:
    command = startup_command(exe, quality)
    for _ in files:
        subprocess.run(command, capture_output=True, check=True)
    return 0


# --- measuring ------------------------------------------------------------------------------------

def measure(run: Callable[[], int]) -> tuple[float, float, int]:
    wall, cpu = time.perf_counter(), own_and_children_cpu()
    samples = run()
    return time.perf_counter() - wall, own_and_children_cpu() - cpu, samples


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=240, help="5-second clips (ESC-10 has 240).")
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds; medians and spread shown.")
    parser.add_argument("--skip", default="", help="Comma-separated row keys to leave out "
                                                   "(product, process, open, floor, ffmpeg, startup).")
    parser.add_argument("--json", default=None, help="Also write the results to this JSON file.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from bench.compare import load_average, machine_description
    from transforms.decoding.stream import RESAMPLE_QUALITY

    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_decode_") as work:
        corpus = clip_corpus(Path(work) / "corpus", args.clips)
        files = corpus.files
        from transforms.decoding.pool import DecoderPool
        from transforms.decoding.stream import decode_all

        # Decoded once first: the frame count, the page cache warm, first imports out of the rounds.
        lengths = [decode_all(uri, SAMPLE_RATE).size for uri in files]
        frames = sum(frames_of(n) for n in lengths)
        exe = ffmpeg_exe()
        quality = RESAMPLE_QUALITY
        pool = DecoderPool(1)
        product_in_decoder_process(files[:2], pool)  # start the process before timing
        rows: dict[str, tuple[str, Callable[[], int]]] = {
            "product": ("product decoder (AudioStream), in process", lambda: product(files)),
            "process": ("product decoder, 1 decoder process + messages",
                        lambda: product_in_decoder_process(files, pool)),
            "open": ("product: open + probe only (per-file cost)", lambda: open_and_probe(files)),
            "floor": (f"FFmpeg + soxr {quality} floor (PyAV loop, no checks)", lambda: floor(files, quality)),
        }
        if exe:
            rows["ffmpeg"] = (f"ffmpeg CLI, 1 process per file, soxr {quality}",
                              lambda: ffmpeg_cli(files, exe, quality))
            rows["startup"] = ("ffmpeg CLI, start-up only (1 ms input)",
                               lambda: ffmpeg_startup(files, exe, quality))
        else:
            print("imageio-ffmpeg is not installed (pip install audio-tagger[test]), or its ffmpeg cannot "
                  "resample with soxr: no ffmpeg CLI rows", file=sys.stderr)
        skip = {key.strip() for key in args.skip.split(",") if key.strip()}
        rows = {key: row for key, row in rows.items() if key not in skip}

        load_before = load_average()
        results: dict[str, list[tuple[float, float]]] = {key: [] for key in rows}
        for round_index in range(args.rounds):
            for key, (_, run) in rows.items():
                wall, cpu, samples = measure(run)
                results[key].append((wall, cpu))
                if samples and abs(samples - sum(lengths)) > len(files) * 16:
                    print(f"  note: {key} produced {samples} samples, the product {sum(lengths)}",
                          file=sys.stderr)
            print(f"round {round_index + 1}/{args.rounds} done, load average {load_average()}", flush=True)

    per_frame = {key: [cpu / frames * 1000 for _, cpu in values] for key, values in results.items()}
    print()
    print(f"Decoding {len(files)} clips ({frames} YAMNet frames), {corpus.source}; {machine_description()}; "
          f"{args.rounds} rounds; load average {load_before} before, {load_average()} after")
    header = (f"{'':56s}{'CPU-ms/frame':>13s}{'spread':>14s}{'frames/CPU-s':>13s}"
              f"{'/ ffmpeg':>9s}{'/ floor':>8s}")
    print(header)
    print("-" * len(header))
    medians = {key: statistics.median(values) for key, values in per_frame.items()}
    for key, (label, _) in rows.items():
        values = per_frame[key]
        median = medians[key]
        ratios = [f"{median / medians[ref]:.2f}" if ref in medians and key not in ("open", "startup")
                  and medians[ref] else "" for ref in ("ffmpeg", "floor")]
        rate = f"{1000 / median:.0f}" if median else ""
        print(f"{label:56s}{median:13.3f}{f'{min(values):.3f}-{max(values):.3f}':>14s}{rate:>13s}"
              f"{ratios[0]:>9s}{ratios[1]:>8s}")
    if "ffmpeg" in medians and "startup" in medians and "product" in medians:
        net = medians["ffmpeg"] - medians["startup"]
        print(f"ffmpeg CLI less its start-up: {net:.3f} CPU-ms/frame; product / that = "
              f"{medians['product'] / net:.2f}")
    pool.close()
    if args.json:
        Path(args.json).write_text(json.dumps({
            "clips": len(files), "frames": frames, "corpus": corpus.source, "machine": machine_description(),
            "load_average_before": load_before, "load_average_after": load_average(),
            "cpu_ms_per_frame": per_frame,
            "labels": {key: label for key, (label, _) in rows.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
