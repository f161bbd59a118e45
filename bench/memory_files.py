"""Peak memory of tag_audio against the number of input files (one-second clips).

    python -m bench.memory_files [--files 1000,4000] [--extra_args "--direct_num_workers 1"]

Each count N gets a corpus of N one-second clips (symbolic links, in a scratch
directory, cycling through Speech Commands' 16 kHz FLAC clips read in place
from ``../shared/data/speech_commands``; without it, a few generated WAV
clips), and one ``python -m beam_jobs.tag_audio`` run over it, in a subprocess
of its own, on the local default runner.  Memory is the process tree's RSS
as ``bench.memory`` measures it.  The table gives each peak, its ratio to the
smallest count's peak (measured in the same invocation) and the slope between
them in KB per file: a bounded pipeline shows ratios near 1.00 and a slope
near 0.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from bench.corpus import DEFAULT_MODEL, SHARED, write_recording
from bench.memory import MB, MemoryRun, has_yamnet, run_measured

SPEECH_COMMANDS = SHARED / "data" / "speech_commands"
GENERATED_CLIPS = 8


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", default="1000,4000", help="Comma-separated corpus sizes (files).")
    parser.add_argument("--model_path", default=str(DEFAULT_MODEL),
                        help="A YAMNet SavedModel in TF Hub format (default: the test fixture).")
    parser.add_argument("--extra_args", default="",
                        help="More tag_audio arguments for every run (quoted), e.g. Beam options.")
    parser.add_argument("--poll_s", type=float, default=0.2, help="Seconds between memory samples.")
    parser.add_argument("--work_dir", default=os.path.join(tempfile.gettempdir(), "bench_memory_files"),
                        help="Where the corpora (links) are kept between runs, and outputs written.")
    return parser.parse_args(argv)


def one_second_clips(work: Path) -> tuple[list[Path], str]:
    """The distinct clips a corpus cycles through, and where they come from."""
    real = sorted(SPEECH_COMMANDS.glob("*/*.flac")) if SPEECH_COMMANDS.is_dir() else []
    if real:
        return real, f"Speech Commands ({SPEECH_COMMANDS}), {len(real)} distinct 1 s FLAC clips"
    generated = work / "_generated"
    generated.mkdir(parents=True, exist_ok=True)
    clips = []
    for i in range(GENERATED_CLIPS):
        path = generated / f"clip{i}.wav"
        if not path.exists():
            write_recording(path, 1.0, seed=i)
        clips.append(path)
    return clips, f"generated (no {SPEECH_COMMANDS}): {len(clips)} distinct 1 s WAV clips"


def corpus(work: Path, files: int, clips: list[Path]) -> Path:
    """A directory of ``files`` links to the clips (made once, kept for the next run)."""
    directory = work / f"corpus_{files}"
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        clip = clips[i % len(clips)]
        link = directory / f"{i:07d}{clip.suffix}"
        if not link.is_symlink():
            os.symlink(clip, link)
    return directory


def tag_audio_command(directory: Path, out_dir: Path, model_path: str, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "beam_jobs.tag_audio", "--input", str(directory), "--output", str(out_dir),
            "--model", "yamnet", "--model_path", model_path, "--progress_s", "0", *extra]


def format_table(runs: list[tuple[int, MemoryRun]]) -> str:
    header = (f"{'files':>8s}{'peak RSS, tree':>16s}{'largest process':>17s}{'/ first':>9s}"
              f"{'KB per file':>13s}{'wall s':>8s}  outcome")
    lines = [header, "-" * len(header)]
    first_files, first = runs[0]
    for files, run in runs:
        ratio = run.peak_tree_bytes / first.peak_tree_bytes if first.peak_tree_bytes else 0.0
        slope = ((run.peak_tree_bytes - first.peak_tree_bytes) / 1024 / (files - first_files)
                 if files != first_files else 0.0)
        lines.append(f"{files:8d}{run.peak_tree_bytes / MB:13.0f} MB{run.peak_process_bytes / MB:14.0f} MB"
                     f"{ratio:9.2f}{slope:13.1f}{run.seconds:8.0f}  {run.outcome}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not has_yamnet(args.model_path):
        return 2
    counts = sorted({int(n) for n in args.files.split(",") if n.strip()})
    if not counts or counts[0] <= 0:
        print("--files takes positive counts, e.g. 1000,4000", file=sys.stderr)
        return 2
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    clips, source = one_second_clips(work)
    model_path = str(Path(args.model_path).resolve())
    extra = shlex.split(args.extra_args)

    runs = []
    for files in counts:
        directory = corpus(work, files, clips)
        out = Path(tempfile.mkdtemp(dir=work, prefix="tag_audio_out_"))
        run = run_measured(f"tag_audio, {files} files", 0.0,
                           tag_audio_command(directory, out, model_path, extra), args.poll_s,
                           log_path=work / f"tag_audio_{files}.stderr")
        runs.append((files, run))
        print(format_table(runs).splitlines()[-1], flush=True)
        shutil.rmtree(out, ignore_errors=True)

    print()
    print(f"Peak memory on {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; clips: {source}; "
          f"RSS summed over each process tree, sampled every {args.poll_s:g} s"
          + (f"; extra arguments: {args.extra_args}" if args.extra_args else ""))
    print(format_table(runs))
    print("peak tree RSS (MB) in each tenth of the run's time:")
    for files, run in runs:
        print(f"  {files:8d} files: " + " ".join(f"{p / MB:5.0f}" for p in run.tenths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
