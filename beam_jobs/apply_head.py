"""apply_head: a classifier head over the embeddings a tag_audio run stored; no decode, no YAMNet.

    python -m beam_jobs.apply_head --frames OUT_DIR --head HEAD_DIR/export [--head NAME=PATH ...] [--force]

Every current frame of OUT_DIR (the base model's, that the head was trained on)
is scored by each head; each head's frames and files are written under
OUT_DIR/heads/NAME and published like a run (a run record of their own),
exactly as ``tag_audio --head`` writes them: same columns, class names and
config id, so the two are interchangeable.  Files a head already scored are
skipped (``--force`` scores them again).  The last step of the agile loop:
search, label, train_head, then apply the head to the whole archive at the
cost of a matrix product.
"""

from __future__ import annotations

import argparse

from beam_jobs import cli
from transforms.output.lease import DEFAULT_TTL_S, OutputBusyError, check_ttl
from transforms.tagging.apply_head import ApplyHeadError, apply_heads

JOB = "apply_head"
BUSY = 3  # as tag_audio: another run holds the output


def add_options(parser: argparse.ArgumentParser) -> None:
    cli.add_frames_options(parser, required=True)
    parser.add_argument("--head", action="append", default=[], required=True,
                        help="HEAD_DIR/export from train_head (NAME=PATH names it); repeatable.")
    parser.add_argument("--force", action="store_true", help="Score files the head already scored again.")
    parser.add_argument("--lease_ttl_s", type=float, default=DEFAULT_TTL_S,
                        help="The lease on --frames OUT_DIR that this job holds while it writes there, as "
                             "tag_audio's.")


@cli.job(JOB, add_options)
def run(args: argparse.Namespace) -> int:
    if problem := check_ttl(args.lease_ttl_s):
        raise cli.UsageError(problem)
    try:
        results = apply_heads(args.frames, args.head, force=args.force, lease_ttl_s=args.lease_ttl_s,
                              parameters={"frames": args.frames, "head": args.head, "force": args.force})
    except (ApplyHeadError, FileNotFoundError) as e:
        return cli.fail(JOB, str(e))
    except OutputBusyError as e:
        return cli.fail(JOB, str(e), status=BUSY)
    for applied in results:
        record = applied.record
        counts = record.counts or {}
        print(f"apply_head {applied.head.name}: run {record.run_id} {record.status}: {applied.frames} "
              f"frames of {counts.get('files', 0)} files scored, {applied.skipped_files} files already done, "
              f"{applied.cpu_s:.2f} CPU s -> {applied.head.out_dir}/")
    return 0 if all(a.record.status != "failed" for a in results) else 1


main = cli.main_for(run, __name__)
