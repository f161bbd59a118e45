"""Reading audio from archives and tables against the same files in a folder, in frames per CPU-second.

    python -m bench.archives [--clips 300] [--rounds 2]

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
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tarfile
import tempfile
import time
import wave
import zipfile
from pathlib import Path

import numpy as np
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


def listed(source: Path) -> list[str]:
    if source.is_dir():
        return [item.path for item in storage.walk_local(str(source)) if item.kind == "file"]
    return [storage.member_uri(str(source), member.name) for member in storage.list_members(str(source))]


def measure(source: Path) -> tuple[int, float]:
    """(frames, CPU seconds) to list ``source`` and decode every clip in it."""
    tables.drop_cached()
    started = time.process_time()
    frames = sum(num_frames(len(decode_all(uri, RATE)), WINDOW, HOP) for uri in listed(source))
    return frames, time.process_time() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-archives-") as tmp:
        root = Path(tmp)
        corpus = make_clips(root / "folder", args.clips)
        rows = {"folder": root / "folder", **pack(root / "folder", root)}
        rates: dict[str, list[float]] = {name: [] for name in rows}
        frames_seen: dict[str, int] = {}
        for _ in range(args.rounds):
            for name, source in rows.items():
                frames, cpu_s = measure(source)
                frames_seen[name] = frames
                rates[name].append(frames / cpu_s)
    baseline = statistics.median(rates["folder"])
    print(f"bench.archives: {args.clips} one-second clips ({corpus}), {args.rounds} rounds, median")
    print(f"{'input':<14} {'frames':>7} {'frames/CPU-s':>13} {'vs folder':>10}")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"{name:<14} {frames_seen[name]:>7} {rate:>13.0f} {rate / baseline:>10.2f}")


if __name__ == "__main__":
    main()
