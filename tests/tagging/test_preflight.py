"""Checks before work: a bad configuration fails in seconds with one line and exit status 2."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from tests.support.pipeline_helpers import FIXTURE_MODEL, REPO, require_shared, run_tag_audio_subprocess


@pytest.fixture(scope="module")
def model(small_corpus):
    return small_corpus.model


def _bare_env(tmp_path) -> dict[str, str]:
    """A machine with no Google Cloud credentials and no emulator: an empty home, nothing set."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("GOOGLE_", "STORAGE_EMULATOR", "CLOUDSDK", "https_proxy", "CURL_CA"))}
    return {**keep, "HOME": str(home), "CLOUDSDK_CONFIG": str(home / "gcloud")}


def _one_line_error(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("tag_audio:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_no_credentials_is_one_line_in_seconds(tmp_path, model):
    started = time.monotonic()
    result = run_tag_audio_subprocess(
        ["--input", "gs://some-bucket/audio/", "--output", str(tmp_path / "out"), "--model", "savedmodel",
         "--model_path", str(model)], env=_bare_env(tmp_path), replace_env=True, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 2
    line = _one_line_error(result)
    assert "gcloud auth application-default login" in line and "GOOGLE_APPLICATION_CREDENTIALS" in line
    assert elapsed < 15, f"{elapsed:.1f} s"
    assert not (tmp_path / "out").exists(), "nothing was written"


def test_credentials_file_that_does_not_exist_is_named(tmp_path, model):
    env = {**_bare_env(tmp_path), "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "key.json")}
    result = run_tag_audio_subprocess(["--input", "gs://b/a/", "--output", "gs://b/out", "--model",
                                       "savedmodel", "--model_path", str(model)], env=env, replace_env=True)
    assert result.returncode == 2
    assert f"GOOGLE_APPLICATION_CREDENTIALS names {tmp_path / 'key.json'}" in _one_line_error(result)


def test_output_that_cannot_be_written_fails_before_work(tmp_path, model):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    audio = tmp_path / "audio"
    audio.mkdir()
    result = run_tag_audio_subprocess(["--input", str(audio), "--output", str(blocker / "out"),
                                       "--model", "savedmodel", "--model_path", str(model)])
    assert result.returncode == 2
    assert f"cannot write to --output {blocker / 'out'}" in _one_line_error(result)


def test_input_directory_that_cannot_be_listed_fails_before_work(tmp_path, model):
    result = run_tag_audio_subprocess(["--input", f"{tmp_path / 'nowhere'}/", "--output", str(tmp_path / "o"),
                                       "--model", "savedmodel", "--model_path", str(model)])
    assert result.returncode == 2
    assert f"cannot list --input {tmp_path / 'nowhere'}/**" in _one_line_error(result)
    assert not (tmp_path / "o" / "runs").exists()


def test_a_bucket_that_does_not_exist_fails_before_work(gcs, tmp_path, model):
    result = run_tag_audio_subprocess(["--input", "gs://no-such-bucket/audio/", "--output",
                                       str(tmp_path / "o"), "--model", "savedmodel", "--model_path",
                                       str(model)], env=gcs.env)
    assert result.returncode == 2
    line = _one_line_error(result)
    assert "gs://no-such-bucket/audio" in line and ("cannot list" in line or "cannot tell" in line)


def _damaged_copy(source, tmp_path, damage: str):
    """A copy of the model directory ``source`` as a partial copy leaves it."""
    copy = tmp_path / f"{source.name}-{damage}"
    shutil.copytree(source, copy)
    for path in copy.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # the shared fixtures are read-only
    if damage == "no_graph":
        (copy / "saved_model.pb").unlink()
    else:
        (shard,) = (copy / "variables").glob("variables.data-*")
        with open(shard, "r+b") as f:
            f.truncate(shard.stat().st_size // 2)
    return copy


# Each kind reads the spec from files a partial copy keeps (labels, model_spec.json) and used to fail on
# the workers, after the job had started. (YAMNet's re-implementation never reads saved_model.pb.)
@pytest.mark.parametrize("kind, which, damage", [
    ("keyword", "bundled", "no_graph"),
    ("savedmodel", "factory", "short_variables"),
    ("yamnet", "shared", "short_variables"),
])
def test_a_partial_model_copy_fails_before_work(tmp_path, model, kind, which, damage):
    source = {"factory": model, "bundled": REPO / "examples" / "models" / "keyword",
              "shared": require_shared(FIXTURE_MODEL)}[which]
    damaged = _damaged_copy(source, tmp_path, damage)
    started = time.monotonic()
    result = run_tag_audio_subprocess(["--input", str(REPO / "examples" / "audio" / "lift.wav"), "--output",
                                       str(tmp_path / "out"), "--model", kind, "--model_path", str(damaged)])
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr[-2000:]
    line = _one_line_error(result)
    what = "has no saved_model.pb" if damage == "no_graph" else "are damaged (Read less bytes than requested)"
    assert str(damaged) in line and what in line and "copy the whole model directory again" in line
    assert not (tmp_path / "out" / "runs").exists(), "nothing ran"
    assert elapsed < 60, f"{elapsed:.1f} s"


def test_a_flipped_byte_in_the_variables_is_found_and_a_whole_copy_passes(tmp_path, model):
    from audio_models.model_files import damage

    assert damage(str(model), needs_graph=True) is None
    copy = tmp_path / "flipped"
    shutil.copytree(model, copy)
    (shard,) = (copy / "variables").glob("variables.data-*")
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    problem = damage(str(copy), needs_graph=True)
    assert problem is not None and "variables" in problem and "copy the whole model directory" in problem
