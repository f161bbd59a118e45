"""Local copies of remote model directories: TensorFlow only ever opens local files.

TensorFlow's own gs:// client honours neither ``STORAGE_EMULATOR_HOST`` nor the pipeline's
credentials, so model directories on a bucket are copied to a local cache first."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator

from storage.paths import is_remote, list_files, local_path
from storage.reads import open_read
from storage.writes import makedirs, upload_tree

_BLOCK = 1 << 20



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
