"""plot: one file's timeline as a PNG: waveform, log-mel spectrogram and its top classes over time.

    python -m beam_jobs.plot --frames OUT_DIR --uri URI --output FIG.png \\
        [--top N] [--start_s S] [--end_s E] [--run RUN_ID]
"""

from __future__ import annotations

import argparse

from beam_jobs import cli
from transforms.output.timeline_plot import RANK_BY, plot_timeline

JOB = "plot"


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", required=True, metavar="OUT_DIR",
                        help="tag_audio output directory (local or gs://), or its frames directory.")
    parser.add_argument("--uri", required=True,
                        help="The audio file to plot, exactly as in the 'uri' column.")
    parser.add_argument("--output", required=True, metavar="FIG.png", help="PNG to write (local or gs://).")
    parser.add_argument("--top", type=int, default=10, help="Classes in the heatmap (default 10).")
    parser.add_argument("--start_s", type=float, default=0.0, help="Start of the shown span, seconds.")
    parser.add_argument("--end_s", type=float, default=None,
                        help="End of the shown span, seconds (default: the end of the file).")
    parser.add_argument("--rank_by", choices=RANK_BY, default="max",
                        help="Rank classes by their peak (max) or mean score over the span (default max: "
                             "short events stay visible in long spans).")
    parser.add_argument("--run", default=None, metavar="RUN_ID",
                        help="Plot this run's frames (default: the newest run that has the URI).")
    parser.add_argument("--channel", type=int, default=None,
                        help="For a file tagged with --channels: plot this channel (counted from 0); "
                             "default: the frames of its channels mixed.")
    parser.add_argument("--audio", default=None, metavar="PATH",
                        help="Decode the audio from here instead of URI (a local copy of a remote file).")
    parser.add_argument("--width", type=int, default=1600, help="Image width in pixels (default 1600).")
    parser.add_argument("--height", type=int, default=1000, help="Image height in pixels (default 1000).")
    parser.add_argument("--dpi", type=int, default=100, help="Dots per inch (font scale; default 100).")


@cli.job(JOB, add_options)
def run(args: argparse.Namespace) -> int:
    if args.top < 1 or args.width < 200 or args.height < 200:
        raise cli.UsageError("--top must be >= 1 and --width/--height >= 200 pixels")
    try:
        result = plot_timeline(args.frames, args.uri, args.output, top=args.top, start_s=args.start_s,
                               end_s=args.end_s, run_id=args.run, rank_by=args.rank_by,
                               audio_uri=args.audio, width_px=args.width, height_px=args.height,
                               dpi=args.dpi, channel=args.channel)
    except (LookupError, ValueError, FileNotFoundError) as e:
        return cli.fail(JOB, str(e))
    run_label = f"run={result.run_id}" if result.run_id is not None else "no run partition"
    print(f"wrote {result.output} ({result.width_px}x{result.height_px} px): {result.model_identity}, "
          f"{run_label}, {result.start_s:g}-{result.end_s:g} s, {result.frames_shown} frames, "
          f"top classes: {', '.join(result.classes[:5])}{' ...' if len(result.classes) > 5 else ''}")
    if result.audio_note:
        print(f"note: {result.audio_note}")
    return 0


main = cli.main_for(run, __name__)
