"""Classifier heads: three on one YAMNet pass against three exports, and apply_head against re-tagging.

    python -m bench.heads [--clips 24] [--rounds 1] [--model_path DIR]

Setup (not timed): ``--clips`` ESC-10 clips (Ogg Vorbis, 44.1 kHz, 5 s; generated clips of the same
kind without ../shared/data/esc10) are tagged once with YAMNet (the random-weight fixture by default:
weights do not change the cost) and three heads are trained on them (train_head, different seeds).

Timed, in CPU seconds of this process (every thread; tag_audio with ``--decode_processes 0`` so its
decoding counts here too), rows interleaved over ``--rounds`` after one untimed round that loads
every model (TensorFlow and a head export's graph load once per worker process, whatever the input's
size: what is compared is the work per frame):

- ``3 heads, one pass``: ``tag_audio --model yamnet --head H1 --head H2 --head H3`` (base scores kept);
- ``3 exports, one after another``: ``tag_audio --model_path Hn/export`` for each head;
- ``apply_head``: ``beam_jobs.apply_head --frames OUT --head H1 --force`` on the stored embeddings;
- ``re-tag with the export``: ``tag_audio --model_path H1/export`` on the same clips.

Prints the CPU ratio one pass / three exports (the issue's target: at most 0.45) and the frames per
CPU second of apply_head against re-tagging (target: at least 20x).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.corpus import DEFAULT_MODEL, ESC10_AUDIO, clip_corpus  # noqa: E402

HEADS = ("h1", "h2", "h3")


def _check(status: int, what: str) -> None:
    if status != 0:
        raise SystemExit(f"{what} exited with {status}")


def tag(inputs: Path, out: Path, *extra: str) -> None:
    from beam_jobs import tag_audio

    shutil.rmtree(out, ignore_errors=True)  # each timed run does the whole work
    _check(tag_audio.run(["--input", str(inputs), "--output", str(out), "--decode_processes", "0",
                          "--progress_s", "0", *extra]), "tag_audio")


def train_heads(clips: list[str], tagged: Path, root: Path) -> dict[str, Path]:
    """Three heads on the clips' frames (labels: ESC-10's, or two made-up classes for generated clips)."""
    from beam_jobs import build_training_set, train_head

    labels = root / "labels.csv"
    known = {}
    esc10_labels = ESC10_AUDIO.parent / "labels.csv"
    if esc10_labels.exists():
        for line in esc10_labels.read_text().splitlines()[1:]:
            path, label, _fold = line.split(",")
            known[Path(path).name] = label
    rows = ["path,label,fold"]
    for i, clip in enumerate(clips):
        name = Path(clip).name
        label = known.get(name.split("_", 1)[-1], "a" if i % 2 else "b")  # links: NNNNN_<clip name>
        rows.append(f"{clip},{label},{1 + i % 3}")
    labels.write_text("\n".join(rows) + "\n")
    _check(build_training_set.run(["--frames", str(tagged), "--labels", str(labels), "--output",
                                   str(root / "ds"), "--train_folds", "1,2", "--test_folds", "3"]),
           "build_training_set")
    exports = {}
    for seed, name in enumerate(HEADS):
        _check(train_head.run(["--dataset", str(root / "ds"), "--output", str(root / name), "--seed",
                               str(seed), "--hidden_units", "64", "--epochs", "3", "--patience", "2"]),
               "train_head")
        exports[name] = root / name / "export"
    return exports


def cpu_seconds(action) -> float:
    start = time.process_time()
    action()
    return time.process_time() - start


def frames_of(out: Path) -> int:
    import pyarrow.dataset as ds

    return ds.dataset(str(out / "frames"), format="parquet", partitioning="hive").count_rows()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--model_path", default=str(DEFAULT_MODEL))
    parser.add_argument("--work", default=None,
                        help="Keep the clips, tagging and heads here and reuse them (default: a temporary "
                             "directory).")
    parser.add_argument("--no_base_scores", action="store_true",
                        help="The one pass writes YAMNet's embeddings only (tag_audio --no_base_scores).")
    args = parser.parse_args(argv)
    from beam_jobs import apply_head

    with tempfile.TemporaryDirectory(prefix="bench_heads_") as scratch:
        root = Path(args.work or scratch)
        corpus = clip_corpus(root / "clips", args.clips)
        audio = corpus.directory
        tagged = root / "tagged"
        exports = {name: root / name / "export" for name in HEADS}
        if not all((e / "saved_model.pb").exists() for e in exports.values()):
            tag(audio, tagged, "--model_path", args.model_path)
            exports = train_heads(corpus.files, tagged, root)
        heads = [a for e in exports.values() for a in ("--head", str(e))]
        heads += ["--no_base_scores"] if args.no_base_scores else []

        def exports_one_after_another():
            for name, export in exports.items():
                tag(audio, root / f"alone_{name}", "--model_path", str(export))

        rows = {
            "3 heads, one pass": lambda: tag(audio, root / "one_pass", "--model_path", args.model_path,
                                             *heads),
            "3 exports, one after another": exports_one_after_another,
            "apply_head": lambda: _check(apply_head.run(["--frames", str(tagged), "--head",
                                                         str(exports["h1"]), "--force"]), "apply_head"),
            "re-tag with the export": lambda: tag(audio, root / "retag", "--model_path", str(exports["h1"])),
        }
        times: dict[str, list[float]] = {name: [] for name in rows}
        for action in rows.values():  # loads every model once, untimed
            action()
        for _ in range(args.rounds):
            for name, action in rows.items():
                times[name].append(cpu_seconds(action))
        frames = frames_of(tagged)  # what apply_head scores
        retagged = frames_of(root / "retag")  # what the other rows tag

    cpu = {name: statistics.median(values) for name, values in times.items()}
    print(f"\n{args.clips} clips, {retagged} frames tagged, {frames} scored by apply_head, {args.rounds} "
          "round(s) (median CPU s of this process)")
    for name, value in cpu.items():
        print(f"  {name:30} {value:8.2f} CPU s")
    print(f"one pass / three exports: {cpu['3 heads, one pass'] / cpu['3 exports, one after another']:.2f} "
          "(target <= 0.45)")
    apply_rate = frames / cpu["apply_head"]
    retag_rate = retagged / cpu["re-tag with the export"]
    print(f"apply_head {apply_rate:.0f} frames per CPU s, re-tag {retag_rate:.0f}: "
          f"{apply_rate / retag_rate:.1f}x (target >= 20x)")


if __name__ == "__main__":
    main()
