"""tag_audio against the per-file ways of running YAMNet, side by side, end to end.

    python -m bench.compare [--clips N] [--model_path DIR] [--rounds R]

On one corpus of real 5-second clips (ESC-10, Ogg Vorbis at 44.1 kHz, read in
place from ../shared/data/esc10; generated clips of the same format without
it), in this one process, back to back:

(a) the per-file loop of the TF Hub tutorial: decode each file, call the
    Hub-format SavedModel once per file, collect rows, write Parquet
    (``bench.per_file_loop``);
(b) Beam RunInference with ``TFModelHandlerTensor`` on per-file waveforms,
    rows written with ``WriteToParquet`` (``bench.runinference_baseline``);
(c) tag_audio (``beam_jobs.tag_audio.run``) with the options a user runs
    locally: FnApiRunner in this process at several batch sizes, and with two
    worker threads or two worker processes;
(d) the batched model alone on windows prepared beforehand: the ceiling for (c).

Every row decodes with the same decoder and resamples to 16 kHz (except (d)),
and (a)-(c) include writing Parquet.  Loading the model is left out where it
can be (it is loaded and traced before timing); the multi-processing rows
cannot leave it out: their workers start, import TensorFlow and load the model
inside the timed run.  The table comes last.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.corpus import DEFAULT_MODEL, Corpus, clip_corpus  # noqa: E402

SAMPLE_RATE = 16000
WINDOW, HOP = 15600, 7680
DEFAULT_C_RUNS = "in_memory:0,in_memory:64,multi_threading:0,multi_threading:64,multi_processing:0"


@dataclasses.dataclass(frozen=True)
class CRun:
    """One tag_audio configuration: the FnApiRunner running mode and the batch size (0 = default)."""

    mode: str  # in_memory | multi_threading | multi_processing
    batch_size: int

    def label(self, workers: int, default_batch: int) -> str:
        batch = self.batch_size or default_batch
        how = {"in_memory": "FnApiRunner in-process",
               "multi_threading": f"{workers} worker threads",
               "multi_processing": f"{workers} worker processes"}[self.mode]
        return f"(c) tag_audio, {how}, batch {batch}" + ("" if self.batch_size else " (default)")

    def args(self, workers: int) -> list[str]:
        args = ["--runner", "FnApiRunner"]
        if self.mode != "in_memory":
            args += ["--direct_running_mode", self.mode, "--direct_num_workers", str(workers)]
        return args + (["--batch_size", str(self.batch_size)] if self.batch_size else [])


@dataclasses.dataclass
class Row:
    key: str
    label: str
    samples: list = dataclasses.field(default_factory=list)  # of Sample
    note: str = ""

    @property
    def frames(self) -> int:
        return self.samples[-1].frames

    @property
    def wall(self) -> float:
        return statistics.median(s.wall for s in self.samples)

    @property
    def rate(self) -> float:
        """Frames per second of elapsed time (median over rounds)."""
        return statistics.median(s.frames / s.wall for s in self.samples)

    @property
    def cpu_rate(self) -> float:
        """Frames per CPU-second: what the work costs, less sensitive to other processes' load."""
        return statistics.median(s.frames / s.cpu for s in self.samples)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What decoding the corpus once tells: its length in audio and frames, and windows for (d)."""

    audio_seconds: float
    frames: int
    windows: object  # np.ndarray [n, 15600] of distinct clips, for the model-only measurement


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=480,
                        help="5-second clips in the corpus (ESC-10 has 240; more cycle through them again).")
    parser.add_argument("--model_path", default=str(DEFAULT_MODEL),
                        help="A YAMNet SavedModel in TF Hub format (default: the test fixture; "
                             "weights do not change the cost).")
    parser.add_argument("--c_runs", default=DEFAULT_C_RUNS,
                        help="tag_audio configurations, MODE:BATCH comma-separated; MODE is in_memory, "
                             "multi_threading or multi_processing, BATCH 0 = the default for the device.")
    parser.add_argument("--workers", type=int, default=2,
                        help="--direct_num_workers for the multi_threading/multi_processing rows.")
    parser.add_argument("--rounds", type=int, default=1,
                        help="Repeat every measurement this many times, interleaved; medians shown.")
    parser.add_argument("--d_frames", type=int, default=2400,
                        help="Prepared windows the model-only row (d) runs on.")
    parser.add_argument("--skip", default="", help="Letters of rows to leave out, e.g. 'b' or 'ab'.")
    parser.add_argument("--work_dir", default=None, help="Scratch directory (default: a new temporary one).")
    parser.add_argument("--json", default=None, help="Also write the results to this JSON file.")
    return parser.parse_args(argv)


def parse_c_runs(text: str) -> list[CRun]:
    runs = []
    for item in text.split(","):
        if item.strip():
            mode, _, batch = item.strip().partition(":")
            if mode not in ("in_memory", "multi_threading", "multi_processing"):
                raise SystemExit(f"unknown running mode {mode!r} in --c_runs")
            runs.append(CRun(mode, int(batch or 0)))
    return runs


def unique_runs(runs: list[CRun], default_batch: int) -> list[CRun]:
    """Leaves out a run that repeats another once the default batch size is known (e.g. 0 and 32)."""
    seen, kept = set(), []
    for run in runs:
        key = (run.mode, run.batch_size or default_batch)
        if key not in seen:
            seen.add(key)
            kept.append(run)
    return kept


def machine_description() -> str:
    model = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next((line.split(":", 1)[1].strip() for line in out.splitlines()
                      if line.startswith("Model name")), "")
    except OSError:
        pass
    return f"{model or 'unknown CPU'}, {os.cpu_count()} cores"


def load_average() -> str:
    """Load average (1, 5, 15 min), and the share of the last minute runnable tasks waited for a CPU."""
    text = " ".join(f"{v:.1f}" for v in os.getloadavg())
    try:
        with open("/proc/pressure/cpu") as f:
            some = f.readline().split()
        text += f", CPU pressure {float(some[2].split('=')[1]):.0f}%"
    except (OSError, IndexError, ValueError):
        pass
    return text


# --- preparation -------------------------------------------------------------------------------

def prepare(corpus: Corpus, max_windows: int) -> Prepared:
    """Decodes each distinct clip once: corpus length, expected frames, windows for (d), warm page cache."""
    import numpy as np

    from transforms.decoding.stream import decode_all
    from transforms.decoding.windows import frames_of

    per_original: dict[str, tuple[int, int]] = {}
    windows, kept = [], 0
    for uri in corpus.files:
        original = os.path.realpath(uri)
        if original in per_original:
            continue
        waveform = decode_all(uri, SAMPLE_RATE)
        frames = frames_of(waveform, WINDOW, HOP)
        per_original[original] = (waveform.size, len(frames))
        if kept < max_windows:
            windows.append(frames[:max_windows - kept])
            kept += len(windows[-1])
    samples = frames = 0
    for uri in corpus.files:
        n_samples, n_frames = per_original[os.path.realpath(uri)]
        samples += n_samples
        frames += n_frames
    return Prepared(samples / SAMPLE_RATE, frames, np.concatenate(windows))


# --- the four measurements ----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Sample:
    """One timed run: elapsed seconds, CPU seconds of this process and its children, frames."""

    wall: float
    cpu: float
    frames: int


def _live_children_cpu() -> float:
    """CPU seconds of this process's running children (tag_audio's decoder processes outlive a run)."""
    total, me, tick = 0.0, os.getpid(), os.sysconf("SC_CLK_TCK")
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == me:  # fields after the name: state, ppid, ..., utime (12th), stime (13th)
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def cpu_seconds() -> float:
    """This process, its finished children and its running ones (Linux; elsewhere the first two)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    live = _live_children_cpu() if os.path.isdir("/proc") else 0.0
    return time.process_time() + children.ru_utime + children.ru_stime + live


def timed(run: Callable[[], int]) -> Sample:
    wall_start, cpu_start = time.perf_counter(), cpu_seconds()
    frames = run()
    return Sample(time.perf_counter() - wall_start, cpu_seconds() - cpu_start, frames)


def parquet_rows(pattern: str) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(path).metadata.num_rows for path in glob.glob(pattern, recursive=True))


def measure_a(hub_model, corpus: Corpus, out_dir: Path) -> Sample:
    from bench.per_file_loop import tag_files

    out_dir.mkdir(parents=True, exist_ok=True)
    return timed(lambda: tag_files(hub_model, corpus.files, str(out_dir / "frames.parquet")).frames)


def measure_b(corpus: Corpus, model_path: str, out_dir: Path) -> Sample:
    from bench.runinference_baseline import run_pipeline

    out_dir.mkdir(parents=True, exist_ok=True)

    def run() -> int:
        run_pipeline(corpus.files, model_path, str(out_dir / "frames"))
        return parquet_rows(str(out_dir / "frames*.parquet"))

    return timed(run)


def measure_c(corpus: Corpus, model_path: str, config: CRun, workers: int, out_dir: Path
              ) -> Sample:
    from beam_jobs import tag_audio

    def run() -> int:
        status = tag_audio.run(["--input", str(corpus.directory), "--output", str(out_dir),
                                "--model", "yamnet", "--model_path", model_path, "--progress_s", "0",
                                *config.args(workers)])
        if status != 0:
            raise RuntimeError(f"tag_audio exited with status {status}")
        return parquet_rows(str(out_dir / "frames" / "**" / "*.parquet"))

    return timed(run)


def measure_d(model, windows, batch_size: int) -> Sample:
    from bench.model_throughput import batched_rate

    def run() -> int:
        batched_rate(model, windows, batch_size)
        return len(windows)

    return timed(run)


# --- the table ------------------------------------------------------------------------------------

def format_table(rows: list[Row], audio_seconds: float, reference: dict[str, Row]) -> str:
    header = (f"{'':60s}{'wall s':>7s}{'frames':>7s}{'frames/s':>9s}{'x realtime':>11s}"
              f"{'/ (a)':>7s}{'/ (b)':>7s}{'/ (d)':>7s}{'frames/CPU-s':>14s}")
    lines = [header, "-" * len(header)]
    for row in rows:
        is_d = row.key.startswith("d")
        # The model alone runs on a subset of the corpus: its rate (as audio speed) is what compares.
        realtime = f"({row.rate * HOP / SAMPLE_RATE:.0f}x)" if is_d else f"{audio_seconds / row.wall:.0f}x"
        ratios = []
        for ref in ("a", "b", "d"):
            other = reference_d_for(row, reference) if ref == "d" else reference.get(ref)
            ratios.append("" if other is None or other is row or (is_d and ref == "d")
                          else f"{row.rate / other.rate:.2f}")
        lines.append(f"{row.label + row.note:60s}{row.wall:7.1f}{row.frames:7d}{row.rate:9.0f}{realtime:>11s}"
                     f"{ratios[0]:>7s}{ratios[1]:>7s}{ratios[2]:>7s}{row.cpu_rate:14.0f}")
    return "\n".join(lines)


def reference_d_for(row: Row, reference: dict[str, Row]) -> Row | None:
    """A (c) row compares with the model alone at its own batch size; other rows with the default one."""
    if "@" in row.key:
        return reference.get(f"d@{row.key.rsplit('@', 1)[1]}", reference.get("d"))
    return reference.get("d")


# --- main -----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model_path = str(Path(args.model_path))
    if not (Path(model_path) / "saved_model.pb").exists():
        print(f"No YAMNet SavedModel at {model_path}: pass --model_path DIR (a TF Hub-format YAMNet, e.g. a "
              "downloaded google/yamnet/1); the default is ../shared/fixtures/yamnet-hub-random.",
              file=sys.stderr)
        return 2
    c_runs = parse_c_runs(args.c_runs)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_compare_"))
    load_before = load_average()

    from audio_models.device import configure_tensorflow, default_batch_size

    device = configure_tensorflow("auto")
    default_batch = default_batch_size("auto")

    from audio_models.loading import resolve_source
    from bench.runinference_baseline import load_saved_model
    from transforms.tagging.inference import shared_model

    corpus = clip_corpus(work / "corpus", args.clips)
    print(f"corpus: {len(corpus.files)} clips, {corpus.source}", flush=True)
    prepared = prepare(corpus, args.d_frames)
    print(f"corpus: {prepared.audio_seconds / 3600:.2f} h of audio, {prepared.frames} frames", flush=True)

    # Load and trace everything before timing: no row pays for loading (except worker processes).
    hub_model = load_saved_model(model_path)
    hub_model(prepared.windows[0])
    batched = shared_model(resolve_source("yamnet", model_path), "auto")
    batch_sizes = sorted({c.batch_size or default_batch for c in c_runs} | {default_batch})
    for batch_size in batch_sizes:
        batched.predict(prepared.windows[:batch_size])
    warm = Corpus(corpus.directory, corpus.files[:2], corpus.source)
    warm_dir = work / "warm"
    warm_dir.mkdir(exist_ok=True)
    os.symlink(corpus.files[0], warm_dir / Path(corpus.files[0]).name)
    if "b" not in args.skip:
        measure_b(warm, model_path, work / "warm_b")
    measure_c(Corpus(warm_dir, warm.files[:1], ""), model_path, CRun("in_memory", 0), 1, work / "warm_c")

    rows: dict[str, Row] = {}

    def record(key: str, label: str, sample: Sample, note: str = "") -> None:
        rows.setdefault(key, Row(key, label, note=note)).samples.append(sample)
        print(f"  {label}: {sample.wall:.1f} s, {sample.cpu:.1f} CPU-s, {sample.frames} frames", flush=True)

    for round_index in range(args.rounds):
        print(f"round {round_index + 1}/{args.rounds}", flush=True)
        out = work / f"round{round_index}"
        if "a" not in args.skip:
            record("a", "(a) per-file loop, Hub SavedModel once per file",
                   measure_a(hub_model, corpus, out / "a"))
        if "b" not in args.skip:
            record("b", "(b) RunInference, TFModelHandlerTensor, per file",
                   measure_b(corpus, model_path, out / "b"))
        if "c" not in args.skip:
            for i, config in enumerate(unique_runs(c_runs, default_batch)):
                batch = config.batch_size or default_batch
                note = " *" if config.mode == "multi_processing" else ""
                record(f"c{i}@{batch}", config.label(args.workers, default_batch),
                       measure_c(corpus, model_path, config, args.workers, out / f"c{i}"), note)
        for batch_size in batch_sizes:
            key = "d" if batch_size == default_batch else f"d@{batch_size}"
            record(key, f"(d) batched model alone, batch {batch_size}",
                   measure_d(batched, prepared.windows, batch_size))
        shutil.rmtree(out, ignore_errors=True)

    for row in rows.values():
        if not row.key.startswith("d") and row.frames != prepared.frames:
            row.note += f" (!{prepared.frames} expected)"
    ordered = sorted(rows.values(), key=lambda r: (r.key[0], r.key))
    table = format_table(ordered, prepared.audio_seconds, rows)
    headline = _headline(rows)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": machine_description(), "device": device, "clips": len(corpus.files),
            "corpus": corpus.source, "audio_seconds": prepared.audio_seconds, "frames": prepared.frames,
            "rounds": args.rounds, "load_average_before": load_before, "load_average_after": load_average(),
            "rows": [{"key": r.key, "label": r.label, "frames_per_s": r.rate, "frames_per_cpu_s": r.cpu_rate,
                      "samples": [dataclasses.asdict(x) for x in r.samples]} for r in ordered]}, indent=2))
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"YAMNet, end to end, on {machine_description()} ({device}); {len(corpus.files)} clips "
          f"({prepared.audio_seconds / 3600:.2f} h, {prepared.frames} frames), {corpus.source}; "
          f"median of {args.rounds} round(s); load average {load_before} before, {load_average()} after")
    print(table)
    print("* includes starting the worker processes and loading the model in each (others exclude loading)")
    print(headline)
    return 0


def _headline(rows: dict[str, Row]) -> str:
    c_rows = [r for r in rows.values() if r.key.startswith("c")]
    if not c_rows:
        return ""
    default = next((r for r in c_rows if r.label.endswith("(default)") and "in-process" in r.label),
                   c_rows[0])
    best = max(c_rows, key=lambda r: r.rate)
    parts = []
    for name, row in (("c with defaults", default), ("best c", best)):
        ratios = [f"c/{ref} = {row.rate / rows[ref].rate:.2f}" for ref in ("a", "b") if ref in rows]
        d = reference_d_for(row, rows)
        if d is not None:
            ratios.append(f"c/d = {row.rate / d.rate:.2f}")
        parts.append(f"{name} ({row.label[4:]}): " + ", ".join(ratios))
    return "\n".join(parts)


if __name__ == "__main__":
    sys.exit(main())
