"""ESC-10 clip accuracy of a train_head head on YAMNet frames, against a logistic-regression baseline.

    python -m bench.esc10_head [--shared ../shared] [--work /tmp/esc10_head] [--seeds 0,1,2] \\
        [--rotations] [--docs docs]

1. tag the ESC-10 clips once with ``models/yamnet-approx`` (tag_audio, default options);
2. build a training set: folds 1-2 train (10% of those clips carved out for eval by URI
   hash), fold 3 test; with ``--rotations`` also fold 1 and fold 2 as the test fold;
3. train the head (default options) once per seed; the first seed is exported;
4. tag the test fold's clips with that export (tag_audio --model head) and score the clips
   from tag_audio's own frames: the end-to-end number;
5. baseline: multinomial logistic regression (L2, C=1, as scikit-learn's default; fitted by
   full-batch Adam to a gradient norm below 1e-2) on the mean- and max-pooled embeddings of
   the same frames, z-scored on the training folds, trained on all clips of the training folds.

Writes ``WORK/results.json``, prints a table; ``--docs DIR`` copies the exported head's
confusion matrix to ``DIR/esc10_head_confusion.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = REPO_ROOT.parent / "shared"
FOLDS = ("1", "2", "3")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", default=str(DEFAULT_SHARED), help="folder with data/esc10 and models/")
    parser.add_argument("--work", default="/tmp/esc10_head", help="scratch folder (reused: tagging is kept)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated head seeds; the first is exported")
    parser.add_argument("--rotations", action="store_true",
                        help="also test on fold 1 and fold 2 (training on the other two)")
    parser.add_argument("--docs", default=None, help="copy the confusion matrix PNG into this folder")
    return parser.parse_args(argv)


def _timed(label: str, timings: dict, fn, *args):
    started = time.monotonic()
    result = fn(*args)
    timings[label] = round(time.monotonic() - started, 1)
    print(f"[{timings[label]:7.1f} s] {label}", flush=True)
    return result


def tag(audio_dir: Path, model: Path, out: Path, extra_args: tuple[str, ...] = (),
        retag: bool = False) -> dict:
    """Tags the clips once into ``out`` (reused unless ``retag``); returns the run record."""
    import shutil

    from beam_jobs import tag_audio

    records = sorted(out.glob("runs/*.json"))
    if retag or len(records) != 1 or json.loads(records[0].read_text())["status"] != "succeeded":
        shutil.rmtree(out, ignore_errors=True)  # one run only: its wall_s is the tagging cost
        if tag_audio.run(["--input", str(audio_dir), "--output", str(out), "--model_path", str(model),
                          "--progress_s", "0", *extra_args]) != 0:
            raise RuntimeError("tag_audio failed")
        records = sorted(out.glob("runs/*.json"))
    return json.loads(records[0].read_text())


def build(frames: Path, labels: Path, ds_dir: Path, test_fold: str) -> None:
    from beam_jobs import build_training_set

    train = ",".join(f for f in FOLDS if f != test_fold)
    status = build_training_set.run(["--frames", str(frames), "--labels", str(labels),
                                     "--output", str(ds_dir), "--train_folds", train,
                                     "--test_folds", test_fold, "--overwrite"])
    if status != 0:
        raise RuntimeError("build_training_set failed")


def train(ds_dir: Path, head_dir: Path, seed: int, export: bool) -> dict:
    from beam_jobs import train_head

    args = ["--dataset", str(ds_dir), "--output", str(head_dir), "--seed", str(seed)]
    if train_head.run(args + ([] if export else ["--no_export"])) != 0:
        raise RuntimeError("train_head failed")
    return json.loads((head_dir / "metrics.json").read_text())


def tag_with_export(clips: list[str], export: Path, out: Path) -> None:
    from beam_jobs import tag_audio

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    manifest = out / "manifest.txt"
    manifest.write_text("\n".join(clips) + "\n")
    if tag_audio.run(["--input_manifest", str(manifest), "--output", str(out / "tagged"), "--model", "head",
                      "--model_path", str(export), "--progress_s", "0"]) != 0:
        raise RuntimeError("tag_audio with the export failed")


def clip_accuracy_from_frames(out: Path, truth: dict[str, str]) -> tuple[float, int]:
    """Clip accuracy from a tag_audio output: the mean of each clip's frame scores, argmax."""
    import pyarrow.dataset as pads

    from schemas.tables import class_names_from

    dataset = pads.dataset(f"{out}/frames", format="parquet", partitioning="hive")
    classes = class_names_from(dataset.schema)
    frames = dataset.to_table(columns=["uri", "scores"]).to_pandas()
    correct = 0
    for uri, group in frames.groupby("uri"):
        mean = np.stack(group.scores.to_numpy()).mean(axis=0)
        correct += classes[int(np.argmax(mean))] == truth[Path(uri).name]
    clips = frames.uri.nunique()
    return correct / clips, clips


def pooled_embeddings(frames_dir: Path) -> tuple[list[str], np.ndarray]:
    """Per clip: mean and max of its frames' embeddings, concatenated."""
    import pyarrow.dataset as pads

    table = pads.dataset(f"{frames_dir}/frames", format="parquet", partitioning="hive").to_table(
        columns=["uri", "embedding"]).to_pandas()
    embeddings = np.stack(table.embedding.to_numpy()).astype(np.float32)
    rows = table.groupby("uri").indices
    uris = sorted(rows)
    pooled = np.stack([np.concatenate([embeddings[rows[u]].mean(axis=0), embeddings[rows[u]].max(axis=0)])
                       for u in uris])
    return uris, pooled


def logistic_regression(x_train: np.ndarray, y_train: np.ndarray, num_classes: int, c: float = 1.0,
                        max_steps: int = 20000, tolerance: float = 1e-2):
    """Multinomial logistic regression with scikit-learn's objective: C * sum(cross-entropy) + |W|^2 / 2.

    Returns ``predict(x) -> logits`` and the final gradient norm.
    """
    import keras
    import tensorflow as tf

    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std[std == 0] = 1.0
    z = tf.constant((x_train - mean) / std, tf.float32)
    labels = tf.constant(y_train)
    weights = tf.Variable(tf.zeros([z.shape[1], num_classes]))
    bias = tf.Variable(tf.zeros([num_classes]))
    optimizer = keras.optimizers.Adam(0.01)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            logits = tf.matmul(z, weights) + bias
            loss = c * tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)) \
                + 0.5 * tf.reduce_sum(tf.square(weights))
        gradients = tape.gradient(loss, [weights, bias])
        optimizer.apply_gradients(zip(gradients, [weights, bias]))
        return tf.linalg.global_norm(gradients)

    norm = float("inf")
    for i in range(max_steps):
        norm = float(step())
        if i > 500 and norm < tolerance:
            break
    w, b = weights.numpy(), bias.numpy()
    return (lambda x: ((x - mean) / std) @ w + b), norm


def baseline(frames_dir: Path, truth: dict[str, tuple[str, str]], test_fold: str) -> dict:
    uris, pooled = pooled_embeddings(frames_dir)
    classes = sorted({label for label, _ in truth.values()})
    y = np.array([classes.index(truth[Path(u).name][0]) for u in uris])
    folds = np.array([truth[Path(u).name][1] for u in uris])
    train_rows, test_rows = folds != test_fold, folds == test_fold
    predict, norm = logistic_regression(pooled[train_rows], y[train_rows], len(classes))
    accuracy = float((predict(pooled[test_rows]).argmax(axis=1) == y[test_rows]).mean())
    return {"clip_accuracy": accuracy, "test_clips": int(test_rows.sum()),
            "train_clips": int(train_rows.sum()), "gradient_norm": norm}


def _spread(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "min": min(values), "max": max(values)}


def read_truth(labels: Path) -> dict[str, tuple[str, str]]:
    import csv

    with open(labels) as f:
        return {Path(row["path"]).name: (row["label"], row["fold"]) for row in csv.DictReader(f)}


def esc10_setup(args) -> tuple[Path, Path, Path, list[int]] | None:
    """(ESC-10 folder, yamnet-approx model, work dir, seeds) from the common flags; None without data."""
    shared, work = Path(args.shared), Path(args.work)
    esc10, model = shared / "data" / "esc10", shared / "models" / "yamnet-approx"
    if not (esc10 / "labels.csv").exists() or not model.exists():
        print(f"needs {esc10} and {model}", file=sys.stderr)
        return None
    work.mkdir(parents=True, exist_ok=True)
    return esc10, model, work, [int(s) for s in getattr(args, "seeds", "").split(",") if s.strip()]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup = esc10_setup(args)
    if setup is None:
        return 2
    esc10, model, work, seeds = setup
    truth = read_truth(esc10 / "labels.csv")
    timings: dict[str, float] = {}
    frames = work / "tagged"
    _timed("tag 240 ESC-10 clips (yamnet-approx)", timings, tag, esc10 / "audio", model, frames)

    results = {"protocol": "train folds 1-2 (10% of their clips by URI hash for early stopping), test fold 3",
               "seeds": seeds, "rotations": {}, "timings_s": timings}
    for test_fold in (("3", "1", "2") if args.rotations else ("3",)):
        ds_dir = work / f"ds_test{test_fold}"
        _timed(f"build_training_set (test fold {test_fold})", timings, build, frames, esc10 / "labels.csv",
               ds_dir, test_fold)
        heads = []
        for i, seed in enumerate(seeds):
            export = i == 0 and test_fold == "3"
            metrics = _timed(f"train_head (test fold {test_fold}, seed {seed}{', export' if export else ''})",
                             timings, train, ds_dir, work / f"head_test{test_fold}_seed{seed}", seed, export)
            heads.append({"seed": seed, **metrics["splits"], "epochs_run": metrics["epochs_run"],
                          "training_seconds": metrics["training_seconds"]})
        clip = [h["test"]["clip_accuracy"] for h in heads]
        frame = [h["test"]["frame_accuracy"] for h in heads]
        row = {"heads": heads, "head_test_clip_accuracy": _spread(clip),
               "head_test_frame_accuracy": _spread(frame),
               "baseline": _timed(f"logistic regression baseline (test fold {test_fold})", timings, baseline,
                                  frames, truth, test_fold)}
        results["rotations"][test_fold] = row

    main_head = work / f"head_test3_seed{seeds[0]}"
    test_clips = sorted(str(esc10 / "audio" / name) for name, (_, fold) in truth.items() if fold == "3")
    _timed("tag_audio --model head on fold 3 (80 clips)", timings, tag_with_export, test_clips,
           main_head / "export", work / "tagged_with_head")
    accuracy, clips = clip_accuracy_from_frames(work / "tagged_with_head" / "tagged",
                                                {name: label for name, (label, _) in truth.items()})
    results["end_to_end"] = {"clip_accuracy": accuracy, "clips": clips,
                             "export": json.loads((main_head / "metrics.json").read_text())["export"]}
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if args.docs:
        shutil.copy(main_head / "confusion_matrix.png", Path(args.docs) / "esc10_head_confusion.png")

    print("\n| test fold | head clip acc. (mean, min-max over seeds) | head frame acc. | "
          "logistic regression (mean+max pooled) |")
    print("|---|---|---|---|")
    for fold, row in results["rotations"].items():
        c, f = row["head_test_clip_accuracy"], row["head_test_frame_accuracy"]
        print(f"| {fold} | {c['mean']:.1%} ({c['min']:.1%}-{c['max']:.1%}) | {f['mean']:.1%} | "
              f"{row['baseline']['clip_accuracy']:.1%} |")
    print(f"\nend to end (tag_audio --model head on fold 3): clip accuracy {accuracy:.1%} over {clips} clips")
    print(f"results: {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
