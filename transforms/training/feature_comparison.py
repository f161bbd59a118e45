"""Comparing feature sets: the same head on the log-mel baseline and on the YAMNet encoder, one report.

OUT_DIR must be a tag_audio output tagged with ``--features logmel``, so one
run holds both the 1024-d ``embedding`` and the 128-d ``logmel_stats`` of
every frame.  For each feature set (the first is the baseline) the job runs
``build_training_set`` into ``REPORT_DIR/<features>/training_set`` and
``train_head`` (same split, same head, same seed; no export) into
``REPORT_DIR/<features>/head``, then writes ``REPORT_DIR/comparison.json``
and ``REPORT_DIR/comparison.md``:

- clip and frame accuracy per split for each feature set;
- the confusion pairs that remain: the largest off-diagonal cells of each
  head's clip confusion matrix on the test split (eval when there is no test);
- cost in seconds per audio hour: the encoder's is the tag_audio run that made
  the frames (``wall_s / counts.audio_seconds * 3600`` from its run record:
  decoding, log-mel, YAMNet and Parquet, end to end); the baseline's is the
  log-mel frontend alone (patches and their statistics), timed in this process
  over as many windows as the run has frames.  YAMNet itself is also timed on
  the same windows (model only) so the two compute figures can be set side by
  side without decoding and I/O;
- one sentence per candidate on whether the encoder is worth its cost.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

import storage
from schemas import training as ts
from transforms.training import head_trainer
from transforms.training.build import TrainingSetError, TrainingSetRequest, build_training_set
from transforms.training.head_trainer import HeadConfig
from transforms.training.report import format_report

COMPARISON_JSON = "comparison.json"
COMPARISON_MD = "comparison.md"
TRAINING_SET_DIR = "training_set"
HEAD_DIR = "head"
DEFAULT_FEATURE_SETS = ("logmel", "embedding")  # baseline first


TIMING_BATCH = 256  # windows per frontend / model call while timing
TIMING_ROUNDS = 3  # the median of a few rounds: the machine's other work moves single runs a lot
SECONDS_PER_HOUR = 3600.0
# The head's settings that are the same for every feature set (defaults: train_head's).
HEAD_OPTIONS = ("hidden_units", "dropout", "learning_rate", "batch_size", "epochs", "patience", "seed")


class ComparisonError(RuntimeError):
    """A step of the comparison failed; ``str(e)`` says which and why."""


@dataclasses.dataclass(frozen=True)
class ComparisonConfig:
    output_dir: str
    feature_sets: tuple[str, ...]  # the first is the baseline
    build: TrainingSetRequest  # frames, labels, split, pooling and runs: the same for every feature set
    pipeline_options: PipelineOptions  # Beam's, for build_training_set
    head: HeadConfig  # dataset_dir / output_dir are filled in per feature set
    top_pairs: int = 5
    min_gain_points: float = 2.0
    max_timing_windows: int = 20_000
    time_model: bool = True
    overwrite: bool = False

    @property
    def frames_dir(self) -> str:
        return self.build.frames.rstrip("/")

    @property
    def labels(self) -> str:
        return self.build.labels

    def feature_dir(self, features: str) -> str:
        return ts.ds_path(self.output_dir, features)


# --- accuracies and confusions -------------------------------------------------------------------

def evaluated_split(metrics: dict) -> str | None:
    """The split the head's confusion matrix is of (train_head: test when it has clips, else eval)."""
    return metrics.get("confusion_matrix", {}).get("split")


def confusion_pairs(metrics: dict, top: int) -> list[dict]:
    """The ``top`` largest off-diagonal cells of a train_head clip confusion matrix, largest first."""
    confusion = metrics.get("confusion_matrix")
    if confusion is None:
        return []
    labels = metrics["labels"]
    matrix = np.asarray(confusion["matrix"], dtype=np.int64)
    pairs = [{"true": labels[t], "predicted": labels[p], "clips": int(matrix[t, p]),
              "of_true_clips": int(matrix[t].sum())}
             for t in range(len(labels)) for p in range(len(labels)) if t != p and matrix[t, p] > 0]
    pairs.sort(key=lambda pair: (-pair["clips"], pair["true"], pair["predicted"]))
    return pairs[:top]


def split_accuracies(metrics: dict) -> dict:
    """Per split: clip and frame accuracy with their counts (None for a split without rows)."""
    empty = {"clips": 0, "rows": 0, "clip_accuracy": None, "frame_accuracy": None}
    return {split: {key: metrics["splits"].get(split, empty)[key] for key in empty} for split in ts.SPLITS}


# --- cost -----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class RunCost:
    """What the tag_audio run(s) behind a training set spent, from their run records."""

    run_ids: tuple[str, ...]
    wall_s: float
    audio_seconds: float
    frames: int

    @property
    def seconds_per_audio_hour(self) -> float:
        return per_audio_hour(self.wall_s, self.audio_seconds)


@dataclasses.dataclass(frozen=True)
class ComputeTiming:
    """In-process seconds for ``windows`` windows (``timed`` of them run, the rest scaled linearly;
    the median of TIMING_ROUNDS rounds)."""

    what: str
    seconds: float
    windows: int
    timed: int
    batch: int


def per_audio_hour(seconds: float, audio_seconds: float) -> float:
    return seconds / audio_seconds * SECONDS_PER_HOUR if audio_seconds > 0 else float("nan")


def run_cost(frames_dir: str, run_ids: Sequence[str]) -> RunCost:
    """Sums ``wall_s``, ``counts.audio_seconds`` and ``counts.frames`` over the named runs' records."""
    from transforms.output.reader import find_output

    output = find_output(frames_dir)
    wall = audio = 0.0
    frames = 0
    for run_id in run_ids:
        record = output.run(run_id).record
        if not record or record.wall_s is None or record.counts is None:
            raise ComparisonError(f"run {run_id} of {frames_dir} has no finished run record "
                                  f"(runs/{run_id}.json with wall_s and counts): its cost is unknown")
        wall += float(record.wall_s)
        audio += float(record.counts.get("audio_seconds", 0.0))
        frames += int(record.counts.get("frames", 0))
    if audio <= 0 or frames <= 0:
        raise ComparisonError(f"the run records of {frames_dir} count no audio: the cost per hour is unknown")
    return RunCost(tuple(run_ids), wall, audio, frames)


def _timing_windows(windows: int, max_windows: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """One batch of noise windows (the frontend's cost does not depend on the signal) and how many to run."""
    from audio_models.logmel import WINDOW_SAMPLES

    timed = max(1, min(windows, max_windows))
    batch = np.random.default_rng(seed).uniform(-0.5, 0.5, (min(TIMING_BATCH, timed), WINDOW_SAMPLES))
    return batch.astype(np.float32), timed


def _time_batches(step, batch: np.ndarray, timed: int) -> float:
    """Median seconds over TIMING_ROUNDS of running ``step`` on ``timed`` windows, ``batch`` at a time."""
    step(batch)  # traces the tf.function; not counted
    rounds = []
    for _ in range(TIMING_ROUNDS):
        started = time.perf_counter()
        remaining = timed
        while remaining > 0:
            n = min(remaining, len(batch))
            step(batch[:n])
            remaining -= n
        rounds.append(time.perf_counter() - started)
    return float(np.median(rounds))


def time_logmel(windows: int, max_windows: int) -> ComputeTiming:
    """The baseline's feature cost: YAMNet's log-mel patches and their per-band statistics, nothing else."""
    import tensorflow as tf

    from audio_models import logmel
    from audio_models.logmel_features import logmel_statistics

    mel = logmel.mel_weight_matrix()
    patches = tf.function(lambda w: logmel.log_mel_patches(w, mel),
                          input_signature=[tf.TensorSpec([None, logmel.WINDOW_SAMPLES], tf.float32)])
    batch, timed = _timing_windows(windows, max_windows)
    seconds = _time_batches(lambda b: logmel_statistics(patches(tf.constant(b)).numpy()), batch, timed)
    return ComputeTiming("log-mel patches + per-band statistics", seconds * windows / timed, windows, timed,
                         len(batch))


def time_model(base_model: dict, windows: int, max_windows: int) -> ComputeTiming:
    """The encoder's compute alone: the frames' model (log-mel frontend included) on the same windows."""
    from audio_models.loading import load_model, resolve_source
    from audio_models.logmel_features import logmel_statistics

    if not base_model.get("source"):
        raise ComparisonError("the training set does not record where the frames' model is")
    model = load_model(resolve_source(base_model["kind"], base_model["source"]))
    batch, timed = _timing_windows(windows, max_windows)

    def step(b: np.ndarray) -> None:
        outputs = model.predict(b, with_logmel=True)  # as tag_audio --features logmel runs it
        logmel_statistics(outputs["logmel"])

    seconds = _time_batches(step, batch, timed)
    return ComputeTiming(f"{model.spec.identity} (model with its log-mel frontend, + statistics)",
                         seconds * windows / timed, windows, timed, len(batch))


def uses_encoder(features: str) -> bool:
    return ts.EMBEDDING in ts.feature_columns(features)


def cost_document(run: RunCost, frontend: ComputeTiming, model: ComputeTiming | None,
                  model_error: str | None) -> dict:
    def timing(t: ComputeTiming) -> dict:
        return {"what": t.what, "seconds": round(t.seconds, 3), "windows": t.windows,
                "timed_windows": t.timed, "batch": t.batch, "rounds": TIMING_ROUNDS,
                "seconds_per_audio_hour": per_audio_hour(t.seconds, run.audio_seconds)}

    document = {
        "audio_seconds": run.audio_seconds,
        "frames": run.frames,
        "encoder_run": {"what": "tag_audio run(s) that made the frames, end to end (decode, log-mel, model, "
                                "Parquet): wall_s / counts.audio_seconds * 3600 from the run records",
                        "runs": list(run.run_ids), "wall_s": round(run.wall_s, 3),
                        "seconds_per_audio_hour": run.seconds_per_audio_hour},
        "logmel_only": timing(frontend),
        "encoder_model_only": timing(model) if model is not None else {"not_measured": model_error},
    }
    return document


def feature_set_cost(cost: dict, features: str) -> float:
    """Seconds per audio hour to compute a feature set: the tag_audio run with the encoder, else log-mel."""
    key = "encoder_run" if uses_encoder(features) else "logmel_only"
    return cost[key]["seconds_per_audio_hour"]


# --- the verdict ----------------------------------------------------------------------------------

def verdict(baseline: str, candidate: str, results: dict, cost: dict, split: str,
            min_gain_points: float) -> dict:
    """Accuracy gain (points of clip accuracy on ``split``), cost ratio and one sentence."""
    base, cand = results[baseline]["splits"][split], results[candidate]["splits"][split]
    if base["clip_accuracy"] is None or cand["clip_accuracy"] is None:
        return {"baseline": baseline, "candidate": candidate, "split": split, "worth_it": None,
                "sentence": f"The {split} split has no clips: nothing to compare."}
    gain = 100.0 * (cand["clip_accuracy"] - base["clip_accuracy"])
    one_clip = 100.0 / cand["clips"]
    margin = max(min_gain_points, one_clip)  # less than a clip (or than the margin asked) is noise
    base_cost, cand_cost = feature_set_cost(cost, baseline), feature_set_cost(cost, candidate)
    ratio = cand_cost / base_cost if base_cost > 0 else float("inf")
    worth = gain > margin
    direction = "more" if gain >= 0 else "less"
    frame = ""
    if base["frame_accuracy"] is not None and cand["frame_accuracy"] is not None:
        frame = f"; frame accuracy {cand['frame_accuracy']:.1%} vs {base['frame_accuracy']:.1%}"
    model = cost["encoder_model_only"]
    model_note = ""
    if uses_encoder(candidate) and not uses_encoder(baseline) and "seconds_per_audio_hour" in model:
        model_ratio = model["seconds_per_audio_hour"] / cost["logmel_only"]["seconds_per_audio_hour"]
        model_note = f"; {model_ratio:.0f}× for the model alone against the log-mel frontend alone"
    conclusion = ("so the encoder is worth its cost" if worth else
                  f"so the encoder is not worth its cost here (a gain must exceed {margin:.1f} points)")
    sentence = (f"On the {split} split the {candidate} head is {abs(gain):.1f} points {direction} accurate "
                f"than the {baseline} baseline (clip accuracy {cand['clip_accuracy']:.1%} vs "
                f"{base['clip_accuracy']:.1%} over {cand['clips']} clips{frame}) at {ratio:.0f}× the compute "
                f"per audio hour ({cand_cost:.1f} s vs {base_cost:.2f} s{model_note}), {conclusion}.")
    return {"baseline": baseline, "candidate": candidate, "split": split,
            "clip_accuracy_gain_points": round(gain, 2), "margin_points": round(margin, 2),
            "cost_ratio": ratio, "worth_it": worth, "sentence": sentence}


# --- running the chain ----------------------------------------------------------------------------

def build_and_train(config: ComparisonConfig, features: str) -> dict:
    """build_training_set + train_head for one feature set; returns train_head's metrics."""
    ds_dir = ts.ds_path(config.feature_dir(features), TRAINING_SET_DIR)
    head_dir = ts.ds_path(config.feature_dir(features), HEAD_DIR)
    request = dataclasses.replace(config.build, output=ds_dir, features=features, overwrite=config.overwrite)
    try:
        built = build_training_set(request, config.pipeline_options)
    except TrainingSetError as e:
        raise ComparisonError(f"build_training_set --features {features} failed: {e}") from None
    print(format_report(built.report))
    if built.document is None:
        raise ComparisonError(f"build_training_set --features {features} failed: the training split is empty")
    head = dataclasses.replace(config.head, dataset_dir=ds_dir, output_dir=head_dir, export=False)
    try:
        metrics = head_trainer.train(head)
    except (FileNotFoundError, ValueError) as e:
        raise ComparisonError(f"train_head on the {features} training set: {e}") from None
    print(head_trainer.format_metrics(metrics))
    return {"metrics": metrics, "training_set": ds_dir, "head": head_dir}


def compare(config: ComparisonConfig) -> dict:
    """Runs every feature set, measures the costs and returns the comparison document."""
    started = time.monotonic()
    results = {}
    for features in config.feature_sets:
        trained = build_and_train(config, features)
        metrics = trained["metrics"]
        results[features] = {
            "role": "baseline" if features == config.feature_sets[0] else "candidate",
            "columns": list(ts.feature_columns(features)),
            "input_dim": metrics["model"]["input_dim"],
            "parameters": metrics["model"]["parameters"],
            "splits": split_accuracies(metrics),
            "evaluated_split": evaluated_split(metrics),
            "confusion_pairs": confusion_pairs(metrics, config.top_pairs),
            "epochs_run": metrics["epochs_run"],
            "training_seconds": metrics["training_seconds"],
            "training_set": trained["training_set"],
            "head": trained["head"],
        }
    document = head_trainer.read_dataset_document(results[config.feature_sets[-1]]["training_set"])
    run = run_cost(config.frames_dir, document["runs"])
    frontend = time_logmel(run.frames, config.max_timing_windows)
    model, model_error = None, "skipped (--no_model_timing)"
    if config.time_model:
        try:
            model = time_model(document.get("base_model", {}), run.frames, config.max_timing_windows)
        except Exception as e:  # the comparison stands without it; say why it is missing
            model_error = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
    cost = cost_document(run, frontend, model, model_error)
    for features, result in results.items():
        result["seconds_per_audio_hour"] = feature_set_cost(cost, features)
    baseline = config.feature_sets[0]
    split = results[baseline]["evaluated_split"] or ts.TEST
    verdicts = [verdict(baseline, candidate, results, cost, split, config.min_gain_points)
                for candidate in config.feature_sets[1:]]
    return {
        "frames_dir": config.frames_dir,
        "labels_file": config.labels,
        "split_rule": document["split_rule"]["description"],
        "pooling": document["layout"]["pooling"],
        "base_model": document.get("base_model", {}),
        "head": {name: getattr(config.head, name) for name in HEAD_OPTIONS},
        "baseline": baseline,
        "evaluated_split": split,
        "feature_sets": results,
        "cost": cost,
        "verdicts": verdicts,
        "sentence": verdicts[0]["sentence"],
        "total_seconds": round(time.monotonic() - started, 1),
    }


# --- the report -----------------------------------------------------------------------------------

def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def format_markdown(doc: dict) -> str:
    """comparison.md: the same content as comparison.json, for people."""
    names = list(doc["feature_sets"])
    head = doc["head"]
    lines = [
        f"# Feature comparison: {doc['baseline']} (baseline) vs {', '.join(names[1:])}",
        "",
        f"- frames: `{doc['frames_dir']}` ({doc['base_model'].get('identity')}), "
        f"runs {', '.join(doc['cost']['encoder_run']['runs'])}",
        f"- labels: `{doc['labels_file']}`; split {doc['split_rule']}; pooling {doc['pooling']}",
        f"- head (the same for each): {head['hidden_units']} hidden units, dropout {head['dropout']}, "
        f"learning rate {head['learning_rate']}, batch {head['batch_size']}, at most {head['epochs']} epochs "
        f"(patience {head['patience']}), seed {head['seed']}",
        "",
        "## Accuracy per split",
        "",
        "Clip accuracy: the argmax of the mean of a clip's frame probabilities.",
        "",
        "| features | input dim | split | clips | clip accuracy | frames | frame accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in doc["feature_sets"].items():
        for split, row in result["splits"].items():
            lines.append(f"| {name} | {result['input_dim']} | {split} | {row['clips']} | "
                         f"{_percent(row['clip_accuracy'])} | {row['rows']} | "
                         f"{_percent(row['frame_accuracy'])} |")
    lines += ["", f"## Confusion pairs that remain ({doc['evaluated_split']} clips)", "",
              "| features | true label | predicted as | clips | of the label's clips |",
              "|---|---|---|---|---|"]
    for name, result in doc["feature_sets"].items():
        if not result["confusion_pairs"]:
            lines.append(f"| {name} | (none) | | 0 | |")
        for pair in result["confusion_pairs"]:
            lines.append(f"| {name} | {pair['true']} | {pair['predicted']} | {pair['clips']} | "
                         f"{pair['of_true_clips']} |")
    cost = doc["cost"]
    run, frontend, model = cost["encoder_run"], cost["logmel_only"], cost["encoder_model_only"]
    lines += [
        "", "## Cost", "",
        f"{cost['audio_seconds']:.1f} s of audio ({cost['audio_seconds'] / 3600:.3f} h), {cost['frames']} "
        "frames (windows).", "",
        "| what | used for | seconds | seconds per audio hour |", "|---|---|---|---|",
        f"| tag_audio run, end to end (decode, log-mel, model, Parquet; run record `wall_s`) | encoder "
        f"features | {run['wall_s']:.1f} | {run['seconds_per_audio_hour']:.1f} |",
        f"| {frontend['what']}, in-process, {frontend['windows']} windows | log-mel baseline | "
        f"{frontend['seconds']:.2f} | {frontend['seconds_per_audio_hour']:.2f} |",
    ]
    if "seconds" in model:
        lines.append(f"| {model['what']}, in-process, {model['windows']} windows | (encoder compute alone, "
                     f"for reference) | {model['seconds']:.2f} | {model['seconds_per_audio_hour']:.2f} |")
    else:
        lines.append(f"| encoder model alone | not measured: {model['not_measured']} | | |")
    lines += ["", f"In-process rows: noise windows, {frontend['batch']} per call, the median of "
              f"{TIMING_ROUNDS} rounds. The baseline's figure leaves out decoding and writing, which any "
              "pipeline computing log-mel features also pays; the model-only row compares the two "
              "computations on equal terms.", ""]
    lines += ["## Verdict", ""] + [v["sentence"] for v in doc["verdicts"]]
    return "\n".join(lines) + "\n"


def write_report(output_dir: str, doc: dict) -> None:
    """comparison.json (keys in report order: the baseline first) and comparison.md."""
    import json

    for name, text, mime in ((COMPARISON_JSON, json.dumps(doc, indent=2) + "\n", "application/json"),
                             (COMPARISON_MD, format_markdown(doc), "text/markdown")):
        storage.write_text(ts.ds_path(output_dir, name), text, mime_type=mime)



