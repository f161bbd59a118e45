"""Paths and listing: what a path names (local or remote), joining, and what is stored below it.

Local paths are served by the OS, so a decoder process reading local files never imports Beam;
any path with a scheme (``gs://`` ...) goes through Beam's ``FileSystems``."""

from __future__ import annotations

import dataclasses
import errno
import os
import re
from collections.abc import Iterator

GLOB_CHARS = "*?["


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


def has_glob(path: str) -> bool:
    return any(c in GLOB_CHARS for c in path)


def escape_glob(path: str) -> str:
    """``path`` as a pattern that matches only itself: each of ``* ? [`` inside brackets, which Beam's
    ``match`` (and fnmatch) read as that one character."""
    return re.sub(r"([*?\[])", r"[\1]", path)


def exists(path: str) -> bool:
    """A file or a directory; on object stores, an object or a prefix with objects below it. The path
    is taken literally: ``[ ] * ?`` in it are characters of its name."""
    if not is_remote(path):
        return os.path.exists(local_path(path))
    fs = _filesystems()
    return fs.exists(path) or bool(fs.match([escape_glob(path.rstrip("/")) + "/**"],
                                            limits=[1])[0].metadata_list)


def is_dir(path: str) -> bool:
    """A local directory, or a remote prefix with objects below it that is not itself an object.

    Errors (no credentials, a missing bucket) propagate: a caller that cannot
    tell must not guess.
    """
    if not is_remote(path):
        return os.path.isdir(local_path(path))
    fs = _filesystems()
    literal = escape_glob(path.rstrip("/"))
    if not path.endswith("/") and fs.match([literal], limits=[1])[0].metadata_list:
        return False
    return bool(fs.match([literal + "/**"], limits=[1])[0].metadata_list)


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


FILE, DANGLING_LINK, LINKED_FOLDER = "file", "dangling_link", "linked_folder"


@dataclasses.dataclass(frozen=True)
class WalkItem:
    """What a local walk met: a file (with its ``stored`` size and time), a symlink whose target is
    missing (``reason`` says why), or a symlinked folder it did not follow."""

    kind: str
    path: str
    stored: StoredFile | None = None
    reason: str = ""


def walk_local(root: str, follow_symlinks: bool = False, max_depth: int | None = None) -> Iterator[WalkItem]:
    """Everything below a local folder, depth first in name order, lazily (a caller may stop at the
    first file), at most ``max_depth`` folders down. Symlinked folders are not entered unless
    ``follow_symlinks`` (as ``find`` does); entered, each folder is walked once by its device and
    inode, so a link to an ancestor ends."""
    seen: set[tuple[int, int]] = set()
    stack = [(local_path(root).rstrip("/") or "/", 0)]
    while stack:
        directory, depth = stack.pop()
        try:
            st = os.stat(directory)
            with os.scandir(directory) as listing:
                items = sorted(listing, key=lambda item: item.name)
        except OSError:  # removed or unreadable while listing: nothing below it to name
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        folders: list[str] = []
        deeper = max_depth is None or depth < max_depth
        for item in items:
            yield from _walk_item(item, follow_symlinks, folders if deeper else None)
        stack.extend((folder, depth + 1) for folder in reversed(folders))


def _walk_item(item: os.DirEntry, follow_symlinks: bool, folders: list[str] | None) -> Iterator[WalkItem]:
    """One entry of a folder; a folder to enter is appended to ``folders`` (None: too deep to enter)."""
    link = item.is_symlink()
    try:
        is_folder = item.is_dir()  # follows a link
    except OSError:
        is_folder = False
    if is_folder:
        if folders is None:
            return
        if link and not follow_symlinks:
            yield WalkItem(LINKED_FOLDER, item.path)
        else:
            folders.append(item.path)
        return
    try:
        st = item.stat()
    except OSError as error:
        if link:  # the link is there, its target is not (or it points at itself)
            target = os.readlink(item.path) if os.path.islink(item.path) else "?"
            why = "symlink loop" if error.errno == errno.ELOOP else "dangling symlink"
            yield WalkItem(DANGLING_LINK, item.path, reason=f"{why} to {target}")
        return  # else removed while listing (a run publishing its staging files)
    yield WalkItem(FILE, item.path, StoredFile(item.path, st.st_size, st.st_mtime))


def list_names(directory: str, missing_ok: bool = False) -> list[str]:
    """Names of the files directly inside ``directory`` (no recursion), sorted.  A local directory that
    is not there raises FileNotFoundError unless ``missing_ok``; on GCS a prefix is never missing."""
    if not is_remote(directory):
        local = local_path(directory)
        if missing_ok and not os.path.isdir(local):
            return []
        return sorted(n for n in os.listdir(local) if os.path.isfile(os.path.join(local, n)))
    prefix = directory.rstrip("/") + "/"
    return sorted({f.path[len(prefix):] for f in match(prefix + "*")} - {""})



# A Parquet table of audio is read like an archive: its rows are its members (storage.tables).
ARCHIVE_SUFFIXES = {".tar": "tar", ".tar.gz": "tgz", ".tgz": "tgz", ".zip": "zip", ".parquet": "parquet"}
MEMBER_SEPARATOR = "#"


def archive_kind(path: str) -> str | None:
    """'tar', 'tgz', 'zip' or 'parquet' (a table of audio) for a path whose name says it is one of those,
    else None."""
    lowered = path.lower()
    return next((kind for suffix, kind in ARCHIVE_SUFFIXES.items() if lowered.endswith(suffix)), None)


def member_uri(archive: str, member: str) -> str:
    return f"{archive}{MEMBER_SEPARATOR}{member}"


def split_member_uri(uri: str) -> tuple[str, str] | None:
    """(archive, member) for ``ARCHIVE#member/path``, else None. The archive is the text before the
    first '#' that follows an archive's name; a local path that exists is a file, whatever its name."""
    start = 0
    while (cut := uri.find(MEMBER_SEPARATOR, start)) >= 0:
        if archive_kind(uri[:cut]):
            if not is_remote(uri) and os.path.lexists(local_path(uri)):
                return None
            return uri[:cut], uri[cut + 1:]
        start = cut + 1
    return None


def is_table_row(uri: str) -> bool:
    """``TABLE.parquet#ROW``: a row of a table of audio (storage.tables), not a file or archive member."""
    member = split_member_uri(uri)
    return member is not None and archive_kind(member[0]) == "parquet"


def canonical_uri(path: str) -> str:
    """The one spelling of a path: a local file as an absolute, normalised path (however it was given:
    relative, ``./``, ``//``, a trailing slash, ``file://``); a remote URI as given, less a trailing
    slash; an archive member as its canonical archive, '#', and the member's name unchanged. Symlinks
    are not resolved: a file is named where it was found."""
    if member := split_member_uri(path):
        return member_uri(canonical_uri(member[0]), member[1])
    if is_remote(path):
        return path.rstrip("/") if path.rstrip("/").count("/") > 2 else path
    absolute = os.path.normpath(os.path.abspath(local_path(path)))
    return "/" + absolute.lstrip("/")  # POSIX keeps a leading '//'; one file, one name
