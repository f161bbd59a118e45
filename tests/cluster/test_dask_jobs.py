"""beam_jobs.events and beam_jobs.search on a Dask cluster give what the local runner gives."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest

from tests.cluster.conftest import CORPUS, EXAMPLE_AUDIO, EXAMPLE_MODEL, corpus_args
from tests.support.pipeline_helpers import read_table, run_tag_audio


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    out = tmp_path_factory.mktemp("tagged") / "out"
    assert run_tag_audio([*corpus_args(), "--output", str(out)]) == 0
    return out


def _events(out_dir):
    table = read_table(out_dir, "events")
    rows = table.drop_columns(["run"]).to_pylist()
    return sorted(tuple(sorted(r.items())) for r in rows)


def test_events_on_dask_match_the_local_runner(dask_cluster, tagged, tmp_path):
    from beam_jobs import events

    assert events.run(["--frames", str(tagged), "--output", str(tmp_path / "local")]) == 0
    assert events.run(["--frames", str(tagged), "--output", str(tmp_path / "dask"),
                       *dask_cluster.runner_args()]) == 0
    local = _events(tmp_path / "local")
    assert local and _events(tmp_path / "dask") == local


def test_search_on_dask_matches_the_local_runner(dask_cluster, tagged, tmp_path, capsys):
    from beam_jobs import search

    query = ["--frames", str(tagged), "--query", str(EXAMPLE_AUDIO / CORPUS[0]), "--model_path",
             str(EXAMPLE_MODEL), "--top_k", "5"]
    assert search.run([*query, "--output", str(tmp_path / "local"), "--engine", "beam"]) == 0
    assert search.run([*query, "--output", str(tmp_path / "dask"), *dask_cluster.runner_args()]) == 0
    assert "frames (uncounted: no runner metrics) scanned" in capsys.readouterr().out
    local = pq.read_table(tmp_path / "local" / "hits.parquet").to_pylist()
    assert len(local) == 5 and pq.read_table(tmp_path / "dask" / "hits.parquet").to_pylist() == local


def test_a_manifest_is_read_on_dask(dask_cluster, tmp_path, capsys):
    from beam_jobs import tag_audio

    manifest = tmp_path / "manifest.txt"
    manifest.write_text("# three files\n" + "".join(f"{EXAMPLE_AUDIO / name}\n" for name in CORPUS))
    args = ["--input_manifest", str(manifest), "--output", str(tmp_path / "out"), "--model_path",
            str(EXAMPLE_MODEL), "--plan_only", *dask_cluster.runner_args()]
    assert tag_audio.run(args) == 0
    assert "3 input files: 3 new" in capsys.readouterr().out


def _examples(directory) -> list:
    import tensorflow as tf

    records = []
    for path in sorted(directory.glob("*/part-*")):
        for record in tf.data.TFRecordDataset(str(path), compression_type="GZIP"):
            example = tf.train.Example.FromString(record.numpy())
            records.append((path.parent.name, {k: list(v.float_list.value) or list(v.int64_list.value)
                                               or list(v.bytes_list.value)
                                               for k, v in example.features.feature.items()}))
    return sorted(records, key=lambda r: (r[0], r[1]["uri"], r[1]["frame_index"]))


@pytest.mark.slow  # about 170 s on 2 busy cores: tf.Transform's analysis on Dask, then the same locally
@pytest.mark.skipif(not os.environ.get("AUDIO_TAGGER_SLOW_TESTS"),
                    reason="about 170 s (tf.Transform's analysis on Dask, then locally) would take make test "
                           "past its budget on 2 cores; AUDIO_TAGGER_SLOW_TESTS=1 runs it")
def test_build_training_set_on_dask_matches_the_local_runner(dask_cluster, tagged, tmp_path):
    from beam_jobs import build_training_set

    labels = tmp_path / "labels.csv"
    labels.write_text("path,label,fold\n" + "".join(
        f"{name},{'speech' if i != 1 else 'other'},{1 + i % 2}\n" for i, name in enumerate(CORPUS)))
    args = ["--frames", str(tagged), "--labels", str(labels), "--train_folds", "1", "--eval_folds", "2"]
    assert build_training_set.run([*args, "--output", str(tmp_path / "local")]) == 0
    on_dask = [*args, "--output", str(tmp_path / "dask"), *dask_cluster.runner_args()]
    assert build_training_set.run(on_dask) == 0
    local, dask = _examples(tmp_path / "local"), _examples(tmp_path / "dask")
    assert local and len(dask) == len(local)
    for (split, got), (expected_split, expected) in zip(dask, local):
        assert split == expected_split and got.keys() == expected.keys()
        for key, value in got.items():
            if value and isinstance(value[0], float):  # z-scores: sums in another order, last bits differ
                assert max(abs(a - b) for a, b in zip(value, expected[key])) <= 1e-4
            else:
                assert value == expected[key]
