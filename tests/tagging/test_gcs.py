"""gs:// against a real GCS server (gcp-storage-emulator): Beam filesystems, TensorFlow, workers.

What the jobs rely on, proven offline:
- Beam ``FileSystems.match`` with recursive globs, ``open`` (seekable) and ``create``
  (multi-chunk resumable uploads), Parquet through those handles;
- the exceptions a missing bucket / missing object raise, so the pipeline can turn
  them into error rows;
- TensorFlow's own ``gs://`` client: ``gfile`` reads and globs, SavedModels saved to
  and loaded from a bucket (``--model_path gs://...``);
- fresh processes and Beam's multi_processing workers, given ``gcs.env``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import wave
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io import fileio
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from google.api_core import exceptions as google_exceptions
from google.cloud.storage import exceptions as storage_exceptions

from tests.support.gcs_emulator import REPO_ROOT, GcsEmulator

SAMPLE_RATE = 16000


def wav_bytes(seconds: float, frequency_hz: float) -> bytes:
    """A mono 16-bit PCM sine tone as a WAV file."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pcm = (0.3 * np.sin(2 * np.pi * frequency_hz * t) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(pcm.tobytes())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def corpus(gcs: GcsEmulator, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A small nested corpus uploaded with ``upload_dir``: {gs:// URI: content}."""
    local = tmp_path_factory.mktemp("corpus")
    files = {
        "a.wav": wav_bytes(0.5, 440.0),
        "birds/b.wav": wav_bytes(0.25, 880.0),
        "birds/deep/c.wav": wav_bytes(0.75, 220.0),
        "notes.txt": b"not audio",
    }
    for relative, content in files.items():
        (local / relative).parent.mkdir(parents=True, exist_ok=True)
        (local / relative).write_bytes(content)
    prefix = gcs.bucket("corpus-bucket") + "/corpus"
    uris = gcs.upload_dir(local, prefix)
    assert uris == sorted(f"{prefix}/{relative}" for relative in files)
    return {f"{prefix}/{relative}": content for relative, content in files.items()}


def test_emulator_environment_is_complete(gcs: GcsEmulator) -> None:
    assert gcs.startup_s < 30, f"emulator took {gcs.startup_s:.1f} s to start"
    for key, value in gcs.env.items():
        assert os.environ[key] == value, key
    credentials = json.loads(gcs.credentials_file.read_text())
    assert credentials["type"] == "authorized_user"
    assert credentials["token"] and credentials["expiry"].startswith("2099")


def test_beam_match_expands_recursive_and_flat_globs(gcs: GcsEmulator, corpus: dict[str, bytes]) -> None:
    wavs = {uri: len(content) for uri, content in corpus.items() if uri.endswith(".wav")}

    recursive = FileSystems.match(["gs://corpus-bucket/corpus/**.wav"])[0].metadata_list
    assert {m.path: m.size_in_bytes for m in recursive} == wavs

    flat = FileSystems.match(["gs://corpus-bucket/corpus/*.wav"])[0].metadata_list
    assert [m.path for m in flat] == ["gs://corpus-bucket/corpus/a.wav"]

    nothing = FileSystems.match(["gs://corpus-bucket/elsewhere/*.wav"])[0].metadata_list
    assert nothing == []  # an empty match is not an error: the job must say so itself


def test_beam_create_and_open_round_trip_across_upload_chunks(gcs: GcsEmulator) -> None:
    gcs.bucket("scratch")
    # Larger than gcsio's 16 MiB upload chunk, so the resumable upload takes two PUTs.
    payload = np.random.default_rng(0).bytes(17 * 1024 * 1024 + 123)
    with FileSystems.create("gs://scratch/big.bin") as handle:
        handle.write(payload)
    assert gcs.read_bytes("gs://scratch/big.bin") == payload

    with FileSystems.open("gs://scratch/big.bin") as handle:
        handle.seek(16 * 1024 * 1024 - 5)  # decoders seek; reads cross the download chunk boundary
        assert handle.read(10) == payload[16 * 1024 * 1024 - 5 : 16 * 1024 * 1024 + 5]
        handle.seek(0)
        assert handle.read() == payload


def test_parquet_through_beam_filesystems(gcs: GcsEmulator) -> None:
    gcs.bucket("tables")
    table = pa.table(
        {
            "uri": [f"gs://corpus-bucket/{i}.wav" for i in range(200)],
            "scores": pa.array(
                list(np.random.default_rng(1).random((200, 521), dtype=np.float32)),
                type=pa.list_(pa.float32(), 521),
            ),
        }
    )
    with FileSystems.create("gs://tables/frames/part-0.parquet") as handle:
        pq.write_table(table, handle)
    with FileSystems.open("gs://tables/frames/part-0.parquet") as handle:
        assert pq.read_table(handle).equals(table)


def test_missing_bucket_and_object_raise_typed_errors(gcs: GcsEmulator) -> None:
    gcs.bucket("present")
    # Opening reads the object's metadata at once: a missing object or bucket fails here, typed.
    with pytest.raises(google_exceptions.NotFound) as missing_object:
        FileSystems.open("gs://present/missing.wav")
    assert missing_object.value.code == 404
    with pytest.raises(google_exceptions.NotFound):
        FileSystems.open("gs://no-such-bucket/a.wav")

    # A glob in a missing bucket fails the whole match, wrapping the listing error.
    with pytest.raises(BeamIOError) as missing_bucket:
        FileSystems.match(["gs://no-such-bucket/**.wav"])
    (listing_error,) = missing_bucket.value.exception_details.values()
    assert "gs://no-such-bucket/" in str(listing_error) and "NotFound" in str(listing_error)

    # Without glob characters a missing object is an empty match, not an error.
    assert FileSystems.match(["gs://present/missing.wav"])[0].metadata_list == []
    assert not FileSystems.exists("gs://no-such-bucket/a.wav")

    # Writing into a missing bucket fails only when the upload starts (at close for small files).
    handle = FileSystems.create("gs://no-such-bucket/out.parquet")
    handle.write(b"PAR1")
    with pytest.raises(storage_exceptions.InvalidResponse) as failed_upload:
        handle.close()
    assert 404 in failed_upload.value.args


def test_tensorflow_gfile_reads_and_globs(gcs: GcsEmulator, corpus: dict[str, bytes]) -> None:
    tf = pytest.importorskip("tensorflow")
    uri = "gs://corpus-bucket/corpus/birds/b.wav"
    with tf.io.gfile.GFile(uri, "rb") as handle:
        assert handle.read() == corpus[uri]
    assert sorted(tf.io.gfile.glob("gs://corpus-bucket/corpus/birds/*.wav")) == [uri]
    assert tf.io.gfile.isdir("gs://corpus-bucket/corpus/birds")
    assert not tf.io.gfile.exists("gs://corpus-bucket/corpus/missing.wav")
    with pytest.raises(tf.errors.NotFoundError):
        tf.io.gfile.GFile("gs://corpus-bucket/corpus/missing.wav", "rb").read()


def _save_doubling_model(tf, path: str) -> None:  # noqa: ANN001 (tensorflow module, imported lazily)
    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def __call__(self, x):  # noqa: ANN001, ANN202
            return {"scores": 2.0 * x}

    tf.saved_model.save(Doubler(), path)


def test_tensorflow_savedmodel_in_bucket(gcs: GcsEmulator, tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    gcs.bucket("models")
    # A model a user uploaded with their own tools (the --model_path case)...
    _save_doubling_model(tf, str(tmp_path / "doubler"))
    uploaded = gcs.upload_dir(tmp_path / "doubler", "gs://models/uploaded/doubler")
    assert "gs://models/uploaded/doubler/saved_model.pb" in uploaded
    loaded = tf.saved_model.load("gs://models/uploaded/doubler")
    np.testing.assert_allclose(loaded(tf.ones([2, 4]))["scores"].numpy(), 2.0)

    # ...and one TensorFlow writes to the bucket itself (what a trainer's export does).
    _save_doubling_model(tf, "gs://models/exported/doubler")
    assert "gs://models/exported/doubler/variables/variables.index" in gcs.list_uris("gs://models/exported/")
    exported = tf.saved_model.load("gs://models/exported/doubler")
    np.testing.assert_allclose(exported(tf.fill([1, 4], 3.0))["scores"].numpy(), 6.0)


_FRESH_PROCESS_READ = """
import sys
from apache_beam.io.filesystems import FileSystems
(metadata,) = FileSystems.match([sys.argv[1]])[0].metadata_list
with FileSystems.open(metadata.path) as handle:
    print(len(handle.read()))
"""


def test_fresh_process_with_worker_env_reads_promptly(gcs: GcsEmulator, corpus: dict[str, bytes]) -> None:
    uri = "gs://corpus-bucket/corpus/birds/deep/c.wav"
    # Only PATH/HOME from this process: the worker environment must carry everything gs:// needs.
    base = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS_READ, uri],
        env=gcs.worker_env(base),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed_s = time.perf_counter() - started
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout.strip()) == len(corpus[uri])
    # A process that probes for credentials waits ~25 s; the throwaway token avoids that.
    assert elapsed_s < 20, f"fresh process took {elapsed_s:.1f} s"


# --- Beam multi_processing workers: match, read, model from a bucket, Parquet out ---------------------

SIZES_SCHEMA = pa.schema(
    [("uri", pa.string()), ("num_bytes", pa.int64()), ("doubled", pa.float32()), ("worker_pid", pa.int64())]
)


class MeasureWithBucketModel(beam.DoFn):
    """Reads each file through Beam's filesystems and runs a SavedModel loaded from gs:// by TF."""

    def __init__(self, model_uri: str) -> None:
        self._model_uri = model_uri

    def setup(self) -> None:
        import tensorflow as tf

        self._tf = tf
        self._model = tf.saved_model.load(self._model_uri)

    def process(self, uri: str):  # noqa: ANN201 (generator of dicts)
        with FileSystems.open(uri) as handle:
            num_bytes = len(handle.read())
        doubled = self._model(self._tf.fill([1, 4], float(num_bytes)))["scores"].numpy()[0, 0]
        yield {"uri": uri, "num_bytes": num_bytes, "doubled": float(doubled), "worker_pid": os.getpid()}


def test_multiprocessing_workers_read_model_and_write_parquet(
    gcs: GcsEmulator, corpus: dict[str, bytes], tmp_path: Path
) -> None:
    tf = pytest.importorskip("tensorflow")
    gcs.bucket("models")
    _save_doubling_model(tf, "gs://models/for-workers/doubler")
    gcs.bucket("outputs")

    options = PipelineOptions(direct_running_mode="multi_processing", direct_num_workers=2)
    with beam.Pipeline(runner=FnApiRunner(), options=options) as pipeline:
        _ = (
            pipeline
            | "Match" >> fileio.MatchFiles("gs://corpus-bucket/corpus/**.wav")
            | "Paths" >> beam.Map(lambda metadata: metadata.path)
            | "Measure" >> beam.ParDo(MeasureWithBucketModel("gs://models/for-workers/doubler"))
            | "ToArrow" >> beam.Map(lambda row: pa.Table.from_pylist([row], schema=SIZES_SCHEMA))
            | "Write"
            >> beam.io.WriteToParquetBatched(
                "gs://outputs/sizes/part", schema=SIZES_SCHEMA, file_name_suffix=".parquet"
            )
        )

    written = FileSystems.match(["gs://outputs/sizes/part*.parquet"])[0].metadata_list
    assert written, "no Parquet shards in the bucket"
    tables = []
    for metadata in written:
        with FileSystems.open(metadata.path) as handle:
            tables.append(pq.read_table(handle))
    rows = pa.concat_tables(tables).to_pylist()

    expected = {uri: len(content) for uri, content in corpus.items() if uri.endswith(".wav")}
    assert {row["uri"]: row["num_bytes"] for row in rows} == expected
    assert all(row["doubled"] == 2.0 * row["num_bytes"] for row in rows)
    assert os.getpid() not in {row["worker_pid"] for row in rows}, "DoFn ran in the test process"
    # Beam's sink writes to a temp dir in the bucket and renames; nothing may be left behind.
    assert all("beam-temp" not in uri for uri in gcs.list_uris("gs://outputs/"))
