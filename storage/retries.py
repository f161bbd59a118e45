"""Transient storage errors, and how long a read keeps trying through them."""

from __future__ import annotations

import dataclasses
import errno
import os
import random

# --- permanent errors -------------------------------------------------------------------------------

class PermanentInputError(Exception):
    """An input (a file, an archive member) that cannot be read for a reason retrying will not change.

    ``kind`` is short and machine-readable, ``message`` one sentence for people; the file's row carries
    ``'kind: message'`` and the next run does not retry it."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message

    def __reduce__(self):  # keeps kind/message when pickled between Beam workers
        return (type(self), (self.kind, self.message))


# --- transient errors -------------------------------------------------------------------------------

class TransientIOError(OSError):
    """Storage kept failing in a way that usually passes (resets, timeouts, 429/5xx, short reads) for
    longer than the retry policy allows. A file that meets it is retried by the next run."""


_TRANSIENT_HTTP = {408, 429, 500, 502, 503, 504}
# What a local or mounted filesystem (NFS, SMB, gcsfuse) says when its disk, server or network fails
# under it: the file itself is not at fault, and a later read usually succeeds.
_TRANSIENT_ERRNOS = frozenset({errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.ENOTCONN})


def is_transient(error: BaseException) -> bool:
    """Whether retrying may help: connection resets and refusals, timeouts, HTTP 408/429/5xx, a body
    cut short, and a filesystem's EIO, ESTALE, ETIMEDOUT or ENOTCONN. Not found, permission denied and
    bad data are permanent. Looks through wrapped causes."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, FileNotFoundError | PermissionError | IsADirectoryError):
            return False
        if isinstance(error, TransientIOError | ConnectionError | TimeoutError):
            return True
        if isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS:
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


def describe_fault(error: BaseException) -> str:
    """One line naming a storage failure: the errno's name and text when the OS gave one
    ('storage error EIO (Input/output error)'), else the exception."""
    code = getattr(error, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        return f"storage error {errno.errorcode[code]} ({os.strerror(code)})"
    return f"storage error: {type(error).__name__}: {str(error)[:300]}"


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



def active_policy() -> RetryPolicy:
    """The policy this process's remote reads follow now."""
    return _policy


def _backoff(attempt: int, policy: RetryPolicy) -> float:
    return policy.first_wait_s * (2 ** attempt) * (0.5 + random.random())  # full jitter around 2^n

