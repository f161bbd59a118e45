"""inspect: what is in a tag_audio output: runs, models, file outcomes, hours, frames, labels, size.

    python -m beam_jobs.inspect OUT_DIR [--format text|json] [--run RUN_ID]

With several runs it also shows the current view: files rows that are current (the latest ok
result per file and config), latest attempts that were not ok, superseded rows, and the runs
``python -m beam_jobs.compact`` would remove.
"""

from __future__ import annotations

import argparse
import json

from beam_jobs import cli
from transforms.output.inspection import format_text, summarize_output, to_json
from transforms.output.layout import FILES, FRAMES
from transforms.output.reader import DamagedOutputError, damaged_parts, find_output

JOB = "inspect"


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="tag_audio output directory (local or gs://).")
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="text: one screen for people (default); json: everything, for scripts.")
    parser.add_argument("--run", default=None, metavar="RUN_ID", help="Only this run.")
    parser.add_argument("--top_labels", type=int, default=10,
                        help="How many top labels to list (default 10).")


@cli.job(JOB, add_options)
def run(args: argparse.Namespace) -> int:
    try:
        found = find_output(args.out_dir)
        if damaged := damaged_parts(found, (FRAMES, FILES), found.runs):
            raise DamagedOutputError(found.root, damaged)
        summary = summarize_output(found, run_id=args.run, top_labels=args.top_labels,
                                   only_run=args.run is not None)
    except (FileNotFoundError, KeyError) as e:
        return cli.fail(JOB, e.args[0] if e.args else str(e))
    except DamagedOutputError as e:
        return cli.fail(JOB, str(e))
    if not summary.runs:
        return cli.fail(JOB, f"no tag_audio output (frames/, files/ or run records) under {args.out_dir}")
    if args.format == "json":
        print(json.dumps(to_json(summary), indent=2))
    else:
        print(format_text(summary))
    return 0


main = cli.main_for(run, __name__)
