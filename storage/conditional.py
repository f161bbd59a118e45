"""Small objects changed only if nobody else changed them first (leases, locks, commits).

A version names one state of an object: its generation on GCS; locally its inode, size and
modification time, compared under an flock so that read-compare-write is atomic between the
processes of one machine."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from storage.paths import local_path, parent
from storage.writes import crash_point, makedirs, write_beside


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




def create_exclusive(path: str, data: bytes) -> bool:
    """Creates the object only if there is none, whole or not at all; returns whether this call created
    it. On GCS a generation-0 precondition; locally a hard link of a complete temporary file, which
    fails when the name exists (atomic on every POSIX filesystem, NFS included)."""
    crash_point(f"creating {path}")
    if path.startswith("gs://"):
        return _gcs_conditionally(lambda: _gcs_blob(path).upload_from_string(data, if_generation_match=0))
    staging = write_beside(local_path(path), data)
    try:
        os.link(staging, local_path(path))
        return True
    except FileExistsError:
        return False
    finally:
        os.remove(staging)
