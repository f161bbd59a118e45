"""Driver memory while planning tar shards (S shards of M members), against as many loose files.

    python -m bench.plan_archives [--sizes 10x1000,100x1000] [--full] [--member_bytes 100] \
        [--folder_sizes 100x1000] [--model_path DIR] [--workdir DIR]

Each size SxM gets S plain tar shards of M members each (``clips/m0000000.flac``, ``--member_bytes``
random bytes: a plan lists members, it never decodes them), written with ``tarfile`` into a temporary
folder that is deleted after the size's runs. Every plan runs in a process of its own on the local
runner (FnApiRunner) and its figure is that process's peak RSS (``wait4``, as ``bench.plan_backfill``
measures it):

- ``tar, --plan_only``: ``tag_audio --input 'shards/*.tar' --plan_only``. On the local runner the
  listing, the expansion of the shards into members and the done-set join all run in the driver.
- ``tar, waves plan``: what a local tag_audio run does before its first wave
  (``transforms.tagging.waves.plan_entries``): the same plan, whose entries the driver then keeps
  until the last wave; the line under the table gives their size.
- ``folder, --plan_only``: as many loose files (empty, in folders of M) given as ``--input FOLDER``:
  the baseline, measured in the same run, for each size in ``--folder_sizes`` (default: the largest).

A floor (one shard of 10 members) is the fixed cost of a plan of each kind (Python, TensorFlow, the
model's spec, Beam; the folder's is --plan_only's). ``growth`` is a row's peak less its floor's,
``B/member`` that growth over the row's members, and ``growth x`` the row's growth over the previous
size's of the same kind, to read against ``members x``: equal when memory follows the members, near 1
when it is flat.
``--full`` plans the issue's size too, 1,000 shards of 1,000 members (a million members, ~1 GB of
shards; the folder baseline at that size adds a million files, so it is left to --folder_sizes).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from bench.plan_backfill import DEFAULT_MODEL, plan_in_child

DEFAULT_SIZES = "10x1000,100x1000"
FULL_SIZES = "10x1000,100x1000,1000x1000"
FLOOR = (1, 10)
TAR_PLAN, TAR_WAVES, FOLDER_PLAN = "tar, --plan_only", "tar, waves plan", "folder, --plan_only"
# The waves plan, run in a child process as tag_audio would run it: python -c WAVES_PLAN TAG_AUDIO_ARGS.
WAVES_PLAN = ("-c", "import sys; from bench.plan_archives import waves_plan; "
                    "sys.exit(waves_plan(sys.argv[1:]))")


@dataclasses.dataclass
class Measured:
    kind: str
    shards: int
    members: int  # per shard
    wall_s: float
    peak_mb: float
    planned: int  # inputs the plan counted
    held: str = ""  # for a waves plan: what the driver keeps of it

    @property
    def inputs(self) -> int:
        return self.shards * self.members


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'10x1000,100x1000' -> [(10, 1000), (100, 1000)]."""
    sizes = []
    for item in text.split(","):
        if item.strip():
            shards, _, members = item.strip().lower().partition("x")
            sizes.append((int(shards), int(members)))
    if not sizes or any(s <= 0 or m <= 0 for s, m in sizes):
        raise SystemExit(f"--sizes takes SHARDSxMEMBERS items, e.g. {DEFAULT_SIZES}; not {text!r}")
    return sizes


def write_shards(directory: Path, shards: int, members: int, member_bytes: int) -> Path:
    """``shards`` plain tars of ``members`` members each in ``directory``; returns the directory."""
    directory.mkdir(parents=True)
    payload = os.urandom(member_bytes)
    for s in range(shards):
        with tarfile.open(directory / f"{s:06d}.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
            for m in range(members):
                info = tarfile.TarInfo(f"clips/m{m:07d}.flac")
                info.size = member_bytes
                tar.addfile(info, io.BytesIO(payload))
    return directory


def write_folder(directory: Path, folders: int, files: int) -> Path:
    """``folders`` x ``files`` empty .flac files (a listing reads names and sizes, never bytes)."""
    for f in range(folders):
        sub = directory / f"{f:06d}"
        sub.mkdir(parents=True)
        for m in range(files):
            (sub / f"m{m:07d}.flac").touch()
    return directory


def planned_count(plan_line: str) -> int:
    """'plan: 10000 input files: ...' -> 10000."""
    return int(plan_line.split()[1])


def waves_plan(argv: list[str]) -> int:
    """Child process: tag_audio's arguments -> the plan a local run makes before its waves, printed as
    --plan_only prints it, then a line saying what the driver keeps of it (entries, bytes each)."""
    from beam_jobs import cli, tag_audio
    from transforms.tagging import waves
    from transforms.tagging.done_set import format_plan

    options = cli.pipeline_options(argv)
    config, _record = tag_audio.prepare_job(options)
    entries, plan = waves.plan_entries(config, options)
    print(format_plan(plan, retry_failed=False))
    sample = entries[:: max(1, len(entries) // 1000)]
    each = sum(_entry_bytes(e) for e in sample) / max(1, len(sample))
    print(f"held: {len(entries)} entries, {each:.0f} bytes each, {len(entries) * each / 2**20:.1f} MB")
    return 0


def _entry_bytes(entry) -> int:
    """A FileEntry's own memory: the object, its attribute dict and the values only it holds."""
    values = [v for v in vars(entry).values() if v is not None]
    return sys.getsizeof(entry) + sys.getsizeof(vars(entry)) + sum(sys.getsizeof(v) for v in values)


def measure(kind: str, input_args: tuple[str, ...], shards: int, members: int, model_path: str,
            root: Path) -> Measured:
    out = Path(tempfile.mkdtemp(prefix="out_", dir=root))
    command = WAVES_PLAN if kind == TAR_WAVES else ("-m", "beam_jobs.tag_audio", "--plan_only")
    wall, peak_mb, lines = plan_in_child(input_args, out, model_path, command=command)
    shutil.rmtree(out, ignore_errors=True)
    held = next((line.removeprefix("held: ") for line in lines if line.startswith("held: ")), "")
    row = Measured(kind, shards, members, wall, peak_mb, planned_count(lines[0]), held)
    print(f"{kind}: {shards} x {members}: {lines[0]} ({wall:.1f} s, peak {peak_mb:.0f} MB)"
          + (f"; {held}" if held else ""), flush=True)
    return row


def floor_of(row: Measured, floors: dict[str, Measured]) -> Measured:
    """The fixed cost a row is measured against: its own kind's floor (a folder's is --plan_only's)."""
    return floors[TAR_PLAN if row.kind == FOLDER_PLAN else row.kind]


def format_table(rows: list[Measured], floors: dict[str, Measured]) -> str:
    header = (f"{'input':<22} {'shards x members':>17} {'inputs':>9} {'wall s':>7} {'peak MB':>8} "
              f"{'growth MB':>10} {'B/member':>9} {'growth x':>9} {'members x':>10}")
    lines = [header, "-" * len(header)]
    previous: dict[str, Measured] = {}
    for row in rows:
        floor = floor_of(row, floors)
        size = f"{row.shards} x {row.members}"
        line = f"{row.kind:<22} {size:>17} {row.inputs:>9,} {row.wall_s:>7.1f} {row.peak_mb:>8.0f}"
        if row is floor:
            lines.append(f"{line}    (floor)")
            continue
        growth = row.peak_mb - floor.peak_mb
        before = previous.get(row.kind)
        ratios = (f"{growth / (before.peak_mb - floor.peak_mb):>9.1f} {row.inputs / before.inputs:>10.0f}"
                  if before and before.peak_mb > floor.peak_mb else f"{'':>9} {'':>10}")
        flag = "" if row.planned == row.inputs else f"  ! planned {row.planned}"
        lines.append(f"{line} {growth:>10.0f} {growth * 2**20 / row.inputs:>9.0f} {ratios}{flag}")
        previous[row.kind] = row
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=None,
                        help=f"SHARDSxMEMBERS, comma-separated (default {DEFAULT_SIZES}).")
    parser.add_argument("--full", action="store_true", help=f"The issue's sizes: {FULL_SIZES}.")
    parser.add_argument("--folder_sizes", default=None,
                        help="Sizes that also get the loose-files baseline (default: the largest of --sizes "
                             "up to 100x1000; 'none' for none).")
    parser.add_argument("--member_bytes", type=int, default=100)
    parser.add_argument("--no_waves", action="store_true", help="Leave out the waves-plan rows.")
    parser.add_argument("--model_path", default=str(DEFAULT_MODEL))
    parser.add_argument("--workdir", default=None,
                        help="Where shards and files are written (default: a temp dir).")
    args = parser.parse_args(argv)
    if not Path(args.model_path).exists():
        raise SystemExit(f"no model at {args.model_path}: pass --model_path (any YAMNet SavedModel)")
    sizes = parse_sizes(args.sizes or (FULL_SIZES if args.full else DEFAULT_SIZES))
    if args.folder_sizes is None:
        small = [s for s in sizes if s[0] * s[1] <= 100_000]
        folder_sizes = {max(small, key=lambda s: s[0] * s[1])} if small else set()
    else:
        folder_sizes = set() if args.folder_sizes == "none" else set(parse_sizes(args.folder_sizes))

    root = Path(tempfile.mkdtemp(prefix="plan_archives_", dir=args.workdir))
    rows: list[Measured] = []
    try:
        floor_dir = write_shards(root / "floor", *FLOOR, args.member_bytes)
        for kind in [TAR_PLAN] + ([] if args.no_waves else [TAR_WAVES]):
            rows.append(measure(kind, ("--input", f"{floor_dir}/*.tar"), *FLOOR, args.model_path, root))
        floors = {row.kind: row for row in rows}
        for shards, members in sizes:
            started = time.perf_counter()
            shard_dir = write_shards(root / f"shards_{shards}x{members}", shards, members, args.member_bytes)
            print(f"wrote {shards} shards of {members} members in {time.perf_counter() - started:.1f} s",
                  flush=True)
            tars = ("--input", f"{shard_dir}/*.tar")
            rows.append(measure(TAR_PLAN, tars, shards, members, args.model_path, root))
            if not args.no_waves:
                rows.append(measure(TAR_WAVES, tars, shards, members, args.model_path, root))
            shutil.rmtree(shard_dir)
            if (shards, members) in folder_sizes:
                folder = write_folder(root / f"folder_{shards}x{members}", shards, members)
                rows.append(measure(FOLDER_PLAN, ("--input", str(folder)), shards, members, args.model_path,
                                    root))
                shutil.rmtree(folder)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    rows.sort(key=lambda r: ([TAR_PLAN, TAR_WAVES, FOLDER_PLAN].index(r.kind), r.inputs))
    print(f"\nbench.plan_archives: driver peak RSS (MB = MiB) while planning on the local runner "
          f"(FnApiRunner), {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; members of "
          f"{args.member_bytes} bytes")
    print(format_table(rows, floors))
    for row in rows:
        if row.held and row is not floors.get(row.kind):
            print(f"waves plan, {row.inputs:,} members: the driver keeps {row.held} until the last wave")
    folders = {r.inputs: r for r in rows if r.kind == FOLDER_PLAN}
    for row in rows:
        if row.kind == TAR_PLAN and row.inputs in folders:
            base = folders[row.inputs]
            floor = floors[TAR_PLAN].peak_mb
            print(f"tar / folder at {row.inputs:,} inputs: peak {row.peak_mb / base.peak_mb:.2f}, growth "
                  f"{(row.peak_mb - floor) / max(1e-9, base.peak_mb - floor):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
