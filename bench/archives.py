"""Reading audio from archives and tables against the same files in a folder, in frames per CPU-second.

    python -m bench.archives [--clips 300] [--rounds 2] [--gcs]

One-second clips (Speech Commands FLAC from ``../shared/data/speech_commands`` when present, else
generated 16 kHz WAV) are written to a temporary folder and packed into a ``.tar``, a ``.tar.gz`` and a
``.zip`` (stored, as audio zips usually are: compressing FLAC gains nothing), and written as the rows
of a Parquet table the way Hugging Face ``datasets`` writes Audio (a struct of bytes and path, 100
rows a row group). Each row lists its input the way tag_audio does (a folder walk, or
``storage.list_members``) and decodes every clip to 16 kHz mono through ``storage.open_read`` (a
member URI ``ARCHIVE#member`` for archives, ``TABLE#row=N`` for the table) with the product's
decoder, in this process. Frames are YAMNet frames of the decoded audio; CPU seconds are this
process's. Rows run interleaved, ``--rounds`` times; the table gives the median and the ratio to the
folder row measured in the same run. The model's cost is the same for every row and is left out, so
the ratios are what reading from an archive or a table costs, undiluted. The table's row groups are
read cold each round (the per-process cache is emptied first).

With ``--gcs`` the folder's files and every archive are also uploaded to a GCS emulator
(``tests.support.gcs_emulator``, a child process on 127.0.0.1) and read again through ``gs://`` the
same way, in a second table whose ratios are to the ``gs://`` folder; its CPU seconds are still this
process's, the emulator's own are a column of their own.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import statistics
import tarfile
import tempfile
import time
import wave
import zipfile
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

import storage
from storage import tables
from transforms.decoding.stream import decode_all
from transforms.decoding.windows import num_frames

SPEECH_COMMANDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "speech_commands"
RATE, WINDOW, HOP = 16000, 15600, 7680


def make_clips(folder: Path, clips: int) -> str:
    folder.mkdir(parents=True)
    every = sorted(SPEECH_COMMANDS.glob("*/*.flac")) if SPEECH_COMMANDS.is_dir() else []
    real = every[:: max(1, len(every) // clips)][:clips]  # spread over the labels
    for i in range(clips):
        if real:
            shutil.copy2(real[i % len(real)], folder / f"clip{i:05d}.flac")
        else:
            tone = (9000 * np.sin(2 * np.pi * (200 + i) * np.arange(RATE) / RATE)).astype("<i2")
            with wave.open(str(folder / f"clip{i:05d}.wav"), "wb") as out:
                out.setnchannels(1)
                out.setsampwidth(2)
                out.setframerate(RATE)
                out.writeframes(tone.tobytes())
    return f"Speech Commands ({len(real)} distinct clips)" if real else "generated 1 s WAV"


def pack(folder: Path, root: Path) -> dict[str, Path]:
    names = sorted(p.name for p in folder.iterdir())
    archives = {"tar": root / "clips.tar", "tar.gz": root / "clips.tar.gz",
                "zip (stored)": root / "clips.zip"}
    for kind, mode in (("tar", "w"), ("tar.gz", "w:gz")):
        with tarfile.open(archives[kind], mode) as tar:
            for name in names:
                tar.add(folder / name, arcname=f"clips/{name}")
    with zipfile.ZipFile(archives["zip (stored)"], "w", zipfile.ZIP_STORED) as archive:
        for name in names:
            archive.write(folder / name, f"clips/{name}")
    archives["parquet (HF)"] = root / "clips.parquet"
    audio = pa.array([{"bytes": (folder / name).read_bytes(), "path": name} for name in names],
                     pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(pa.table({"audio": audio}), archives["parquet (HF)"], row_group_size=100)
    return archives


def listed(source: str) -> list[str]:
    """The inputs ``source`` holds, listed the way tag_audio lists them (a folder: every file below it)."""
    if storage.archive_kind(source):
        return [storage.member_uri(source, member.name) for member in storage.list_members(source)]
    if storage.is_remote(source):
        return [found.path for found in storage.match(storage.escape_glob(source) + "/**")]
    return [item.path for item in storage.walk_local(source) if item.kind == "file"]


@dataclasses.dataclass
class Reading:
    frames: int
    cpu_s: float  # this process's: listing, reading and decoding
    wall_s: float
    server_cpu_s: float = 0.0  # the GCS emulator's, for gs:// rows


def measure(source: str, server: psutil.Process | None = None) -> Reading:
    """Lists ``source`` and decodes every clip in it, in this process."""
    tables.drop_cached()
    served = _cpu_s(server)
    started, wall = time.process_time(), time.perf_counter()
    frames = sum(num_frames(len(decode_all(uri, RATE)), WINDOW, HOP) for uri in listed(source))
    return Reading(frames, time.process_time() - started, time.perf_counter() - wall, _cpu_s(server) - served)


def _cpu_s(process: psutil.Process | None) -> float:
    """CPU seconds of ``process`` and its children (the emulator and its relay), 0 without one."""
    if process is None:
        return 0.0
    total = 0.0
    for each in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = each.cpu_times()
            total += times.user + times.system
    return total


def upload(emulator, rows: dict[str, str]) -> dict[str, str]:
    """The folder's files and each archive put in the emulator's bucket; gs:// URIs by row."""
    prefix = emulator.bucket("bench-archives") + "/corpus"
    uploaded = {}
    for name, source in rows.items():
        if storage.archive_kind(source):
            uploaded[name] = emulator.upload_file(source, f"{prefix}/{Path(source).name}")
        else:
            emulator.upload_dir(source, f"{prefix}/folder")
            uploaded[name] = f"{prefix}/folder"
    return uploaded


def emulator_process() -> psutil.Process | None:
    """The emulator's process (``running_gcs_emulator`` starts it as a child of this one)."""
    return next((child for child in psutil.Process().children()
                 if "gcs_emulator_process" in " ".join(child.cmdline())), None)


def run_rounds(rows: dict[str, str], rounds: int, server: psutil.Process | None = None
               ) -> dict[str, list[Reading]]:
    """Every row ``rounds`` times, interleaved: (a load that comes and goes touches every row alike)."""
    readings: dict[str, list[Reading]] = {name: [] for name in rows}
    for _ in range(rounds):
        for name, source in rows.items():
            readings[name].append(measure(source, server))
    return readings


def format_table(readings: dict[str, list[Reading]], baseline: str = "folder") -> str:
    """One line per row: medians over the rounds, and each row's frames per CPU-second over the
    baseline row's."""
    def median(name: str, figure) -> float:
        return statistics.median(figure(r) for r in readings[name])

    with_server = any(r.server_cpu_s for values in readings.values() for r in values)
    base = median(baseline, lambda r: r.frames / r.cpu_s)
    header = (f"{'input':<14} {'frames':>7} {'frames/CPU-s':>13} {'vs folder':>10} {'frames/s':>9}"
              + (f" {'emulator CPU-s':>15}" if with_server else ""))
    lines = [header]
    for name, values in readings.items():
        rate = median(name, lambda r: r.frames / r.cpu_s)
        flag = "" if values[-1].frames == readings[baseline][-1].frames else " !"
        lines.append(f"{name:<14} {values[-1].frames:>7} {rate:>13.0f} {rate / base:>10.2f} "
                     f"{median(name, lambda r: r.frames / r.wall_s):>9.0f}"
                     + (f" {median(name, lambda r: r.server_cpu_s):>15.2f}" if with_server else "") + flag)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--gcs", action="store_true",
                        help="Also read every input through gs:// from a GCS emulator (a second table).")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-archives-") as tmp:
        root = Path(tmp)
        corpus = make_clips(root / "folder", args.clips)
        rows = {"folder": str(root / "folder"), **{k: str(v) for k, v in pack(root / "folder", root).items()}}
        local = run_rounds(rows, args.rounds)
        print(f"bench.archives: {args.clips} one-second clips ({corpus}), {args.rounds} rounds, median; "
              f"load average {os.getloadavg()[0]:.1f}")
        print(format_table(local))
        if args.gcs:
            from tests.support.gcs_emulator import environment, running_gcs_emulator

            with running_gcs_emulator(root / "gcs") as emulator, environment(emulator.env):
                started = time.perf_counter()
                remote = upload(emulator, rows)
                print(f"\nuploaded to the GCS emulator in {time.perf_counter() - started:.0f} s; the same "
                      "inputs read through gs://, ratios to the gs:// folder (frames/CPU-s: this process "
                      "only; the emulator's CPU is its own column)")
                print(format_table(run_rounds(remote, args.rounds, emulator_process())))


if __name__ == "__main__":
    main()
