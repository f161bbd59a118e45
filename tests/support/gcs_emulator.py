"""A real GCS server for tests: ``gcp-storage-emulator`` on 127.0.0.1, plus what clients need.

The session fixture ``gcs`` starts the emulator in a child process
(``tests/support/gcs_emulator_process.py``), writes a throwaway ``authorized_user``
credentials file whose token never expires (without it every process spends
~25 s probing for credentials), and sets in ``os.environ`` for the rest of the
session (restored at the end):

- ``STORAGE_EMULATOR_HOST``, ``GOOGLE_CLOUD_PROJECT``, ``GOOGLE_APPLICATION_CREDENTIALS``:
  google-cloud-storage, and therefore Beam's ``gcsio``, talk to the emulator.
- ``https_proxy``, ``no_proxy``, ``CURL_CA_BUNDLE``, ``GOOGLE_AUTH_TOKEN_FOR_TESTING``:
  TensorFlow's own ``gs://`` client (hard-wired to ``www.googleapis.com``) reaches
  the emulator through the local relay in ``tests/support/googleapis_relay.py``.

Worker processes need the same variables: pass ``gcs.env`` (or ``gcs.worker_env()``)
to any subprocess (Beam's multi_processing workers inherit os.environ).  A process
with none of them tries the real service and fails only after ~2 minutes of
retries; one without the credentials file waits ~25 s for the metadata server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from google.api_core import exceptions as google_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

REPO_ROOT = Path(__file__).resolve().parents[2]
EMULATOR_PROJECT = "audio-tagger-test"
_STARTUP_TIMEOUT_S = 60.0


def split_gs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ``('bucket', 'a/b')``."""
    if not uri.startswith("gs://"):
        raise ValueError(f"not a gs:// URI: {uri!r}")
    bucket, _, name = uri[len("gs://") :].partition("/")
    return bucket, name


def write_throwaway_credentials(path: Path) -> Path:
    """An ``authorized_user`` file with a token that is already valid until 2099.

    google-auth accepts it without any network call, so neither the metadata
    server probe nor a token refresh happens.
    """
    path.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "emulator-client",
                "client_secret": "emulator-secret",
                "refresh_token": "emulator-refresh-token",
                "token": "emulator-token",
                "expiry": "2099-01-01T00:00:00Z",
            }
        )
    )
    return path


@dataclasses.dataclass
class GcsEmulator:
    """A running emulator and the helpers tests use to put data in it and read it back."""

    endpoint: str  # http://127.0.0.1:PORT
    relay_url: str  # https_proxy for TensorFlow's gs:// client
    project: str
    credentials_file: Path
    ca_bundle: Path
    client: storage.Client  # bound to the endpoint explicitly; works without os.environ
    startup_s: float  # from spawning the process to both servers listening

    @property
    def env(self) -> dict[str, str]:
        """Variables every process that touches gs:// needs (tests, Beam workers, TF)."""
        no_proxy = "127.0.0.1,localhost"
        return {
            "STORAGE_EMULATOR_HOST": self.endpoint,
            "GOOGLE_CLOUD_PROJECT": self.project,
            "GOOGLE_APPLICATION_CREDENTIALS": str(self.credentials_file),
            "https_proxy": self.relay_url,
            "no_proxy": no_proxy,
            "NO_PROXY": no_proxy,
            "CURL_CA_BUNDLE": str(self.ca_bundle),
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator-token",
            # TF retries failed GCS calls for minutes by default; a test should fail fast.
            "GCS_RETRY_CONFIG_MAX_RETRIES": "2",
        }

    def worker_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """A complete environment for a subprocess: ``base`` (default os.environ) plus ``env``."""
        return {**(os.environ if base is None else base), **self.env}

    def bucket(self, name: str) -> str:
        """Creates bucket ``name`` if needed; returns ``gs://name``."""
        with contextlib.suppress(google_exceptions.Conflict):  # already there
            self.client.create_bucket(name)
        return f"gs://{name}"

    def upload_file(self, local: Path | str, uri: str) -> str:
        bucket, name = split_gs_uri(uri)
        self.client.bucket(bucket).blob(name).upload_from_filename(str(local))
        return uri

    def upload_dir(self, local: Path | str, prefix_uri: str) -> list[str]:
        """Uploads every file under ``local`` to ``prefix_uri/<relative path>``; returns the URIs."""
        local = Path(local)
        prefix = prefix_uri.rstrip("/")
        uris = []
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            uris.append(self.upload_file(path, f"{prefix}/{path.relative_to(local).as_posix()}"))
        return uris

    def read_bytes(self, uri: str) -> bytes:
        bucket, name = split_gs_uri(uri)
        return self.client.bucket(bucket).blob(name).download_as_bytes()

    def list_uris(self, prefix_uri: str) -> list[str]:
        bucket, prefix = split_gs_uri(prefix_uri)
        return sorted(f"gs://{bucket}/{blob.name}" for blob in self.client.list_blobs(bucket, prefix=prefix))


def _read_ports(process: subprocess.Popen[str], timeout_s: float) -> dict[str, int]:
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], timeout_s)
    line = process.stdout.readline() if readable else ""
    if not line:
        process.kill()
        raise RuntimeError(f"GCS emulator did not start in {timeout_s:.0f} s (exit code {process.poll()})")
    return json.loads(line)


@contextlib.contextmanager
def running_gcs_emulator(workdir: Path) -> Iterator[GcsEmulator]:
    """Starts the emulator process, yields a client for it, and stops it on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.gcs_emulator_process", "--workdir", str(workdir)],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ports = _read_ports(process, _STARTUP_TIMEOUT_S)
        startup_s = time.perf_counter() - started
        endpoint = f"http://127.0.0.1:{ports['emulator_port']}"
        emulator = GcsEmulator(
            endpoint=endpoint,
            relay_url=f"http://127.0.0.1:{ports['relay_port']}",
            project=EMULATOR_PROJECT,
            credentials_file=write_throwaway_credentials(workdir / "credentials.json"),
            ca_bundle=workdir / "relay-ca.pem",
            client=storage.Client(
                project=EMULATOR_PROJECT,
                credentials=AnonymousCredentials(),
                client_options={"api_endpoint": endpoint},
            ),
            startup_s=startup_s,
        )
        yield emulator
    finally:
        if process.stdin is not None:
            process.stdin.close()  # the child serves until its stdin closes
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def environment(overrides: Mapping[str, str]) -> Iterator[None]:
    """Sets ``overrides`` in os.environ and restores the previous values afterwards."""
    previous = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsEmulator]:
    """The session's GCS emulator, with its environment set in os.environ until the session ends."""
    with running_gcs_emulator(tmp_path_factory.mktemp("gcs-emulator")) as emulator, environment(emulator.env):
        yield emulator
