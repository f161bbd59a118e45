"""Building a training set: tagged frames + a labels file -> tf.Transform'ed TFRecord splits for a head.

Frames of tag_audio's OUT_DIR are joined with LABELS.csv (path or URI, label,
optional fold; matched by URI or path suffix; optionally a time span per row,
``uri,start_s,end_s,label``), split into train/eval/test per
URI (by fold, or by a hash of the URI; with few files labelled by time spans,
eval comes from time blocks within the training files: ``SplitRule.eval_regions``),
optionally pooled per clip, and run
through a tf.Transform ``preprocessing_fn`` analysed on the training split
(z-scored features, label vocabulary).  DS_DIR receives the TFRecord shards,
the transform output, ``dataset.json``, ``report.json`` (class counts per
split; tagged files without a label and label rows without frames, listed)
and, for time-span labels, ``spans.csv`` (each split's labelled spans).
See ``schemas/training.py`` for the layout.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import apache_beam as beam
from apache_beam.io.parquetio import ReadAllFromParquetBatched
from apache_beam.options.pipeline_options import PipelineOptions

import storage
from schemas import training as ts
from schemas.tables import PACKAGE_VERSION
from transforms.output.frame_source import FramesNotUsableError, FrameSource, check_columns, find_frames
from transforms.output.read_pins import reading
from transforms.training import labelled_rows as tset
from transforms.training import report as tr
from transforms.training.labelled_rows import LabelsFileError, LabelTable, SplitRule

RAW_SAMPLE_SIZE = 64  # raw held-out rows kept for checking an export against training
SPAN_COLUMNS = ("start_s", "end_s")  # frames columns that time-span labels are matched against
NEGATIVE_LABEL = "_negative_"  # --negatives_from_labelled_files without a label


def layout_for(source: FrameSource, features: str, pooling: str) -> ts.FeatureLayout:
    columns = ts.feature_columns(features)
    check_columns(source, columns)
    return ts.FeatureLayout(columns, tuple(source.column_dim(c) for c in columns), pooling)


def _raw_metadata(layout: ts.FeatureLayout):
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    return dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(layout.raw_feature_spec()))


@beam.ptransform_fn
def BuildTrainingSet(pbegin, source: FrameSource, labels: LabelTable, rule: SplitRule,  # noqa: N802
                     layout: ts.FeatureLayout, ds_dir: str, negative_label: str | None = None):
    """The whole job: read frames -> label and split -> (pool) -> tf.Transform -> TFRecords + report."""
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam

    frame_tables = (pbegin
                    | "ListFrameFiles" >> beam.Create(source.frame_files)
                    | "ReadFrames" >> ReadAllFromParquetBatched(
                        columns=[ts.URI, ts.FRAME_INDEX, *SPAN_COLUMNS, *layout.columns], with_filename=True)
                    | "CurrentRows" >> beam.Map(lambda ft: (ft[0], source.keep(ft[0], ft[1]))))
    latest_run = None
    if len(source.runs) > 1:  # runs named with --runs may share a URI: its latest run's frames only
        order = {run.run_id: i for i, run in enumerate(source.runs)}  # commit order
        latest_run = beam.pvalue.AsDict(
            frame_tables
            | "UriRuns" >> beam.FlatMap(lambda ft: {(u, tset.run_of(ft[0])) for u in ft[1].column(ts.URI)
                                                    .to_pylist()})
            | "LatestRun" >> beam.CombinePerKey(lambda runs: max(runs, key=order.__getitem__)))
    labelled = frame_tables | "AttachLabels" >> beam.ParDo(
        tset.AttachLabels(labels, rule, layout, negative_label), latest_run=latest_run).with_outputs(
        tset.UNLABELLED, tset.EXCLUDED, tset.CLIPS, tset.SPANS, main="rows")
    rows = labelled.rows
    if layout.pooled:
        rows = rows | "PoolClips" >> tset.PoolClips(layout)
    parts = rows | "BySplit" >> beam.Partition(lambda kv, _: ts.SPLITS.index(kv[0]), len(ts.SPLITS))
    instances = {split: parts[i] | f"{split.capitalize()}Rows" >> beam.Values()
                 for i, split in enumerate(ts.SPLITS)}

    raw_metadata = _raw_metadata(layout)
    with tft_beam.Context(temp_dir=ts.ds_path(ds_dir, ts.TRANSFORM_TEMP_DIR), force_tf_compat_v1=False):
        (train, transformed_metadata), transform_fn = (
            (instances[ts.TRAIN], raw_metadata)
            | "AnalyzeAndTransformTrain" >> tft_beam.AnalyzeAndTransformDataset(
                tset.preprocessing_fn_for(layout)))
        transformed = {ts.TRAIN: train}
        for split in (ts.EVAL, ts.TEST):
            transformed[split], _ = (((instances[split], raw_metadata), transform_fn)
                                     | f"Transform{split.capitalize()}" >> tft_beam.TransformDataset())
        coder = tft.coders.ExampleProtoCoder(transformed_metadata.schema)
        for split, data in transformed.items():
            _ = (data
                 | f"Encode{split.capitalize()}" >> beam.Map(coder.encode)
                 | f"Write{split.capitalize()}" >> beam.io.WriteToTFRecord(
                     f"{ts.split_dir(ds_dir, split)}/{ts.SHARD_PREFIX}", file_name_suffix=ts.SHARD_SUFFIX))
        _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(
            ts.ds_path(ds_dir, ts.TRANSFORM_DIR))

    raw_coder = tft.coders.ExampleProtoCoder(raw_metadata.schema)
    _ = ([instances[s] for s in ts.SPLITS]
         | "AllRows" >> beam.Flatten()
         | "SampleRaw" >> beam.combiners.Sample.FixedSizeGlobally(RAW_SAMPLE_SIZE)
         | "SampledRows" >> beam.FlatMap(lambda rows: rows)
         | "EncodeRaw" >> beam.Map(raw_coder.encode)
         | "WriteRawSample" >> beam.io.WriteToTFRecord(
             f"{ts.ds_path(ds_dir, ts.RAW_SAMPLE_DIR)}/{ts.SHARD_PREFIX}", file_name_suffix=ts.SHARD_SUFFIX,
             num_shards=1))

    counted = (labelled[tset.CLIPS]
               | "GroupClipPieces" >> beam.GroupByKey()
               | "MergeClipPieces" >> beam.MapTuple(lambda uri, pieces: (uri, tr.merge_clip_pieces(pieces)))
               | "CountClips" >> beam.CombineGlobally(tr.CountClips()))
    unlabelled = labelled[tset.UNLABELLED] | "DistinctUnlabelled" >> beam.Distinct() \
        | "ListUnlabelled" >> beam.combiners.ToList()
    excluded = labelled[tset.EXCLUDED] | "DistinctExcluded" >> beam.Distinct() \
        | "ListExcluded" >> beam.combiners.ToList()
    spans = labelled[tset.SPANS] | "DistinctSpans" >> beam.Distinct() | "ListSpans" >> beam.combiners.ToList()
    failed_files = (pbegin
                    | "ListFilesFiles" >> beam.Create(source.file_files)
                    | "ReadFiles" >> ReadAllFromParquetBatched(
                        columns=[ts.URI, "status", "error", "num_frames"], with_filename=True)
                    | "LabelledWithoutFrames" >> beam.FlatMap(tr.files_without_frames, labels)
                    | "ListFailed" >> beam.combiners.ToList())
    context = tr.ReportContext(labels, source.out_dir, source.run_ids, rule.describe(), layout.to_document(),
                               rule.eval_from)
    return (pbegin
            | "ReportTrigger" >> beam.Create([None])
            | "WriteReport" >> beam.ParDo(tr.WriteReport(ds_dir, context),
                                          counted=beam.pvalue.AsSingleton(counted),
                                          unlabelled=beam.pvalue.AsSingleton(unlabelled),
                                          excluded=beam.pvalue.AsSingleton(excluded),
                                          failed_files=beam.pvalue.AsSingleton(failed_files),
                                          spans=beam.pvalue.AsSingleton(spans)))


def dataset_document(source: FrameSource, labels: LabelTable, rule: SplitRule, layout: ts.FeatureLayout,
                     label_names: list[str], report: dict, started: float,
                     negative_label: str | None = None) -> dict:
    """dataset.json: everything train_head and the export need to know about DS_DIR."""
    return {
        "version": PACKAGE_VERSION,
        "created_at": time.time(),
        "build_seconds": round(time.time() - started, 1),
        "layout": layout.to_document(),
        "labels": label_names,  # the transform's label vocabulary: index = label_id
        "base_model": source.base_model(),
        "frames_dir": source.out_dir,
        "runs": list(source.run_ids),
        "labels_file": labels.source,
        "labelled_by": "spans" if labels.has_spans else "files",  # what a label names: time spans or files
        "negative_label": negative_label,
        "split_rule": {**dataclasses.asdict(rule), "description": rule.describe()},
        "splits": {split: {key: report["splits"][split][key] for key in ("clips", "frames", "spans")}
                   for split in ts.SPLITS},
    }


def _check_spans(labels: LabelTable, layout: ts.FeatureLayout, negative_label: str | None) -> None:
    if labels.has_spans and layout.pooled:
        raise ValueError(f"{labels.source} labels time spans, which label frames: use --pooling none")
    if negative_label is not None and not labels.has_spans:
        raise ValueError(f"--negatives_from_labelled_files needs rows with time spans (uri,start_s,end_s,"
                         f"label); {labels.source} labels whole files only")
    if negative_label is not None and negative_label in labels.labels:
        raise ValueError(f"the negative label {negative_label!r} is also a label in {labels.source}: "
                         "choose another with --negatives_from_labelled_files LABEL")


def _prepare_output(ds_dir: str, overwrite: bool) -> None:
    """Refuses to mix with an earlier training set (old shards would join the new), or removes it."""
    parts = [ts.ds_path(ds_dir, ts.DATASET_FILE), ts.ds_path(ds_dir, ts.TRANSFORM_DIR),
             *(ts.split_dir(ds_dir, split) for split in ts.SPLITS)]
    existing = [path for path in parts if storage.exists(path) or storage.is_dir(path)]
    if existing and not overwrite:
        raise FileExistsError(f"{ds_dir} already holds a training set ({existing[0]}): choose a new "
                              "--output or pass --overwrite")
    names = [ts.DATASET_FILE, ts.REPORT_FILE, ts.TRANSFORM_DIR, ts.RAW_SAMPLE_DIR, ts.TRANSFORM_TEMP_DIR,
             tr.UNLABELLED_FILES, tr.UNMATCHED_LABELS, tr.EXCLUDED_FILES, ts.SPANS_FILE, *ts.SPLITS]
    for name in names:
        storage.delete_tree(ts.ds_path(ds_dir, name))


class TrainingSetError(ValueError):
    """The training set cannot be built as asked; ``str(e)`` is one line for the user."""


@dataclasses.dataclass(frozen=True)
class TrainingSetRequest:
    frames: str  # a tag_audio OUT_DIR
    labels: str  # labels CSV
    output: str  # DS_DIR
    features: str = "embedding"
    pooling: str = ts.POOLING_NONE
    split: SplitRule = SplitRule()
    runs: tuple[str, ...] = ()  # run ids of OUT_DIR to use (default: every succeeded run)
    overwrite: bool = False
    negative_label: str | None = None  # the other frames of files labelled by spans take this label


@dataclasses.dataclass(frozen=True)
class TrainingSet:
    report: dict  # report.json: class counts per split, what did not match
    document: dict | None  # dataset.json; None when the training split is empty (nothing to learn)


def build_training_set(request: TrainingSetRequest, options: PipelineOptions) -> TrainingSet:
    """Checks the request (raises TrainingSetError before anything runs), runs the pipeline and writes
    ``dataset.json``."""
    started = time.time()
    ds_dir = request.output.rstrip("/")
    try:
        labels = tset.read_labels(request.labels)
        request.split.check_folds(labels)
        rule = request.split.resolved(labels)  # eval from files or from time blocks
        source = find_frames(request.frames, request.runs)
        layout = layout_for(source, request.features, request.pooling)
        _check_spans(labels, layout, request.negative_label)
        _prepare_output(ds_dir, request.overwrite)
    except (LabelsFileError, FramesNotUsableError, FileExistsError, ValueError) as e:
        raise TrainingSetError(str(e)) from None

    pipeline = beam.Pipeline(options=options)
    _ = pipeline | "BuildTrainingSet" >> BuildTrainingSet(source, labels, rule, layout, ds_dir,
                                                          request.negative_label)
    with reading(source.out_dir, source.run_ids, "build_training_set"):
        pipeline.run().wait_until_finish()

    report = storage.read_json(ts.ds_path(ds_dir, ts.REPORT_FILE))
    if report["splits"][ts.TRAIN]["frames"] == 0:
        return TrainingSet(report, None)
    import tensorflow_transform as tft

    label_names = [v.decode() if isinstance(v, bytes) else v for v in
                   tft.TFTransformOutput(ts.ds_path(ds_dir, ts.TRANSFORM_DIR)).vocabulary_by_name(
                       ts.LABEL_VOCABULARY)]
    document = dataset_document(source, labels, rule, layout, label_names, report, started,
                                request.negative_label)
    storage.write_json(ts.ds_path(ds_dir, ts.DATASET_FILE), document)
    try:
        storage.delete_tree(ts.ds_path(ds_dir, ts.TRANSFORM_TEMP_DIR))
    except Exception as e:  # noqa: BLE001 - the temp dir is harmless; say so and go on
        logging.warning("could not delete %s: %s", ts.ds_path(ds_dir, ts.TRANSFORM_TEMP_DIR), e)
    return TrainingSet(report, document)
