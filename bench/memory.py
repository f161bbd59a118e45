"""Peak memory of tag_audio on long recordings (1 h vs 3 h), and of the per-file loop on the same files.

    python -m bench.memory [--hours 1,3] [--modes in_memory,multi_threading,multi_processing]

Generates each recording (44.1 kHz mono FLAC, written a block at a time, kept
in --work_dir for the next run), then runs, each in a subprocess of its own:

* tag_audio (``python -m beam_jobs.tag_audio``) in each running mode asked
  for: ``in_memory`` is the default local run (FnApiRunner in one process),
  ``multi_threading`` / ``multi_processing`` add ``--direct_running_mode MODE
  --direct_num_workers 2`` (two worker threads in the one process / a driver
  and two worker processes);
* the per-file loop (``bench.per_file_loop``: decode the whole file, call the
  Hub model once), stopped when its memory passes --loop_cap_gb so that it
  cannot take the machine down.

Memory is the resident set (RSS) of the whole process tree, summed over the
processes and sampled every --poll_s; the largest single process's peak
(``getrusage(RUSAGE_CHILDREN)``-style, from the same samples) is shown too.
Summing RSS counts pages that processes share (TensorFlow's libraries) once per
process, so the tree figure is an upper bound.  The table comes last.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.corpus import DEFAULT_MODEL, REPO_ROOT, write_recording

MB = 1024 * 1024
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
MODE_ARGS = {
    "in_memory": [],
    "multi_threading": ["--direct_running_mode", "multi_threading", "--direct_num_workers", "2"],
    "multi_processing": ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"],
}


@dataclasses.dataclass(frozen=True)
class MemoryRun:
    what: str
    hours: float
    peak_tree_bytes: int
    peak_process_bytes: int
    max_processes: int
    seconds: float
    outcome: str  # 'ok', 'stopped above N GB', or 'exit N: last error line'
    tenths: tuple[int, ...] = ()  # peak tree RSS in each tenth of the run's time: shows any trend


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", default="1,3", help="Comma-separated recording lengths, in hours.")
    parser.add_argument("--modes", default="in_memory,multi_threading,multi_processing",
                        help=f"tag_audio running modes to measure: {', '.join(MODE_ARGS)}.")
    parser.add_argument("--model_path", default=str(DEFAULT_MODEL),
                        help="A YAMNet SavedModel in TF Hub format (default: the test fixture).")
    parser.add_argument("--format", default="flac", choices=("flac", "wav"), help="Recording format.")
    parser.add_argument("--no_loop", action="store_true", help="Leave out the per-file loop.")
    parser.add_argument("--loop_cap_gb", type=float, default=8.0,
                        help="Stop the per-file loop when its memory passes this (the machine is shared).")
    parser.add_argument("--poll_s", type=float, default=0.1, help="Seconds between memory samples.")
    parser.add_argument("--work_dir", default=os.path.join(tempfile.gettempdir(), "bench_memory"),
                        help="Where recordings are kept between runs, and outputs written.")
    return parser.parse_args(argv)


# --- measuring a process tree ----------------------------------------------------------------------

def _children(pid: int) -> list[int]:
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.extend(int(c) for c in f.read().split())
    except OSError:
        pass  # the process is gone
    return kids


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss(root: int) -> tuple[int, int, int]:
    """(summed RSS, largest process RSS, process count) of ``root`` and all its descendants."""
    total = largest = count = 0
    pending = [root]
    while pending:
        pid = pending.pop()
        rss = _rss_bytes(pid)
        total += rss
        largest = max(largest, rss)
        count += 1
        pending.extend(_children(pid))
    return total, largest, count


def run_measured(what: str, hours: float, command: list[str], poll_s: float,
                 cap_bytes: int | None = None, log_path: Path | None = None) -> MemoryRun:
    """Runs ``command`` from the repository root, sampling its process tree's memory until it ends.

    When it fails, its whole stderr is kept at ``log_path``.
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        peak_tree = peak_process = max_count = 0
        outcome = None
        samples: list[tuple[float, int]] = []
        while process.poll() is None:
            total, largest, count = tree_rss(process.pid)
            samples.append((time.perf_counter() - start, total))
            peak_tree, peak_process = max(peak_tree, total), max(peak_process, largest)
            max_count = max(max_count, count)
            if cap_bytes is not None and total > cap_bytes:
                kill_tree(process.pid)
                process.wait()
                outcome = f"stopped above {cap_bytes / 1024 ** 3:.0f} GB"
                break
            time.sleep(poll_s)
        seconds = time.perf_counter() - start
        if outcome is None:
            outcome = "ok" if process.returncode == 0 else f"exit {process.returncode}: {_last_line(stderr)}"
            if process.returncode != 0 and log_path is not None:
                stderr.seek(0)
                log_path.write_text(stderr.read())
                outcome += f" (stderr in {log_path})"
    return MemoryRun(what, hours, peak_tree, peak_process, max_count, seconds, outcome,
                     _peaks_per_tenth(samples, seconds))


def _peaks_per_tenth(samples: list[tuple[float, int]], seconds: float) -> tuple[int, ...]:
    peaks = [0] * 10
    for at, total in samples:
        tenth = min(9, int(10 * at / seconds))
        peaks[tenth] = max(peaks[tenth], total)
    return tuple(peaks)


def kill_tree(root: int) -> None:
    pending, found = [root], []
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(_children(pid))
    for pid in reversed(found):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _last_line(stream) -> str:
    stream.seek(0)
    lines = [line.strip() for line in stream.read().splitlines() if line.strip()]
    return lines[-1][:100] if lines else ""


# --- what is run ---------------------------------------------------------------------------------

def recording_path(work_dir: Path, hours: float, fmt: str) -> Path:
    """The recording of ``hours``, generated on first use (a few MB of memory at any length)."""
    path = work_dir / f"recording_{hours:g}h.{fmt}"
    if not path.exists():
        print(f"generating {path} ...", flush=True)
        partial = path.with_suffix(".partial." + fmt)
        write_recording(partial, hours * 3600)
        partial.rename(path)
    return path


def tag_audio_command(recording: Path, out_dir: Path, model_path: str, mode: str) -> list[str]:
    return [sys.executable, "-m", "beam_jobs.tag_audio", "--input", str(recording), "--output", str(out_dir),
            "--model", "yamnet", "--model_path", model_path, "--progress_s", "0",
            "--runner", "FnApiRunner", *MODE_ARGS[mode]]


def loop_command(recording: Path, out_file: Path, model_path: str) -> list[str]:
    return [sys.executable, "-m", "bench.per_file_loop", "--model_path", model_path,
            "--output", str(out_file), str(recording)]


def format_table(runs: list[MemoryRun]) -> str:
    header = (f"{'':44s}{'hours':>6s}{'peak RSS, tree':>16s}{'largest process':>17s}{'processes':>10s}"
              f"{'wall s':>8s}{'x realtime':>11s}  outcome")
    lines = [header, "-" * len(header)]
    for run in runs:
        realtime = f"{run.hours * 3600 / run.seconds:.0f}x" if run.outcome == "ok" else ""
        lines.append(f"{run.what:44s}{run.hours:6g}{run.peak_tree_bytes / MB:13.0f} MB"
                     f"{run.peak_process_bytes / MB:14.0f} MB{run.max_processes:10d}{run.seconds:8.0f}"
                     f"{realtime:>11s}  {run.outcome}")
    return "\n".join(lines)


def flatness(runs: list[MemoryRun]) -> list[str]:
    """Peak at the longest recording over peak at the shortest, per kind of run."""
    notes = []
    for what in dict.fromkeys(r.what for r in runs):
        done = sorted((r for r in runs if r.what == what and r.outcome == "ok"), key=lambda r: r.hours)
        if len(done) >= 2 and done[0].hours != done[-1].hours:
            ratio = done[-1].peak_tree_bytes / done[0].peak_tree_bytes
            notes.append(f"{what}: peak at {done[-1].hours:g} h / peak at {done[0].hours:g} h = {ratio:.2f}")
    return notes


def has_yamnet(model_path: str) -> bool:
    """Whether ``model_path`` holds a TF Hub-format YAMNet; says what to pass when it does not."""
    if (Path(model_path) / "saved_model.pb").exists():
        return True
    print(f"No YAMNet SavedModel at {model_path}: pass --model_path DIR (a TF Hub-format YAMNet); "
          "the default is ../shared/fixtures/yamnet-hub-random.", file=sys.stderr)
    return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not has_yamnet(args.model_path):
        return 2
    hours = [float(h) for h in args.hours.split(",") if h.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODE_ARGS]
    if unknown:
        print(f"unknown mode(s) {', '.join(unknown)}: use {', '.join(MODE_ARGS)}", file=sys.stderr)
        return 2
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    model_path = str(Path(args.model_path).resolve())

    runs = []
    for length in hours:
        recording = recording_path(work, length, args.format)
        for mode in modes:
            out = Path(tempfile.mkdtemp(dir=work, prefix="tag_audio_out_"))
            run = run_measured(f"tag_audio, {mode}", length,
                               tag_audio_command(recording, out, model_path, mode), args.poll_s,
                               log_path=work / f"tag_audio_{mode}_{length:g}h.stderr")
            runs.append(run)
            print(format_table([run]).splitlines()[-1], flush=True)
            shutil.rmtree(out, ignore_errors=True)
        if not args.no_loop:
            out_file = work / "per_file_loop.parquet"
            run = run_measured("per-file loop (decode all, Hub model once)", length,
                               loop_command(recording, out_file, model_path), args.poll_s,
                               cap_bytes=int(args.loop_cap_gb * 1024 ** 3))
            runs.append(run)
            print(format_table([run]).splitlines()[-1], flush=True)
            out_file.unlink(missing_ok=True)

    print()
    print(f"Peak memory on {os.cpu_count()} cores; recordings: 44.1 kHz mono {args.format.upper()} "
          f"in {work}; RSS summed over each process tree, sampled every {args.poll_s:g} s")
    print(format_table(runs))
    print("peak tree RSS (MB) in each tenth of the run's time:")
    for run in runs:
        print(f"  {run.what:44s}{run.hours:4g} h: " + " ".join(f"{p / MB:5.0f}" for p in run.tenths))
    for note in flatness(runs):
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
