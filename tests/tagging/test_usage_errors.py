"""A configuration tag_audio cannot run fails at start, in one line, with exit status 2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests.support import savedmodel_factory as factory  # noqa: E402
from tests.support.audio_factory import sine, write_audio  # noqa: E402
from tests.support.pipeline_helpers import run_tag_audio  # noqa: E402


@pytest.fixture(scope="module")
def embedding_only_model(tmp_path_factory) -> Path:
    """A waveform SavedModel with an embedding output and no scores."""
    return factory.save_single_waveform_encoder(tmp_path_factory.mktemp("models") / "embeddings")


@pytest.fixture(scope="module")
def scoring_model(tmp_path_factory) -> Path:
    return factory.save_batched_encoder(tmp_path_factory.mktemp("models") / "scores")


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("tag_audio:")]
    assert len(lines) == 1, captured.err
    return lines[0]


def test_top_k_with_a_model_without_scores_is_refused_before_anything_runs(tmp_path, embedding_only_model,
                                                                           capsys):
    clip = write_audio(tmp_path / "clip.wav", sine(440.0, 2.0, 16000), 16000)
    out = tmp_path / "out"

    status = run_tag_audio(["--input", str(clip), "--output", str(out), "--model", "savedmodel",
                            "--model_path", str(embedding_only_model), "--window_s", "0.5", "--top_k", "3"])

    assert status == 2
    line = _one_error_line(capsys)
    assert "--top_k 3" in line and "no class scores" in line and "drop --top_k" in line
    assert not out.exists()  # refused before the run record or any table was written


def test_an_input_whose_kind_cannot_be_told_on_gcs_is_one_line_not_a_not_found_row(tmp_path, gcs,
                                                                                   scoring_model, capsys):
    out = tmp_path / "out"

    status = run_tag_audio(["--input", "gs://no-such-bucket-here/recordings", "--output", str(out),
                            "--model", "savedmodel", "--model_path", str(scoring_model)])

    assert status == 2
    line = _one_error_line(capsys)
    assert line.startswith("tag_audio: cannot tell what --input names: ")
    assert not out.exists()
