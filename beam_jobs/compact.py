"""compact: remove the runs of a tag_audio output whose every row is superseded by a later result.

    python -m beam_jobs.compact OUT_DIR [--dry_run]

A run is removed only when it is published and holds no current row (the
latest ok result of a file and config) and no latest attempt of a file; the
current view and the next run's done-set are the same afterwards.  Runs still
'running' are never touched.  Removed runs' records move to
``runs/compacted/``.  It holds the output's lease while it works: while a
tag_audio run works on OUT_DIR it removes nothing and exits with status 3.
"""

from __future__ import annotations

import argparse

from beam_jobs import cli
from transforms.output.compaction import CompactionPlan, compact, holding_output, plan_compaction, repair
from transforms.output.inspection import human_bytes
from transforms.output.layout import FILES, FRAMES, OutputLayout
from transforms.output.lease import OutputBusyError
from transforms.output.reader import DamagedOutputError, damaged_parts, find_output

JOB = "compact"
BUSY = 3  # as tag_audio: another run holds the output


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="tag_audio output directory (local or gs://).")
    parser.add_argument("--dry_run", action="store_true", help="Print what would be removed; remove nothing.")
    parser.add_argument("--repair", action="store_true",
                        help="Move runs with a damaged Parquet part to OUT_DIR/_quarantine/ (their rows then "
                             "count as never written: the next run tags those files again), then compact.")


@cli.job(JOB, add_options)
def run(args: argparse.Namespace) -> int:
    try:
        found = find_output(args.out_dir)  # read only: a missing OUT_DIR stops here
        if damaged := damaged_parts(found, (FRAMES, FILES), found.published):
            if not args.repair:
                raise DamagedOutputError(found.root, damaged)
            with holding_output(args.out_dir):
                moved = repair(args.out_dir, damaged)
            print(f"repaired: {len(moved)} run(s) with damaged parts moved to "
                  f"{OutputLayout(found.root).quarantine_path('')}: {', '.join(moved)}")
            plan = plan_compaction(args.out_dir)
            if not (plan.remove or plan.kept or plan.untouched):
                return 0  # the repaired runs were all there was
        plan = plan_compaction(args.out_dir)  # read only: an empty OUT_DIR stops here
        if args.dry_run or _report(args.out_dir, plan, dry_run=True, quiet=True) != 0:
            return _report(args.out_dir, plan, dry_run=True)
        with holding_output(args.out_dir) as lease:  # planned again: runs may have ended meanwhile
            plan = plan_compaction(args.out_dir)
            status = _report(args.out_dir, plan, dry_run=False)
            if status == 0:
                removed = compact(plan, lease)
                print(f"removed {len(removed)} run(s), {human_bytes(plan.bytes)}; "
                      "their records are in runs/compacted/")
            return status
    except FileNotFoundError as e:
        return cli.fail(JOB, e.args[0] if e.args else str(e))
    except OutputBusyError as e:
        return cli.fail(JOB, str(e), status=BUSY)
    except DamagedOutputError as e:
        return cli.fail(JOB, str(e))


def _report(out_dir: str, plan: CompactionPlan, dry_run: bool, quiet: bool = False) -> int:
    if not plan.remove and not plan.kept and not plan.untouched:
        if quiet:
            return cli.USAGE
        return cli.fail(JOB, f"no tag_audio output (frames/, files/ or run records) under {out_dir}")
    if quiet:
        return 0
    verb = "would remove" if dry_run else "removing"
    print(f"compact  {plan.out_dir}")
    for removal in plan.remove:
        print(f"  {verb}  {removal.run.label}  {removal.run.status}  {removal.files_rows:,} files rows and "
              f"{removal.frames_rows:,} frames, all superseded, {human_bytes(removal.bytes)}")
    print(f"  keeping  {len(plan.kept)} published run(s) with current or latest rows")
    for run_id, job in sorted(plan.being_read.items()):
        print(f"  keeping  run={run_id}: superseded, but a running {job} job reads it")
    for run in plan.untouched:
        print(f"  never committed  {run.label}  status {run.status or 'unknown (no record)'}: its Parquet is "
              "cleared by the next run or compaction that holds the lease")
    if dry_run:
        print(f"dry run: {len(plan.remove)} run(s), {human_bytes(plan.bytes)} would be removed; nothing was")
    return 0


main = cli.main_for(run, __name__)
