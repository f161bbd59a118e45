"""The ground floor: every byte the product reads or writes goes through here (audio, manifests,
model files, run records and commits, training sets and heads), except the Parquet and text that
Beam's own sinks and sources read and write through Beam's ``FileSystems`` (which this package also
uses, so both see the same paths, credentials and ``STORAGE_EMULATOR_HOST``).

One module a section:

- ``paths``: what a path names, joining, listing and matching;
- ``archives``: the members of tar and zip archives, listed and read in place (``ARCHIVE#member``);
- ``tables``: the rows of Parquet tables of audio, read like archive members (``TABLE#row=N``);
- ``retries``: transient errors and how long reads keep trying through them;
- ``reads``: local files through the OS, remote objects through transient failures;
- ``writes``: writes, renames, deletes;
- ``conditional``: small objects changed only if nobody changed them first (leases, commits);
- ``model_cache``: local copies of remote model directories for TensorFlow;
- ``recent``: a small cache of the most recently used entries (footers, row groups, set-up DoFns);
- ``checks``: before any work, can this machine reach what it was asked to.

No other package chooses a filesystem, and this one imports nothing of the product.
"""

from storage.archives import ArchiveError, Member, list_members
from storage.checks import credentials_problem, probe_writable
from storage.conditional import create_exclusive, delete_versioned, read_versioned, write_versioned
from storage.model_cache import cache_dir, local_copy, local_output_dir
from storage.paths import (
    StoredFile,
    WalkItem,
    archive_kind,
    canonical_uri,
    escape_glob,
    exists,
    has_glob,
    is_dir,
    is_remote,
    is_table_row,
    join,
    list_files,
    list_names,
    local_path,
    match,
    member_uri,
    parent,
    split_member_uri,
    walk_local,
)
from storage.reads import SeekableReader, fingerprint, open_read, read_bytes, read_json, read_text
from storage.retries import (
    PermanentInputError,
    RetryPolicy,
    TransientIOError,
    describe_fault,
    is_transient,
    set_retry_policy,
)
from storage.tables import AUDIO_COLUMN, column_name_problem, columns_problem
from storage.writes import (
    delete,
    delete_tree,
    makedirs,
    open_write,
    rename,
    upload_tree,
    write_bytes,
    write_json,
    write_json_atomic,
    write_text,
)

__all__ = [
    "ArchiveError", "Member", "archive_kind", "list_members", "member_uri", "split_member_uri",
    "AUDIO_COLUMN", "column_name_problem", "columns_problem", "is_table_row",
    "PermanentInputError", "RetryPolicy", "SeekableReader", "StoredFile", "TransientIOError", "WalkItem",
    "escape_glob",
    "has_glob", "walk_local", "cache_dir", "canonical_uri",
    "create_exclusive", "credentials_problem", "delete", "delete_tree", "delete_versioned", "describe_fault",
    "exists", "fingerprint", "is_dir", "is_remote", "is_transient", "join", "list_files", "list_names",
    "local_copy", "local_output_dir", "local_path", "makedirs", "match", "open_read", "open_write", "parent",
    "probe_writable", "read_bytes", "read_json", "read_text", "read_versioned", "rename", "set_retry_policy",
    "upload_tree", "write_bytes", "write_json", "write_json_atomic", "write_text", "write_versioned",
]
