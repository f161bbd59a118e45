"""Reading: local files through the OS, remote objects through transient failures."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import time
from collections.abc import Iterable
from typing import BinaryIO

from storage import retries
from storage.paths import _filesystems, is_remote, local_path, split_member_uri
from storage.retries import RetryPolicy, TransientIOError, _backoff, is_transient

_BLOCK = 1 << 20




def _cloud_errors() -> tuple[type[Exception], type[Exception]] | tuple[tuple, tuple]:
    try:  # present with apache-beam[gcp]
        from google.api_core.exceptions import Forbidden, NotFound
    except ImportError:  # pragma: no cover - Beam without the GCP extra
        return (), ()
    return NotFound, Forbidden


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
        self._fetch = _GCS_READ_CHUNK
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
                    self._raw = _open_remote(self._path, self._fetch)
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

    def fetch_at_most(self, size: int) -> None:
        """From now on a read fetches at most ``size`` bytes ahead (never more than the default
        8 MiB). A member in the middle of an archive needs its own bytes: read with the default, each
        member of a tar of small clips would download the 8 MiB that follow it."""
        self._fetch = max(1, min(size, _GCS_READ_CHUNK))
        if hasattr(self._raw, "_chunk_size"):  # google-cloud-storage's BlobReader reads it on each fetch
            self._raw._chunk_size = self._fetch

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


def _open_remote(path: str, chunk_size: int = _GCS_READ_CHUNK):
    """A reader of a remote object, with what it is missing as FileNotFoundError / PermissionError.
    A gs:// read fetches ``chunk_size`` bytes ahead.

    gs:// objects are read with google-cloud-storage's reader itself so that its own retries are
    bounded by this process's ``RetryPolicy`` (Beam's reader retries a download for two minutes
    whatever it was asked); other schemes through Beam's filesystems.
    """
    not_found, forbidden = _cloud_errors()
    try:
        if path.startswith("gs://"):
            from google.cloud.storage.retry import DEFAULT_RETRY

            bucket, _, name = path[len("gs://"):].partition("/")
            policy = retries.active_policy()
            per_attempt = max(1.0, policy.total_s / max(1, policy.attempts))
            reader = _gcs_client().bucket(bucket).blob(name).open(
                "rb", chunk_size=chunk_size, raw_download=True,
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
    PermissionError, whatever the filesystem. An archive member (``ARCHIVE#member``) is read in place;
    one that cannot be read raises ``storage.archives.ArchiveError``. Remote reads go on through
    transient failures (``RetryPolicy``) and raise TransientIOError when those outlast it."""
    if split_member_uri(path):  # ARCHIVE#member: read in place (storage.archives)
        from storage.archives import open_member

        return open_member(path)  # type: ignore[return-value]
    if not is_remote(path):
        return open(local_path(path), "rb")  # noqa: SIM115 - the caller closes it
    return _RetryingReader(path, retries.active_policy())  # type: ignore[return-value]


def size_of(reader) -> int:
    """The size of an open, seekable file (some readers' ``seek`` returns None), its position kept."""
    position = reader.tell()
    size = reader.seek(0, io.SEEK_END)
    size = reader.tell() if size is None else size
    reader.seek(position)
    return size


def read_bytes(path: str) -> bytes:
    with open_read(path) as f:
        return f.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def read_json(path: str):
    return json.loads(read_text(path))




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


