"""build_training_set and train_head on gs:// (the GCS emulator): frames, labels, training set and head."""

from __future__ import annotations

import json

import tensorflow as tf

from schemas import training as ts
from tests.training.test_training_chain import SPLIT_ARGS, corpus, tagged  # noqa: F401  (module fixtures)


def test_training_set_and_head_on_gcs(gcs, corpus, tagged, tmp_path):  # noqa: F811
    from audio_models.head import load_head_spec
    from beam_jobs import build_training_set, train_head

    bucket = gcs.bucket("training-bucket")
    gcs.upload_dir(tagged, f"{bucket}/tagged")
    labels = gcs.upload_file(corpus["labels"], f"{bucket}/labels.csv")
    ds_dir = f"{bucket}/ds"  # tf.Transform publishes it with a gs:// directory rename
    status = build_training_set.run(["--frames", f"{bucket}/tagged", "--labels", labels, "--output", ds_dir,
                                     *SPLIT_ARGS])
    assert status == 0
    with tf.io.gfile.GFile(f"{ds_dir}/{ts.REPORT_FILE}") as f:
        report = json.load(f)
    assert report["frames_dir"] == f"{bucket}/tagged" and report["labels_file"] == labels
    assert report["splits"][ts.TEST]["clips"] == 3 and report["splits"][ts.TRAIN]["frames"] == 48
    assert report["unmatched"]["files_without_label"]["items"] == [str(corpus["unlabelled"])]

    head_dir = f"{bucket}/head"
    status = train_head.run(["--dataset", ds_dir, "--output", head_dir, "--hidden_units", "16",
                             "--epochs", "1"])
    assert status == 0
    metrics = json.loads(gcs.read_bytes(f"{head_dir}/metrics.json"))
    assert metrics["splits"][ts.TRAIN]["clips"] == 12
    assert metrics["export"]["reload_check"]["max_abs_diff"] <= 1e-4
    spec = load_head_spec(f"{head_dir}/export")
    assert spec.fingerprint == metrics["export"]["fingerprint"]
    assert f"{head_dir}/confusion_matrix.png" in gcs.list_uris(head_dir)
