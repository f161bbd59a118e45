"""compact: remove the runs of a tag_audio output whose every row is superseded by a later result.

    python -m beam_jobs.compact OUT_DIR [--dry_run]

A run is removed only when it is published and holds no current row (the
latest ok result of a file and config) and no latest attempt of a file; the
current view and the next run's done-set are the same afterwards.  Runs still
'running' are never touched.  Removed runs' records move to
``runs/compacted/``.  Run it when no tag_audio job is writing to OUT_DIR.
"""

from __future__ import annotations

import argparse
import sys

from transforms.output.compaction import compact, plan_compaction
from transforms.output.inspection import human_bytes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m beam_jobs.compact", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", metavar="OUT_DIR", help="tag_audio output directory (local or gs://).")
    parser.add_argument("--dry_run", action="store_true", help="Print what would be removed; remove nothing.")
    return parser


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        plan = plan_compaction(args.out_dir)
    except FileNotFoundError as e:
        print(f"compact: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    if not plan.remove and not plan.kept and not plan.untouched:
        print(f"compact: no tag_audio output (frames/, files/ or run records) under {args.out_dir}",
              file=sys.stderr)
        return 2
    verb = "would remove" if args.dry_run else "removing"
    print(f"compact  {plan.out_dir}")
    for removal in plan.remove:
        print(f"  {verb}  {removal.run.label}  {removal.run.status}  {removal.files_rows:,} files rows and "
              f"{removal.frames_rows:,} frames, all superseded, {human_bytes(removal.bytes)}")
    print(f"  keeping  {len(plan.kept)} published run(s) with current or latest rows")
    for run in plan.untouched:
        print(f"  never touched  {run.label}  status {run.status or 'unknown (no record)'}: not published")
    if args.dry_run:
        print(f"dry run: {len(plan.remove)} run(s), {human_bytes(plan.bytes)} would be removed; nothing was")
        return 0
    removed = compact(plan)
    print(f"removed {len(removed)} run(s), {human_bytes(plan.bytes)}; their records are in runs/compacted/")
    return 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
