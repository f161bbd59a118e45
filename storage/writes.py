"""Writing, renaming and deleting, locally and on object stores."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Sequence
from typing import BinaryIO

from storage.paths import _filesystems, exists, is_remote, join, local_path, parent

_BLOCK = 1 << 20



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
    crash_point(f"renaming {len(sources)} file(s) to {destinations[0]}")
    for destination in destinations:
        makedirs(parent(destination))
    if all(not is_remote(p) for p in [*sources, *destinations]):
        for source, destination in zip(sources, destinations):
            os.replace(local_path(source), local_path(destination))
        return
    _filesystems().rename(list(sources), list(destinations))


def delete(paths: Sequence[str]) -> None:
    """Deletes files; missing ones are ignored."""
    if paths:
        crash_point(f"deleting {paths[0]}")
    for path in paths:
        if not is_remote(path):
            with contextlib.suppress(FileNotFoundError):
                os.remove(local_path(path))
            continue
        if exists(path):
            with contextlib.suppress(FileNotFoundError):  # deleted by another process meanwhile
                _delete_remote(path)


def _delete_remote(path: str) -> None:
    from apache_beam.io.filesystem import BeamIOError

    try:
        _filesystems().delete([path])
    except BeamIOError as e:
        if not exists(path):  # gone: what a delete wanted
            raise FileNotFoundError(path) from e
        raise


def delete_tree(path: str) -> None:
    """Deletes a file or everything below a directory or prefix; nothing there is fine."""
    crash_point(f"deleting {path}")
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




def write_json_atomic(path: str, value) -> None:
    """Writes JSON that a reader sees whole or not at all: an object store's upload is atomic; a local
    file is written beside its name, flushed, then renamed over it."""
    data = json.dumps(value, indent=2, sort_keys=True).encode()
    crash_point(f"writing {path}")
    if is_remote(path):
        write_bytes(path, data, "application/json")
        return
    local = local_path(path)
    staging = write_beside(local, data)
    try:
        os.replace(staging, local)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(staging)


def write_beside(local: str, data: bytes) -> str:
    """Writes ``data`` to a new temporary file beside the local path ``local``, flushed to disk; returns
    its path, for the caller to rename or link into place (and remove)."""
    makedirs(parent(local))
    staging = f"{local}.{os.getpid()}-{os.urandom(4).hex()}.tmp"
    with open(staging, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return staging


# --- crash points ---------------------------------------------------------------------------------------
#
# AUDIO_TAGGER_KILL_AT=K makes this process SIGKILL itself at its K-th change of stored state (a rename, an
# exclusive create, an atomic record write, a delete), before the change happens. The crash-point tests
# use it to stop a run at each step that matters and check what the next run makes of it.

_KILL_AT_VARIABLE = "AUDIO_TAGGER_KILL_AT"
_changes = 0


def crash_point(what: str) -> None:
    global _changes
    kill_at = os.environ.get(_KILL_AT_VARIABLE)
    if not kill_at:
        return
    _changes += 1
    if _changes == int(kill_at):
        import signal
        import sys

        print(f"crash point {_changes}: killed before {what}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
