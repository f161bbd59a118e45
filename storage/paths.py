"""Paths and listing: what a path names (local or remote), joining, and what is stored below it.

Local paths are served by the OS, so a decoder process reading local files never imports Beam;
any path with a scheme (``gs://`` ...) goes through Beam's ``FileSystems``."""

from __future__ import annotations

import dataclasses
import os


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



def canonical_uri(path: str) -> str:
    """The one spelling of a path: a local file as an absolute, normalised path (however it was given:
    relative, ``./``, ``//``, a trailing slash, ``file://``); a remote URI as given, less a trailing
    slash. Symlinks are not resolved: a file is named where it was found."""
    if is_remote(path):
        return path.rstrip("/") if path.rstrip("/").count("/") > 2 else path
    absolute = os.path.normpath(os.path.abspath(local_path(path)))
    return "/" + absolute.lstrip("/")  # POSIX keeps a leading '//'; one file, one name
