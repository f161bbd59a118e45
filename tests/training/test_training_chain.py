"""Tags to a head and back: tag -> build_training_set -> train_head -> export -> tag with the export.

A small labelled set made here (three sounds: low sine, high sine, noise) is
tagged with the random-weight YAMNet fixture, so accuracies mean nothing;
what is checked is the mechanics: the join with a labels file that has
missing, extra, duplicate and out-of-split rows, splits that never share a
URI, the tf.Transform output, the head's reports, an export whose predictions
equal the trained head's, and tag_audio running that export.
"""

from __future__ import annotations

import glob
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest

from schemas import training as ts
from tests.support.audio_factory import sine, write_audio
from tests.support.pipeline_helpers import FIXTURE_MODEL, read_table, require_shared, run_tag_audio
from transforms.training import labelled_rows as tset

CLASSES = {"low": 300.0, "high": 2500.0, "noise": None}
FOLDS = (1, 1, 2, 2, 3, 4)  # per class: train folds 1-2, eval fold 3, test fold 4
SPLIT_ARGS = ["--train_folds", "1,2", "--eval_folds", "3", "--test_folds", "4"]
CLIP_S = 2.0  # 4 YAMNet frames
FRAMES_PER_CLIP = 4


def _signal(freq: float | None, rng: np.random.Generator) -> np.ndarray:
    if freq is None:
        return rng.uniform(-0.3, 0.3, (1, int(CLIP_S * 16000)))
    return sine(freq, CLIP_S, 16000, amplitude=0.4) + rng.normal(0, 0.01, (1, int(CLIP_S * 16000)))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Audio for three classes plus the awkward cases, and a labels file with missing and extra rows."""
    root = tmp_path_factory.mktemp("training")
    audio = root / "audio"
    rng = np.random.default_rng(3)
    rows = ["path,label,fold"]
    labelled = {}
    for label, freq in CLASSES.items():
        (audio / label).mkdir(parents=True)
        for i, fold in enumerate(FOLDS):
            path = write_audio(audio / label / f"{label}_{i}.wav", _signal(freq, rng), 16000)
            rows.append(f"audio/{label}/{path.name},{label},{fold}")
            labelled[str(path)] = (label, str(fold))
    rows.append(rows[1])  # an identical duplicate row: collapsed and counted
    excluded = write_audio(audio / "low" / "low_fold5.wav", _signal(300.0, rng), 16000)
    rows.append(f"audio/low/{excluded.name},low,5")  # fold 5 is in no split
    unlabelled = write_audio(audio / "unlabelled.wav", _signal(None, rng), 16000)  # no label row
    broken = audio / "broken.wav"
    broken.write_text("not audio at all\n" * 50)  # tagged, fails, so it has no frames
    rows.append("audio/broken.wav,noise,1")
    rows.append("audio/ghost.wav,high,2")  # no such file anywhere
    labels = root / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return {"root": root, "audio": audio, "labels": labels, "labelled": labelled, "excluded": excluded,
            "unlabelled": unlabelled, "broken": broken}


@pytest.fixture(scope="module")
def tagged(corpus):
    model = require_shared(FIXTURE_MODEL)
    out = corpus["root"] / "tagged"
    status = run_tag_audio(["--input", str(corpus["audio"]), "--output", str(out), "--model_path", str(model),
                            "--features", "logmel", "--batch_size", "32"])
    assert status == 0
    return out


@pytest.fixture(scope="module")
def dataset(corpus, tagged):
    from beam_jobs import build_training_set

    ds_dir = corpus["root"] / "ds"
    status = build_training_set.run(["--frames", str(tagged), "--labels", str(corpus["labels"]),
                                      "--output", str(ds_dir), *SPLIT_ARGS])
    assert status == 0
    return ds_dir


@pytest.fixture(scope="module")
def head_dir(corpus, dataset):
    from beam_jobs import train_head

    out = corpus["root"] / "head"
    status = train_head.run(["--dataset", str(dataset), "--output", str(out), "--hidden_units", "32",
                             "--epochs", "4", "--patience", "2", "--batch_size", "16"])
    assert status == 0
    return out


@pytest.fixture(scope="module")
def tagged_with_head(corpus, head_dir):
    out = corpus["root"] / "tagged_with_head"
    audio = corpus["audio"]
    status = run_tag_audio(["--input", str(audio / "low"), "--input", str(audio / "noise"),
                            "--output", str(out),  # the kind comes from the export itself
                            "--model_path", str(head_dir / "export"), "--batch_size", "8"])
    assert status == 0
    return out


def _report(ds_dir: Path) -> dict:
    return json.loads((ds_dir / ts.REPORT_FILE).read_text())


def _read_split(ds_dir: Path, split: str) -> dict[str, np.ndarray]:
    import tensorflow as tf
    import tensorflow_transform as tft

    spec = tft.TFTransformOutput(str(ds_dir / ts.TRANSFORM_DIR)).transformed_feature_spec()
    files = sorted(glob.glob(ts.shard_pattern(str(ds_dir), split)))
    records = list(tf.data.TFRecordDataset(files, compression_type=ts.COMPRESSION).as_numpy_iterator())
    if not records:
        return {name: np.zeros(0) for name in spec}
    return {name: value.numpy() for name, value in tf.io.parse_example(tf.constant(records), spec).items()}


# --- the labels join and its report ------------------------------------------------------------

def test_report_counts_and_lists_every_mismatch(corpus, dataset):
    report = _report(dataset)
    expected_clips = {ts.TRAIN: 4, ts.EVAL: 1, ts.TEST: 1}
    for split, clips in expected_clips.items():
        classes = report["splits"][split]["classes"]
        assert set(classes) == set(CLASSES), split
        for label in CLASSES:
            assert classes[label] == {"clips": clips, "frames": clips * FRAMES_PER_CLIP}, (split, label)
    unmatched = report["unmatched"]
    assert unmatched["files_without_label"]["items"] == [str(corpus["unlabelled"])]
    missing = {row["path"]: row for row in unmatched["labels_without_frames"]["items"]}
    assert set(missing) == {"audio/broken.wav", "audio/ghost.wav"}
    assert "status failed" in missing["audio/broken.wav"]["reason"]
    assert str(corpus["broken"]) in missing["audio/broken.wav"]["reason"]
    assert missing["audio/ghost.wav"]["reason"] == "no tagged file in the frames matches this path"
    assert unmatched["excluded_by_fold"]["items"] == [{"uri": str(corpus["excluded"]), "fold": "5"}]
    assert report["duplicate_label_rows"] == 1
    # The complete lists are written next to the report, for lists longer than the JSON keeps.
    assert (dataset / "unmatched_files.txt").read_text().split() == [str(corpus["unlabelled"])]
    assert "audio/ghost.wav" in (dataset / "unmatched_labels.csv").read_text()


def test_no_uri_is_in_two_splits_and_clips_stay_whole(corpus, dataset):
    uris = {}
    for split in ts.SPLITS:
        rows = _read_split(dataset, split)
        split_uris = [u.decode() for u in rows[ts.URI]]
        for uri in set(split_uris):
            assert uri not in uris, f"{uri} is in {uris.get(uri)} and {split}"
            uris[uri] = split
            assert split_uris.count(uri) == FRAMES_PER_CLIP, "every frame of a clip is in its split"
            label, fold = corpus["labelled"][uri]
            assert split == tset.SplitRule(("1", "2"), ("3",), ("4",)).assign(uri, fold)
    assert set(uris) == set(corpus["labelled"])


def test_transform_z_scores_on_train_and_keeps_a_label_vocabulary(dataset):
    import tensorflow_transform as tft

    train = _read_split(dataset, ts.TRAIN)
    features = train[ts.FEATURES]
    assert features.shape == (12 * FRAMES_PER_CLIP, 1024)
    varying = features.std(axis=0) > 1e-3
    assert varying.sum() > 100
    np.testing.assert_allclose(features.mean(axis=0), 0, atol=1e-3)
    np.testing.assert_allclose(features.std(axis=0)[varying], 1, atol=1e-2)
    output = tft.TFTransformOutput(str(dataset / ts.TRANSFORM_DIR))
    vocabulary = [v.decode() for v in output.vocabulary_by_name(ts.LABEL_VOCABULARY)]
    document = json.loads((dataset / ts.DATASET_FILE).read_text())
    assert sorted(vocabulary) == sorted(CLASSES) and document["labels"] == vocabulary
    assert [vocabulary[i] for i in train[ts.LABEL_ID][:1]][0] in CLASSES
    assert document["base_model"]["source"] == str(FIXTURE_MODEL)
    assert not (dataset / ts.TRANSFORM_TEMP_DIR).exists()


def _copy_with_second_run(tagged: Path, destination: Path, config_id: str | None = None) -> Path:
    """A copy of a tag_audio output whose one run appears twice, as when the same files are tagged again
    (optionally with another model's config id in the second run's Parquet metadata)."""
    import pyarrow.parquet as pq

    shutil.copytree(tagged, destination)
    (run_dir,) = (destination / "frames").glob("run=*")
    run_id = run_dir.name[len("run="):]
    later = run_id + "-again"  # sorts after: the later run
    for table in ("frames", "files"):
        shutil.copytree(destination / table / f"run={run_id}", destination / table / f"run={later}")
    record = json.loads((destination / "runs" / f"{run_id}.json").read_text())
    (destination / "runs" / f"{later}.json").write_text(json.dumps({**record, "run_id": later}))
    from transforms.output import commit_log

    number = commit_log.head(str(destination)) + 1  # committed after the run it copies
    assert commit_log.append(str(destination), commit_log.Commit(
        commit=number, kind=commit_log.RUN, run_id=later, committed_at=0.0, status=record["status"],
        record={**record, "run_id": later, "commit": number}))
    if config_id is not None:  # another model: its rows and metadata say so
        import pyarrow as pa

        for table_name in ("frames", "files"):
            for path in (destination / table_name / f"run={later}").glob("*.parquet"):
                table = pq.read_table(path)
                table = table.set_column(table.schema.get_field_index("config_id"), "config_id",
                                         pa.array([config_id] * table.num_rows, pa.string()))
                metadata = {**table.schema.metadata, b"audio_tagger.config_id": config_id.encode()}
                pq.write_table(table.replace_schema_metadata(metadata), path)
    return destination


def test_pooled_training_set_with_both_feature_columns_from_two_runs(corpus, tagged):
    """--features both --pooling mean_max: one example per clip, embedding and log-mel statistics;
    files tagged by two runs count once: the later run's frames, the earlier run (re-tagged whole) is not
    read at all."""
    from beam_jobs import build_training_set

    frames_dir = _copy_with_second_run(tagged, corpus["root"] / "tagged_twice")
    ds_dir = corpus["root"] / "ds_pooled"
    status = build_training_set.run(["--frames", str(frames_dir), "--labels", str(corpus["labels"]),
                                     "--output", str(ds_dir), "--features", "both", "--pooling", "mean_max",
                                     *SPLIT_ARGS])
    assert status == 0
    report = _report(ds_dir)
    assert len(report["runs"]) == 1 and report["runs"][0].endswith("-again")
    assert report["splits"][ts.TRAIN]["clips"] == 12 and report["splits"][ts.TRAIN]["frames"] == 48
    test_rows = _read_split(ds_dir, ts.TEST)
    assert test_rows[ts.FEATURES].shape == (3, 2 * (1024 + ts.LOGMEL_STATS_DIM))
    assert list(test_rows[ts.NUM_FRAMES]) == [FRAMES_PER_CLIP] * 3
    assert list(test_rows[ts.FRAME_INDEX]) == [-1] * 3
    # The raw sample holds the pooled statistics of the frames table, as build_training_set computed them.
    frames = read_table(tagged, "frames").to_pandas()
    layout = ts.FeatureLayout.from_document(json.loads((ds_dir / ts.DATASET_FILE).read_text())["layout"])
    from transforms.training.head_trainer import read_raw_sample

    raw = read_raw_sample(str(ds_dir), layout)
    uri = raw[ts.URI][0].decode()
    clip = frames[frames.uri == uri]
    np.testing.assert_allclose(raw["embedding_max"][0], np.stack(clip.embedding).max(axis=0), rtol=1e-6)
    np.testing.assert_allclose(raw["logmel_stats_mean"][0], np.stack(clip.logmel_stats).mean(axis=0),
                               rtol=1e-5, atol=1e-5)


def test_unusable_inputs_stop_before_the_pipeline_with_one_line(corpus, tagged, tmp_path, capsys):
    from beam_jobs import build_training_set

    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\na.wav,dog\na.wav,cat\n")
    args = ["--frames", str(tagged), "--output", str(tmp_path / "ds")]
    assert build_training_set.run([*args, "--labels", str(bad)]) == 2
    assert "line 3: a.wav is labelled 'cat'" in capsys.readouterr().err
    assert build_training_set.run([*args, "--labels", str(corpus["labels"]), "--test_folds", "9"]) == 2
    assert "fold(s) 9" in capsys.readouterr().err
    no_logmel = tmp_path / "no_logmel"
    run_tag_audio(["--input", str(corpus["unlabelled"]), "--output", str(no_logmel),
                   "--model_path", str(FIXTURE_MODEL)])
    assert build_training_set.run(["--frames", str(no_logmel), "--labels", str(corpus["labels"]),
                                   "--output", str(tmp_path / "ds2"), "--features", "logmel"]) == 2
    assert "no logmel_stats column (tag with tag_audio --features logmel)" in capsys.readouterr().err
    mixed = _copy_with_second_run(tagged, tmp_path / "mixed", config_id="0123456789abcdef")
    assert build_training_set.run(["--frames", str(mixed), "--labels", str(corpus["labels"]),
                                   "--output", str(tmp_path / "ds3")]) == 2
    assert "frames of 2 different models or framings; pick the runs of one with --runs" in \
        capsys.readouterr().err


# --- the head and its export -------------------------------------------------------------------

def test_head_reports_frame_and_clip_accuracy_per_split(head_dir, dataset):
    metrics = json.loads((head_dir / "metrics.json").read_text())
    for split in ts.SPLITS:
        row = metrics["splits"][split]
        assert row["clips"] == {ts.TRAIN: 12, ts.EVAL: 3, ts.TEST: 3}[split]
        assert row["rows"] == row["clips"] * FRAMES_PER_CLIP
        assert 0.0 <= row["frame_accuracy"] <= 1.0 and 0.0 <= row["clip_accuracy"] <= 1.0
    assert metrics["confusion_matrix"]["split"] == ts.TEST
    assert np.array(metrics["confusion_matrix"]["matrix"]).sum() == 3
    assert (head_dir / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    check = metrics["export"]["reload_check"]
    assert check["rows"] > 0 and check["max_abs_diff"] <= 1e-4
    assert metrics["early_stopping_monitor"] == "val_loss"


def test_export_spec_fingerprint_and_kind(head_dir, dataset):
    from audio_models.loading import ModelUnavailableError, load_spec, resolve_source

    export = head_dir / "export"
    spec = load_spec(resolve_source("head", str(export)))
    labels = json.loads((dataset / ts.DATASET_FILE).read_text())["labels"]
    assert spec.name == "head" and list(spec.class_names) == labels
    assert (spec.sample_rate, spec.window_samples, spec.hop_samples) == (16000, 15600, 7680)
    assert spec.embedding_dim == 1024
    digest = hashlib.sha256()
    for path in sorted((export / "variables").glob("variables.*")):
        digest.update(path.read_bytes())
    assert spec.fingerprint == digest.hexdigest()
    assert (export / "assets" / "labels.txt").read_text().split() == labels
    document = json.loads((export / "assets" / "model_spec.json").read_text())
    assert document["kind"] == "head" and document["layout"]["columns"] == ["embedding"]
    with pytest.raises(ModelUnavailableError, match="hop is fixed"):
        load_spec(resolve_source("head", str(export), hop_s=1.0))
    with pytest.raises(ModelUnavailableError, match="not a train_head export"):
        load_spec(resolve_source("head", str(FIXTURE_MODEL)))


def test_tag_audio_with_the_export_writes_the_heads_classes(head_dir, dataset, tagged, tagged_with_head):
    from schemas.tables import class_names_from

    labels = json.loads((dataset / ts.DATASET_FILE).read_text())["labels"]
    files = glob.glob(f"{tagged_with_head}/frames/run=*/*.parquet")
    schema = pads.dataset(files[0]).schema
    assert class_names_from(schema) == labels
    frames = read_table(tagged_with_head, "frames").to_pandas()
    assert len(frames) == (2 * len(FOLDS) + 1) * FRAMES_PER_CLIP  # low (with its fold-5 clip) and noise
    assert frames.scores.map(len).eq(len(labels)).all()
    np.testing.assert_allclose(np.stack(frames.scores).sum(axis=1), 1.0, atol=1e-5)  # softmax
    assert frames.model.str.startswith("head@").all()
    # The export's YAMNet is the project's: embeddings equal those of the first tagging.
    original = read_table(tagged, "frames").to_pandas().set_index(["uri", "frame_index"])
    for _, row in frames.head(8).iterrows():
        expected = original.loc[(row.uri, row.frame_index)].embedding
        np.testing.assert_allclose(row.embedding, expected, atol=1e-4)
    top = read_table(tagged_with_head, "files").to_pandas()
    assert all(entry["label"] in labels for labels_ in top.top_labels_mean for entry in labels_)


def test_export_gives_the_trained_heads_predictions(head_dir, dataset, tagged_with_head):
    """Waveform -> export equals the trained Keras head on the training set's transformed features."""
    import keras
    import tensorflow as tf

    classifier = keras.models.load_model(head_dir / "head.keras")
    frames = read_table(tagged_with_head, "frames").to_pandas().set_index(["uri", "frame_index"])
    compared = 0
    for split in ts.SPLITS:
        rows = _read_split(dataset, split)
        probabilities = tf.nn.softmax(classifier(rows[ts.FEATURES], training=False)).numpy()
        for uri, index, p in zip(rows[ts.URI], rows[ts.FRAME_INDEX], probabilities):
            key = (uri.decode(), int(index))
            if key in frames.index:
                np.testing.assert_allclose(frames.loc[key].scores, p, atol=1e-4)
                compared += 1
    assert compared == 2 * len(FOLDS) * FRAMES_PER_CLIP


def test_export_from_features_matches_waveform_path_on_pooled_layout():
    """A pooled head sees a window as a one-frame clip: mean = max = the frame's own statistics."""
    import tensorflow as tf

    from audio_models.head import frame_raw_features
    from audio_models.logmel_features import logmel_statistics

    rng = np.random.default_rng(0)
    patches = rng.normal(size=(3, 96, 64)).astype(np.float32)
    embedding = rng.normal(size=(3, 1024)).astype(np.float32)
    layout = ts.FeatureLayout((ts.EMBEDDING, ts.LOGMEL_STATS), (1024, 128), "mean_max")
    raw = frame_raw_features(layout, tf.constant(embedding), tf.constant(patches))
    assert list(raw) == layout.raw_feature_names()
    np.testing.assert_allclose(raw["logmel_stats_max"].numpy(), logmel_statistics(patches), atol=1e-5)
    np.testing.assert_allclose(raw["embedding_mean"].numpy(), embedding, rtol=0, atol=1e-6)


# --- pure parts --------------------------------------------------------------------------------

def test_labels_match_by_uri_or_longest_path_suffix():
    table = tset.parse_labels("path,label,fold\naudio/a.wav,dog,1\nx/audio/a.wav,cat,2\n"
                              "gs://b/c.wav,bird,1\n./d.wav,cow,1\n", "labels.csv")
    index = tset.LabelIndex(table)
    assert index.match("/data/x/audio/a.wav").label == "cat"  # longest suffix wins
    assert index.match("gs://bucket/y/audio/a.wav").label == "dog"
    assert index.match("gs://b/c.wav").label == "bird"
    assert index.match("gs://other/b/c.wav") is None  # a URI only matches itself
    assert index.match("/data/d.wav").label == "cow"
    assert index.match("/data/xaudio/a.wav") is None  # suffixes stop at '/' boundaries
    headerless = tset.parse_labels("a.wav,dog\nb.wav,cat\n")
    assert not headerless.has_fold and headerless.labels == ["cat", "dog"]
    with pytest.raises(tset.LabelsFileError, match="line 2: needs a path and a label"):
        tset.parse_labels("path,label\n,dog\n")


def test_hash_split_is_stable_and_proportional():
    rule = tset.SplitRule(eval_percent=20, test_percent=10)
    uris = [f"gs://bucket/clip_{i}.wav" for i in range(4000)]
    splits = [rule.assign(uri, None) for uri in uris]
    assert splits == [rule.assign(uri, None) for uri in uris]
    share = {s: splits.count(s) / len(uris) for s in ts.SPLITS}
    assert abs(share[ts.TEST] - 0.10) < 0.02 and abs(share[ts.EVAL] - 0.20) < 0.02
    salted = tset.SplitRule(eval_percent=20, test_percent=10, salt="other")
    assert [salted.assign(u, None) for u in uris] != splits
    carved = tset.SplitRule(train_folds=("1",), test_folds=("2",), eval_percent=25)
    assert carved.assign(uris[0], "2") == ts.TEST and carved.assign(uris[0], "3") is None
    assert abs([carved.assign(u, "1") for u in uris].count(ts.EVAL) / len(uris) - 0.25) < 0.03
    with pytest.raises(ValueError, match="only one of"):
        tset.SplitRule(train_folds=("1",), test_folds=("1",))
