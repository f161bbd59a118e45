"""Which storage errors are worth another try: a filesystem's or a server's bad moment, not a missing or
forbidden file."""

from __future__ import annotations

import errno
import os

import pytest

import storage


@pytest.mark.parametrize("code", [errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.ENOTCONN])
def test_a_filesystem_fault_is_transient_and_named_by_its_errno(code):
    error = OSError(code, os.strerror(code), "/mnt/nfs/a.wav")
    assert storage.is_transient(error)
    assert storage.describe_fault(error) == f"storage error {errno.errorcode[code]} ({os.strerror(code)})"


def test_a_fault_wrapped_by_another_error_is_found():
    try:
        try:
            raise OSError(errno.ESTALE, "Stale file handle")
        except OSError as inner:
            raise RuntimeError("decoding stopped") from inner
    except RuntimeError as outer:
        assert storage.is_transient(outer)


@pytest.mark.parametrize("code", [errno.ENOENT, errno.EACCES, errno.EISDIR, errno.ENOSPC, errno.EROFS])
def test_a_missing_forbidden_or_full_target_is_not(code):
    assert not storage.is_transient(OSError(code, os.strerror(code), "/mnt/nfs/a.wav"))
