"""The offline demo: tag the bundled example recordings with the bundled keyword model.

    python -m beam_jobs.demo [--output demo_out]

Runs tag_audio with events on (FnApiRunner, local files, a model shipped in the
repository, nothing downloaded), then reads the events table back from Parquet
and prints where each keyword was heard.  Also renders a timeline plot of the
first recording.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from beam_jobs import cli
from transforms.answers.event_pipeline import EventSettings
from transforms.answers.thresholds import rules_above
from transforms.output.inspection import format_text, summarize_output
from transforms.output.reader import find_output, read_events, read_files
from transforms.output.summary import format_summary
from transforms.output.timeline_plot import plot_timeline
from transforms.tagging import run as tagging
from transforms.tagging.done_set import format_plan

JOB = "demo"
REPO = Path(__file__).resolve().parents[1]
EXAMPLE_AUDIO = REPO / "examples" / "audio"
EXAMPLE_MODEL = REPO / "examples" / "models" / "keyword"


def spoken_keywords(expected_json: Path = EXAMPLE_AUDIO / "expected.json") -> dict[str, list[dict]]:
    """File name -> keywords actually said (label, start_s, end_s), as the example script recorded them."""
    if not expected_json.exists():
        return {}
    document = json.loads(expected_json.read_text())
    return {r["file"]: r["keywords"] for r in document.get("recordings", [])}


def print_keywords(out_dir: Path, min_score: float, stream=sys.stdout) -> int:
    """Prints one line per keyword event per file, from the events Parquet of the latest run; returns the
    event count.

    Next to what the model heard, each file shows what was actually said, so hits
    and false alarms can be told apart at a glance.
    """
    said = spoken_keywords()
    run = find_output(str(out_dir)).published[-1]
    table = read_events(run, ["uri", "label", "start_s", "end_s", "peak_score"]).to_pylist()
    count = 0
    for uri in sorted(set(read_files(run, ["uri"]).column("uri").to_pylist())):
        events = sorted((e for e in table if e["uri"] == uri and e["peak_score"] >= min_score),
                        key=lambda e: e["start_s"])
        name = Path(uri).name
        print(f"{name}:", file=stream)
        if name in said:
            words = ", ".join(f"{k['label']} at {k['start_s']:.1f} s" for k in said[name])
            print(f"  said:   {words}", file=stream)
        for event in events:
            print(f"  heard:  {event['label']:<6} {event['start_s']:5.2f} - {event['end_s']:5.2f} s  "
                  f"score {event['peak_score']:.2f}", file=stream)
        if not events:
            print("  (no keyword above the threshold)", file=stream)
        count += len(events)
    return count


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default=str(REPO / "demo_out"), help="Where the demo writes its output.")
    # Both defaults are the best F1 of `python -m bench.keyword_events` (held-out speakers' clips
    # joined into long recordings), not a fit to the example recordings.
    parser.add_argument("--min_score", type=float, default=0.3,
                        help="Keyword score at which an event starts (and ends when scores fall below it).")
    parser.add_argument("--smooth_s", type=float, default=0.5,
                        help="Scores are averaged over this long around each frame before the thresholds: "
                             "a word heard in one window only (a filler word like 'and' taken for "
                             "'on') stays below them.")


@cli.job(JOB, add_options)
def run(args: argparse.Namespace) -> int:
    """Runs the demo; returns the exit status (0 ok, 1 the run failed, 2 usage error)."""

    out = Path(args.output)
    shutil.rmtree(out, ignore_errors=True)  # the demo always starts fresh
    try:
        config, record = tagging.prepare([str(EXAMPLE_AUDIO)], str(out), model="keyword",
                                         model_path=str(EXAMPLE_MODEL), hop_s=0.25,
                                         events=EventSettings(rules_above(args.min_score, args.smooth_s)))
    except tagging.UsageError as e:
        return cli.fail(JOB, str(e))
    final = tagging.execute(config, record, cli.pipeline_options([]))
    print(format_plan(final.plan, retry_failed=False))
    print(format_summary(final))
    if final.status != "succeeded":
        return 1
    print("\nKeywords heard (from the events Parquet):")
    print_keywords(out, args.min_score)

    print("\nWhat is in the output (python -m beam_jobs.inspect):")
    print(format_text(summarize_output(str(out))))
    first = sorted(p for p in EXAMPLE_AUDIO.iterdir() if p.suffix != ".json")[0]
    figure = out / "timeline.png"
    plot_timeline(str(out), str(first), str(figure), top=6)
    print(f"\nTimeline of {first.name}: {figure}")
    return 0


main = cli.main_for(run, __name__)
