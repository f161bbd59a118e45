"""A flaky bucket: tag_audio through a proxy that answers 503/429, cuts bodies and stalls, in front of
the GCS emulator, with no relay for TensorFlow: every file ends as it ends without faults, and no frame
row appears twice. The model is read from the bucket through the same proxy."""

from __future__ import annotations

import json

import duckdb
import pytest

from tests.support.audio_factory import chirp, sine, write_audio
from tests.support.fault_proxy import FaultProxy
from tests.support.pipeline_helpers import run_tag_audio_subprocess
from tests.support.savedmodel_factory import save_batched_encoder

RELAY_VARIABLES = ("https_proxy", "HTTPS_PROXY", "CURL_CA_BUNDLE", "GOOGLE_AUTH_TOKEN_FOR_TESTING")


@pytest.fixture(scope="module")
def bucket_corpus(gcs, tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    audio = root / "audio"
    audio.mkdir()
    for i in range(10):
        wave = sine(200.0 + 40 * i, 3.0, 16000) if i % 2 else chirp(3.0, 16000)
        write_audio(audio / f"clip{i}.{'flac' if i % 3 else 'wav'}", wave, 16000)
    (audio / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    bucket = gcs.bucket("flaky")
    gcs.upload_dir(audio, f"{bucket}/audio")
    gcs.upload_dir(save_batched_encoder(root / "model"), f"{bucket}/model")
    return bucket


def _env(gcs, endpoint: str, cache) -> dict[str, str]:
    env = {k: v for k, v in gcs.worker_env().items() if k not in RELAY_VARIABLES}
    return {**env, "STORAGE_EMULATOR_HOST": endpoint, "AUDIO_TAGGER_CACHE": str(cache)}


def _tag(gcs, bucket: str, endpoint: str, out: str, cache) -> None:
    result = run_tag_audio_subprocess(
        ["--input", f"{bucket}/audio/", "--output", out, "--model", "savedmodel", "--model_path",
         f"{bucket}/model", "--progress_s", "0", "--io_retry_s", "60"],
        env=_env(gcs, endpoint, cache), replace_env=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]


def _outcome(gcs, out: str, tmp_path) -> tuple[dict, int, int]:
    local = tmp_path / out.rsplit("/", 1)[-1]
    for uri in gcs.list_uris(out):
        target = local / uri[len(out) + 1:]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(gcs.read_bytes(uri))
    files = duckdb.sql(f"select uri, status, split_part(error, ':', 1), num_frames "
                       f"from read_parquet('{local}/files/*/*.parquet')").fetchall()
    (total, distinct), = duckdb.sql(f"select count(*), count(distinct (uri, frame_index)) "
                                    f"from read_parquet('{local}/frames/*/*.parquet')").fetchall()
    records = [json.loads(p.read_text()) for p in (local / "runs").glob("*.json")]
    assert [r["status"] for r in records] == ["succeeded"]
    return {uri: (status, kind, frames) for uri, status, kind, frames in files}, total, distinct


def test_no_relay_needed_and_faults_change_nothing(gcs, bucket_corpus, tmp_path):
    _tag(gcs, bucket_corpus, gcs.endpoint, f"{bucket_corpus}/out-clean", tmp_path / "cache-clean")
    clean, clean_frames, _ = _outcome(gcs, f"{bucket_corpus}/out-clean", tmp_path)
    assert len(clean) == 11 and sum(s == "ok" for s, _, _ in clean.values()) == 10
    for rate, seed in ((0.05, 1), (0.20, 2)):
        with FaultProxy(gcs.endpoint, rate, seed=seed) as proxy:
            out = f"{bucket_corpus}/out-{int(rate * 100)}"
            _tag(gcs, bucket_corpus, proxy.endpoint, out, tmp_path / f"cache-{seed}")
        faulty, frames, distinct = _outcome(gcs, out, tmp_path)
        print(f"fault rate {rate:.0%}: {proxy.requests} requests, injected {dict(proxy.injected)}")
        assert sum(proxy.injected.values()) > 0
        assert faulty == clean, f"at {rate:.0%} faults"
        assert frames == distinct == clean_frames


def test_a_file_whose_reads_keep_failing_gets_a_transient_row_and_the_next_run_retries_it(
        gcs, bucket_corpus, tmp_path):
    out = f"{bucket_corpus}/out-transient"
    args = ["--input", f"{bucket_corpus}/audio/", "--output", out, "--model", "savedmodel", "--model_path",
            f"{bucket_corpus}/model", "--progress_s", "0", "--io_retries", "3", "--io_retry_s", "5"]
    # Every download of clip4 is answered 503 (listing and metadata requests are not: they name it
    # in a query string, not in the download path).
    with FaultProxy(gcs.endpoint, 1.0, only="/download/storage/v1/b/flaky/o/audio/clip4",
                    kinds=("503",)) as proxy:
        result = run_tag_audio_subprocess(args, env=_env(gcs, proxy.endpoint, tmp_path / "c1"),
                                          replace_env=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert proxy.injected["503"] >= 3, "\n".join(p for p in proxy.paths if "clip4" in p)
    first, _, _ = _outcome(gcs, out, tmp_path)
    transient = {uri: row for uri, row in first.items() if row[1] == "transient"}
    assert [uri.rsplit("/", 1)[-1] for uri in transient] == ["clip4.flac"]
    assert transient[next(iter(transient))][0] == "failed"

    again = run_tag_audio_subprocess(args, env=_env(gcs, gcs.endpoint, tmp_path / "c2"), replace_env=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 hit storage errors before (retried)" in again.stdout and "-> 1 to tag" in again.stdout
