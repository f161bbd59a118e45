"""Every byte the product reads or writes goes through here: audio, manifests, model files, Parquet,
run records, training sets and heads.

Local paths are served by the OS (so a decoder process reading local files
never imports Beam); any path with a scheme (``gs://`` ...) goes through
Beam's ``FileSystems``, which honours ``STORAGE_EMULATOR_HOST`` and the
credentials the pipeline uses.  TensorFlow's own gs:// client does neither,
so model directories on a bucket are copied to a local cache
(:func:`local_copy`) and TensorFlow only ever opens local files.
No other module chooses a filesystem.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import BinaryIO

_BLOCK = 1 << 20


@dataclasses.dataclass(frozen=True)
class StoredFile:
    """A file as listed: its path, size and modification time (seconds since the epoch)."""

    path: str
    size_bytes: int
    last_modified: float | None = None


def is_remote(path: str) -> bool:
    """Beam's rule: a path without a scheme (or with ``file://``) is a local file."""
    return "://" in path and not path.startswith("file://")


def local_path(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def join(base: str, *parts: str) -> str:
    """Joins with '/', which local paths and object-store URIs both accept."""
    return "/".join([base.rstrip("/") or base, *(p.strip("/") for p in parts if p)])


def parent(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[0]


def _filesystems():
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def _cloud_errors() -> tuple[type[Exception], type[Exception]] | tuple[tuple, tuple]:
    try:  # present with apache-beam[gcp]
        from google.api_core.exceptions import Forbidden, NotFound
    except ImportError:  # pragma: no cover - Beam without the GCP extra
        return (), ()
    return NotFound, Forbidden


# --- before any work: can this machine reach what it was asked to? -----------------------------------

def _on_google_cloud() -> bool:
    """A Google Cloud VM (Dataflow workers, GCE, GKE), told by its DMI name: no network probe."""
    try:
        with open("/sys/class/dmi/id/product_name") as f:
            return "Google" in f.read()
    except OSError:
        return False


def credentials_problem() -> str | None:
    """Why gs:// paths cannot be reached from here (one sentence with the fix), or None.

    Checked before any work: without credentials Beam's own lookup retries
    for minutes before it gives up.
    """
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return None  # a GCS-protocol endpoint that needs no Google credentials
    named = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if named:
        if not os.path.isfile(named):
            return (f"GOOGLE_APPLICATION_CREDENTIALS names {named}, which does not exist: point it at a "
                    "service-account key file or unset it and run `gcloud auth application-default login`")
        return None
    config = os.environ.get("CLOUDSDK_CONFIG") or os.path.join(os.path.expanduser("~"), ".config", "gcloud")
    if os.path.isfile(os.path.join(config, "application_default_credentials.json")) or _on_google_cloud():
        return None
    return ("no Google Cloud credentials on this machine: run `gcloud auth application-default login`, "
            "or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file")


def probe_writable(directory: str) -> None:
    """Writes and removes a small object in ``directory``; raises what the filesystem raised."""
    probe = join(directory, f"_write_probe-{os.getpid()}-{os.urandom(4).hex()}")
    write_bytes(probe, b"probe")
    delete([probe])


# --- transient errors -------------------------------------------------------------------------------

class TransientIOError(OSError):
    """Storage kept failing in a way that usually passes (resets, timeouts, 429/5xx, short reads) for
    longer than the retry policy allows. A file that meets it is retried by the next run."""


_TRANSIENT_HTTP = {408, 429, 500, 502, 503, 504}


def is_transient(error: BaseException) -> bool:
    """Whether retrying may help: connection resets and refusals, timeouts, HTTP 408/429/5xx, a body
    cut short. Not found, permission denied and bad data are permanent. Looks through wrapped causes."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, FileNotFoundError | PermissionError | IsADirectoryError):
            return False
        if isinstance(error, TransientIOError | ConnectionError | TimeoutError):
            return True
        status = getattr(error, "code", None) or getattr(error, "status_code", None)
        response = getattr(error, "response", None)
        status = status or getattr(response, "status_code", None) or getattr(response, "status", None)
        if isinstance(status, int) and status in _TRANSIENT_HTTP:
            return True
        if type(error).__name__ in ("IncompleteRead", "RemoteDisconnected", "ProtocolError", "ReadTimeout",
                                    "ReadTimeoutError", "ChunkedEncodingError", "ConnectTimeout",
                                    "DataCorruption", "RetryError"):
            return True
        details = getattr(error, "exception_details", None)  # Beam's BeamIOError wraps per-path errors
        if isinstance(details, dict) and details:
            return any(isinstance(e, BaseException) and is_transient(e) for e in details.values())
        error = error.__cause__ or error.__context__
    return False


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How long a read keeps trying through transient errors, beyond the cloud client's own retries."""

    attempts: int = 6
    total_s: float = 120.0
    first_wait_s: float = 0.5


_POLICY_VARIABLE = "AUDIO_TAGGER_IO_RETRY"  # 'attempts,total_s': how child processes inherit it


def _policy_from_environment() -> RetryPolicy:
    try:
        attempts, total_s = os.environ[_POLICY_VARIABLE].split(",")
        return RetryPolicy(int(attempts), float(total_s))
    except (KeyError, ValueError):
        return RetryPolicy()


_policy = _policy_from_environment()


def set_retry_policy(policy: RetryPolicy) -> None:
    """The policy of this process's remote reads and of the processes it starts after this (workers set
    it from the job's options before their decoder processes start)."""
    global _policy
    _policy = policy
    os.environ[_POLICY_VARIABLE] = f"{policy.attempts},{policy.total_s}"


def retry_policy() -> RetryPolicy:
    return _policy


def _backoff(attempt: int, policy: RetryPolicy) -> float:
    return policy.first_wait_s * (2 ** attempt) * (0.5 + random.random())  # full jitter around 2^n


class SeekableReader(io.RawIOBase):
    """A read-only, seekable byte source of known ``size`` over another reader (``_raw``); subclasses
    say how to move the raw reader (``_seek_raw``) and how to read (``read``)."""

    def __init__(self, size: int = 0):
        super().__init__()
        self.size = size
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}[whence]
        self._position = max(0, base + offset)
        self._seek_raw(self._position)
        return self._position

    def _seek_raw(self, position: int) -> None:
        self._raw.seek(position)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        return self.read(-1)

    def close(self) -> None:
        if not self.closed and getattr(self, "_raw", None) is not None:
            self._raw.close()
        super().close()


class _RetryingReader(SeekableReader):
    """A remote object read through transient failures: a failed or short read reopens the object and
    continues at the byte offset it had reached."""

    def __init__(self, path: str, policy: RetryPolicy):
        super().__init__()
        self._path, self._policy = path, policy
        self._raw = None
        self._raw = self._with_retries(lambda: _open_remote(path))
        self.size = self._with_retries(self._measure)

    def _measure(self) -> int:
        size = self._raw.seek(0, io.SEEK_END)
        size = self._raw.tell() if size is None else size
        self._raw.seek(self._position)
        return size

    def _with_retries(self, action):
        started = time.monotonic()
        last: BaseException | None = None
        for attempt in range(max(1, self._policy.attempts)):
            if attempt:
                time.sleep(_backoff(attempt - 1, self._policy))
            try:
                if last is not None:  # the connection broke: a fresh one, at the offset reached
                    with contextlib.suppress(Exception):
                        self._raw.close()
                    self._raw = _open_remote(self._path)
                    self._raw.seek(self._position)
                return action()
            except Exception as error:
                if not is_transient(error):
                    raise
                last = error
            if time.monotonic() - started + _backoff(attempt, self._policy) > self._policy.total_s:
                break
        raise TransientIOError(f"{self._path}: {type(last).__name__}: {str(last)[:200]} (gave up after "
                               f"{attempt + 1} attempts in {time.monotonic() - started:.0f} s)") from last

    def _seek_raw(self, position: int) -> None:
        self._with_retries(lambda: self._raw.seek(position))

    def read(self, size: int = -1) -> bytes:
        left = max(0, self.size - self._position)
        wanted = left if size is None or size < 0 else min(size, left)

        def attempt() -> bytes:
            data = self._raw.read(wanted)
            if len(data) < wanted:  # the object is longer than what arrived: a cut connection
                raise TransientIOError(f"{self._path}: read {len(data)} of {wanted} bytes at "
                                       f"{self._position} of {self.size}")
            return data

        data = self._with_retries(attempt) if wanted else b""
        self._position += len(data)
        return data


# --- reading ---------------------------------------------------------------------------------------

_GCS_READ_CHUNK = 8 << 20


@functools.lru_cache(maxsize=1)
def _gcs_client():
    from google.cloud import storage as gcs

    return gcs.Client()  # honours STORAGE_EMULATOR_HOST, like Beam's own client


def _open_remote(path: str):
    """A reader of a remote object, with what it is missing as FileNotFoundError / PermissionError.

    gs:// objects are read with google-cloud-storage's reader itself so that its own retries are
    bounded by this process's ``RetryPolicy`` (Beam's reader retries a download for two minutes
    whatever it was asked); other schemes through Beam's filesystems.
    """
    not_found, forbidden = _cloud_errors()
    try:
        if path.startswith("gs://"):
            from google.cloud.storage.retry import DEFAULT_RETRY

            bucket, _, name = path[len("gs://"):].partition("/")
            per_attempt = max(1.0, _policy.total_s / max(1, _policy.attempts))
            reader = _gcs_client().bucket(bucket).blob(name).open(
                "rb", chunk_size=_GCS_READ_CHUNK, raw_download=True,
                retry=DEFAULT_RETRY.with_deadline(per_attempt))
            reader.seek(0, io.SEEK_END)  # fetches the object's metadata: a missing one fails here
            reader.seek(0)
            return reader
        from apache_beam.io.filesystem import CompressionTypes

        # Compression off: Beam's AUTO would gunzip a '.gz' name, and codecs compress themselves.
        return _filesystems().open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except not_found as error:
        raise FileNotFoundError(f"{path}: {error}") from error
    except forbidden as error:
        raise PermissionError(f"{path}: {error}") from error


def open_read(path: str) -> BinaryIO:
    """A binary, seekable reader; a missing object raises FileNotFoundError, a forbidden one
    PermissionError, whatever the filesystem. Remote reads go on through transient failures
    (``RetryPolicy``) and raise TransientIOError when those outlast it."""
    if not is_remote(path):
        return open(local_path(path), "rb")  # noqa: SIM115 - the caller closes it
    return _RetryingReader(path, _policy)  # type: ignore[return-value]


def read_bytes(path: str) -> bytes:
    with open_read(path) as f:
        return f.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def read_json(path: str):
    return json.loads(read_text(path))


def exists(path: str) -> bool:
    """A file or a directory; on object stores, an object or a prefix with objects below it."""
    if not is_remote(path):
        return os.path.exists(local_path(path))
    fs = _filesystems()
    return fs.exists(path) or bool(fs.match([path.rstrip("/") + "/**"], limits=[1])[0].metadata_list)


def is_dir(path: str) -> bool:
    """A local directory, or a remote prefix with objects below it that is not itself an object.

    Errors (no credentials, a missing bucket) propagate: a caller that cannot
    tell must not guess.
    """
    if not is_remote(path):
        return os.path.isdir(local_path(path))
    fs = _filesystems()
    if not path.endswith("/") and fs.match([path], limits=[1])[0].metadata_list:
        return False
    return bool(fs.match([path.rstrip("/") + "/**"], limits=[1])[0].metadata_list)


def match(pattern: str, limit: int | None = None) -> list[StoredFile]:
    """Files matching a glob (``**`` crosses directories), sorted by path; an object store's directory
    markers (names ending in '/') are not files."""
    fs = _filesystems()
    result = fs.match([pattern], limits=[limit] if limit else None)[0]
    return sorted((StoredFile(m.path, int(m.size_in_bytes or 0), m.last_updated_in_seconds)
                   for m in result.metadata_list if not m.path.endswith("/")), key=lambda f: f.path)


def list_files(root: str) -> list[StoredFile]:
    """Every file below ``root`` (recursively), or ``root`` itself if it is a file; sorted by path."""
    if is_remote(root):
        return match(root.rstrip("/") + "/**")
    local = local_path(root)
    if os.path.isfile(local):
        st = os.stat(local)
        return [StoredFile(local, st.st_size, st.st_mtime)]
    if not os.path.isdir(local):
        raise FileNotFoundError(f"no such directory: {root}")
    found = []
    for directory, _subdirs, names in os.walk(local):
        for name in names:
            path = os.path.join(directory, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:  # removed while listing (a run publishing its staging files)
                continue
            found.append(StoredFile(path, st.st_size, st.st_mtime))
    return sorted(found, key=lambda f: f.path)


def list_names(directory: str) -> list[str]:
    """Names of the files directly inside ``directory`` (no recursion), sorted."""
    if not is_remote(directory):
        local = local_path(directory)
        return sorted(n for n in os.listdir(local) if os.path.isfile(os.path.join(local, n)))
    prefix = directory.rstrip("/") + "/"
    return sorted({f.path[len(prefix):] for f in match(prefix + "*")} - {""})


def fingerprint(paths: Iterable[str], with_names: bool = False, extra: bytes = b"") -> str:
    """SHA-256 hex digest of the bytes of ``paths`` in the given order (each preceded by its file
    name when ``with_names``), then of ``extra``.

    The one way the product names a model version: the same weights give the
    same fingerprint wherever they are stored.
    """
    digest = hashlib.sha256()
    for path in paths:
        if with_names:
            digest.update(path.rstrip("/").rsplit("/", 1)[-1].encode("utf-8"))
        with open_read(path) as f:
            while block := f.read(_BLOCK):
                digest.update(block)
    digest.update(extra)
    return digest.hexdigest()


# --- writing ---------------------------------------------------------------------------------------

def makedirs(path: str) -> None:
    """Local filesystems need directories before a write or rename; object stores have none."""
    if not is_remote(path):
        os.makedirs(local_path(path), exist_ok=True)


def open_write(path: str, mime_type: str = "application/octet-stream") -> BinaryIO:
    """A binary writer; parent directories are created. The object appears when it is closed."""
    makedirs(parent(path))
    if not is_remote(path):
        return open(local_path(path), "wb")  # noqa: SIM115 - the caller closes it
    return _filesystems().create(path, mime_type=mime_type)


def write_bytes(path: str, data: bytes, mime_type: str = "application/octet-stream") -> None:
    with open_write(path, mime_type) as f:
        f.write(data)


def write_text(path: str, text: str, mime_type: str = "text/plain") -> None:
    write_bytes(path, text.encode("utf-8"), mime_type)


def write_json(path: str, value) -> None:
    write_bytes(path, json.dumps(value, indent=2, sort_keys=True).encode(), "application/json")


def rename(sources: Sequence[str], destinations: Sequence[str]) -> None:
    if not sources:
        return
    for destination in destinations:
        makedirs(parent(destination))
    if all(not is_remote(p) for p in [*sources, *destinations]):
        for source, destination in zip(sources, destinations):
            os.replace(local_path(source), local_path(destination))
        return
    _filesystems().rename(list(sources), list(destinations))


def delete(paths: Sequence[str]) -> None:
    """Deletes files; missing ones are ignored."""
    for path in paths:
        if not is_remote(path):
            with contextlib.suppress(FileNotFoundError):
                os.remove(local_path(path))
            continue
        if exists(path):
            _filesystems().delete([path])


def delete_tree(path: str) -> None:
    """Deletes a file or everything below a directory or prefix; nothing there is fine."""
    if not is_remote(path):
        local = local_path(path)
        if os.path.isdir(local):
            shutil.rmtree(local, ignore_errors=True)
        else:
            delete([local])
        return
    fs = _filesystems()
    if fs.exists(path):
        fs.delete([path])
    if fs.match([path.rstrip("/") + "/**"], limits=[1])[0].metadata_list:
        fs.delete([path.rstrip("/") + "/"])  # Beam's object stores delete a prefix given with '/'


def upload_tree(local_dir: str, destination: str) -> None:
    """Copies a local directory to ``destination`` (any filesystem), file by file."""
    for directory, _subdirs, names in os.walk(local_dir):
        for name in names:
            source = os.path.join(directory, name)
            relative = os.path.relpath(source, local_dir).replace(os.sep, "/")
            with open(source, "rb") as src, open_write(join(destination, relative)) as dst:
                shutil.copyfileobj(src, dst, _BLOCK)


# --- small objects changed only if nobody else changed them first (leases, locks) -------------------
#
# A version names one state of an object: its generation on GCS; locally its inode, size and
# modification time, compared under an flock so that read-compare-write is atomic between the
# processes of one machine.

def _gcs_blob(path: str):
    from google.cloud import storage as gcs

    bucket, _, name = path[len("gs://"):].partition("/")
    return gcs.Client().bucket(bucket).blob(name)


def _local_version(path: str) -> str | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}"


@contextlib.contextmanager
def _local_guard(path: str) -> Iterator[None]:
    import fcntl

    makedirs(parent(path))
    with open(local_path(path) + ".guard", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)


def read_versioned(path: str) -> tuple[bytes, str] | None:
    """The object's bytes and version; None when there is none."""
    if path.startswith("gs://"):
        from google.api_core.exceptions import NotFound, PreconditionFailed

        blob = _gcs_blob(path)
        try:
            blob.reload()  # its generation, then exactly that generation's bytes
            generation = blob.generation
            return blob.download_as_bytes(if_generation_match=generation), str(generation)
        except (NotFound, PreconditionFailed):
            return None  # gone, or replaced between the two calls: the caller reads again
    local = local_path(path)
    with _local_guard(local):
        version = _local_version(local)
        if version is None:
            return None
        with open(local, "rb") as f:
            return f.read(), version


def write_versioned(path: str, data: bytes, version: str | None) -> bool:
    """Writes ``data`` only if the object is still at ``version`` (None: only if there is no object).
    Returns whether it was written; False means somebody else changed it first."""
    if path.startswith("gs://"):
        return _gcs_conditionally(lambda: _gcs_blob(path).upload_from_string(
            data, if_generation_match=int(version or 0)))

    def replace(local: str) -> None:
        staging = f"{local}.{os.getpid()}.tmp"
        with open(staging, "wb") as f:
            f.write(data)
        os.replace(staging, local)

    return _locally_conditionally(path, version, replace)


def delete_versioned(path: str, version: str) -> bool:
    """Deletes the object only if it is still at ``version``; returns whether it did."""
    if path.startswith("gs://"):
        return _gcs_conditionally(lambda: _gcs_blob(path).delete(if_generation_match=int(version)))
    return _locally_conditionally(path, version, os.remove)


def _gcs_conditionally(change) -> bool:
    """Runs a generation-matched change; False when GCS refused it (changed or gone meanwhile)."""
    from google.api_core.exceptions import NotFound, PreconditionFailed

    try:
        change()
    except (PreconditionFailed, NotFound):
        return False
    return True


def _locally_conditionally(path: str, version: str | None, change) -> bool:
    local = local_path(path)
    with _local_guard(local):
        if _local_version(local) != version:
            return False
        change(local)
        return True


# --- local copies of remote model directories -------------------------------------------------------

def cache_dir() -> str:
    """Where remote model directories are copied; shared by all processes of a machine."""
    return os.environ.get("AUDIO_TAGGER_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "audio-tagger", "models")


def local_copy(path: str) -> str:
    """``path`` as a local path: itself when local; a remote file or directory copied once into the
    cache, keyed by its listing (names, sizes and times: a re-uploaded model is copied again).

    The copy is made in a temporary directory and renamed into place, so
    processes of one machine that race share one complete copy and none ever
    loads a half-written one.
    """
    if not is_remote(path):
        return local_path(path)
    listing = list_files(path)
    if not listing:
        raise FileNotFoundError(f"nothing at {path}")
    root = path.rstrip("/")
    key = hashlib.sha256("\n".join(
        f"{f.path}|{f.size_bytes}|{f.last_modified}" for f in listing).encode()).hexdigest()[:24]
    name = root.rsplit("/", 1)[-1]
    target = os.path.join(cache_dir(), key, name)
    if os.path.exists(target):
        return target
    os.makedirs(os.path.dirname(target), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".partial-", dir=os.path.dirname(target))
    try:
        single = len(listing) == 1 and listing[0].path == root
        for stored in listing:
            relative = name if single else os.path.join(name, stored.path[len(root) + 1:])
            out = os.path.join(staging, relative)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with open_read(stored.path) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, _BLOCK)
        with contextlib.suppress(OSError):  # another process won the race: use its copy
            os.rename(os.path.join(staging, name), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@contextlib.contextmanager
def local_output_dir(destination: str) -> Iterator[str]:
    """A local directory to write into; on success its files are uploaded to ``destination``
    when that is remote (TensorFlow writers then never reach an object store themselves)."""
    if not is_remote(destination):
        makedirs(destination)
        yield local_path(destination)
        return
    with tempfile.TemporaryDirectory(prefix="audio-tagger-out-") as scratch:
        yield scratch
        upload_tree(scratch, destination)
