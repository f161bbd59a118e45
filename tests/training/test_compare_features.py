"""compare_features: the log-mel baseline and the encoder, the same head on each, one report.

The labelled set and its tagging (random-weight YAMNet fixture, ``--features logmel``) are the
training-chain test's, so accuracies mean nothing; what is checked is that both chains run on the
same split, and that the report carries accuracies, confusion pairs, costs taken from the run
record and timed in-process, and the verdict sentence.
"""

from __future__ import annotations

import json

import pytest

from beam_jobs import compare_features as compare_job
from schemas import training as ts
from tests.training.test_training_chain import SPLIT_ARGS, corpus, tagged  # noqa: F401  (module fixtures)
from transforms.training import feature_comparison as cf

HEAD_ARGS = ["--hidden_units", "16", "--epochs", "3", "--patience", "2", "--batch_size", "16"]


@pytest.fixture(scope="module")
def report_dir(corpus, tagged):  # noqa: F811
    out = corpus["root"] / "comparison"
    status = compare_job.run(["--frames", str(tagged), "--labels", str(corpus["labels"]),
                              "--output", str(out), *SPLIT_ARGS, *HEAD_ARGS])
    assert status == 0
    return out


def test_report_has_both_feature_sets_with_accuracy_per_split(report_dir):
    doc = json.loads((report_dir / cf.COMPARISON_JSON).read_text())
    assert list(doc["feature_sets"]) == ["logmel", "embedding"] and doc["baseline"] == "logmel"
    assert doc["evaluated_split"] == ts.TEST
    expected_clips = {ts.TRAIN: 12, ts.EVAL: 3, ts.TEST: 3}  # the same split for both heads
    for name, result in doc["feature_sets"].items():
        assert result["input_dim"] == {"logmel": ts.LOGMEL_STATS_DIM, "embedding": 1024}[name]
        for split, clips in expected_clips.items():
            row = result["splits"][split]
            assert row["clips"] == clips and row["rows"] == clips * 4, (name, split)
            assert 0.0 <= row["clip_accuracy"] <= 1.0 and 0.0 <= row["frame_accuracy"] <= 1.0
        assert isinstance(result["confusion_pairs"], list)
        metrics = json.loads((report_dir / name / cf.HEAD_DIR / "metrics.json").read_text())
        wrong = metrics["splits"][ts.TEST]["clips"] * (1 - metrics["splits"][ts.TEST]["clip_accuracy"])
        assert sum(pair["clips"] for pair in result["confusion_pairs"]) == round(wrong)
        assert metrics["config"]["hidden_units"] == 16 and metrics["config"]["seed"] == 0
        assert "export" not in metrics  # comparison heads are not exported
        dataset = json.loads((report_dir / name / cf.TRAINING_SET_DIR / ts.DATASET_FILE).read_text())
        assert dataset["layout"]["columns"] == list(ts.feature_columns(name))


def test_costs_come_from_the_run_record_and_in_process_timing(report_dir, tagged):  # noqa: F811
    doc = json.loads((report_dir / cf.COMPARISON_JSON).read_text())
    (record_path,) = (tagged / "runs").glob("*.json")
    record = json.loads(record_path.read_text())
    cost = doc["cost"]
    assert cost["encoder_run"]["runs"] == [record["run_id"]]
    expected = record["wall_s"] / record["counts"]["audio_seconds"] * 3600
    assert cost["encoder_run"]["seconds_per_audio_hour"] == pytest.approx(expected)
    assert cost["frames"] == record["counts"]["frames"] > 0
    for key in ("logmel_only", "encoder_model_only"):
        assert cost[key]["windows"] == cost["frames"] and cost[key]["seconds"] > 0, key
        assert cost[key]["seconds_per_audio_hour"] > 0
    assert doc["feature_sets"]["embedding"]["seconds_per_audio_hour"] == \
        cost["encoder_run"]["seconds_per_audio_hour"]
    assert doc["feature_sets"]["logmel"]["seconds_per_audio_hour"] == \
        cost["logmel_only"]["seconds_per_audio_hour"]


def test_report_states_the_verdict_in_one_sentence(report_dir):
    doc = json.loads((report_dir / cf.COMPARISON_JSON).read_text())
    (verdict,) = doc["verdicts"]
    assert verdict["candidate"] == "embedding" and isinstance(verdict["worth_it"], bool)
    sentence = doc["sentence"]
    assert sentence == verdict["sentence"] and sentence.startswith("On the test split the embedding head is")
    assert "the compute per audio hour" in sentence and "worth its cost" in sentence
    markdown = (report_dir / cf.COMPARISON_MD).read_text()
    assert sentence in markdown
    assert "| embedding | 1024 | test | 3 |" in markdown and "| logmel | 128 | test | 3 |" in markdown


def test_frames_without_logmel_stop_with_the_reason(corpus, tmp_path, capsys):  # noqa: F811
    from tests.support.pipeline_helpers import FIXTURE_MODEL, require_shared, run_tag_audio

    model = require_shared(FIXTURE_MODEL)
    plain = tmp_path / "plain"
    assert run_tag_audio(["--input", str(corpus["audio"] / "low"), "--output", str(plain),
                          "--model_path", str(model)]) == 0
    assert compare_job.run(["--frames", str(plain), "--labels", str(corpus["labels"]),
                   "--output", str(tmp_path / "cmp"), *SPLIT_ARGS]) == 2
    err = capsys.readouterr().err
    assert "tag with tag_audio --features logmel" in err
    assert "compare_features: build_training_set --features logmel failed" in err
    assert not (tmp_path / "cmp" / cf.COMPARISON_JSON).exists()


# --- pure parts ------------------------------------------------------------------------------------

def test_confusion_pairs_are_the_largest_off_diagonal_cells():
    metrics = {"labels": ["a", "b", "c"],
               "confusion_matrix": {"split": "test", "matrix": [[5, 2, 0], [1, 4, 3], [0, 0, 6]]}}
    assert cf.confusion_pairs(metrics, 2) == [
        {"true": "b", "predicted": "c", "clips": 3, "of_true_clips": 8},
        {"true": "a", "predicted": "b", "clips": 2, "of_true_clips": 7}]
    assert cf.confusion_pairs(metrics, 10)[-1] == {"true": "b", "predicted": "a", "clips": 1,
                                                   "of_true_clips": 8}
    assert cf.confusion_pairs({"labels": ["a"]}, 5) == []


def _results(base_clip: float, cand_clip: float, clips: int = 80) -> dict:
    def split(accuracy: float) -> dict:
        return {ts.TEST: {"clips": clips, "rows": clips * 10, "clip_accuracy": accuracy,
                          "frame_accuracy": accuracy - 0.1}}

    return {"logmel": {"splits": split(base_clip)}, "embedding": {"splits": split(cand_clip)}}


COST = {"encoder_run": {"seconds_per_audio_hour": 60.0}, "logmel_only": {"seconds_per_audio_hour": 2.0},
        "encoder_model_only": {"seconds_per_audio_hour": 8.0}}


def test_verdict_weighs_the_gain_against_noise_and_states_the_cost_ratio():
    worth = cf.verdict("logmel", "embedding", _results(0.70, 0.95), COST, ts.TEST, 2.0)
    assert worth["worth_it"] is True and worth["clip_accuracy_gain_points"] == pytest.approx(25.0)
    assert worth["cost_ratio"] == pytest.approx(30.0)
    assert "embedding head is 25.0 points more accurate than the logmel baseline (clip accuracy 95.0% vs " \
        "70.0% over 80 clips; frame accuracy 85.0% vs 60.0%)" in worth["sentence"]
    assert "at 30× the compute per audio hour (60.0 s vs 2.00 s; 4× for the model alone" in worth["sentence"]
    assert worth["sentence"].endswith("so the encoder is worth its cost.")
    # One clip of 80 is 1.25 points: below the 2-point margin, so noise.
    noise = cf.verdict("logmel", "embedding", _results(0.90, 0.9125), COST, ts.TEST, 2.0)
    assert noise["worth_it"] is False and "not worth its cost here" in noise["sentence"]
    # With 3 test clips one clip is 33 points: the margin grows to a clip.
    small = cf.verdict("logmel", "embedding", _results(1 / 3, 2 / 3, clips=3), COST, ts.TEST, 2.0)
    assert small["margin_points"] == pytest.approx(33.33, abs=0.01) and small["worth_it"] is False
    worse = cf.verdict("logmel", "embedding", _results(0.8, 0.7), COST, ts.TEST, 2.0)
    assert "10.0 points less accurate" in worse["sentence"] and worse["worth_it"] is False


def test_logmel_timing_runs_every_window_up_to_the_cap():
    timing = cf.time_logmel(windows=300, max_windows=100)
    assert (timing.windows, timing.timed, timing.batch) == (300, 100, 100) and timing.seconds > 0


def test_usage_errors_return_2_before_any_work(tmp_path):
    base = ["--frames", str(tmp_path), "--labels", str(tmp_path / "l.csv"), "--output", str(tmp_path / "o")]
    assert compare_job.run([*base, "--features", "logmel"]) == 2  # one feature set is no comparison
    assert compare_job.run([*base, "--features", "logmel,mfcc"]) == 2
    assert compare_job.run(["--frames", str(tmp_path)]) == 2
    config = compare_job.comparison_config(
        *compare_job.run.parse([*base, "--test_folds", "3", "--seed", "7", "--pooling", "mean"]))
    assert config.head.seed == 7 and config.feature_sets == ("logmel", "embedding")
    assert config.build.split.test_folds == ("3",) and config.build.pooling == "mean"
