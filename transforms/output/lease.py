"""One run at a time per OUT_DIR: a lease object created only if absent, renewed while the run works.

``OUT_DIR/_lease.json`` names the run that holds the output, when it started
and when it last showed signs of life.  A run takes the lease before it writes
anything; a second run started on the same output finds it held and yields
(``OutputBusyError`` names the holder).  The holder renews it while it works (the
driver while it waits, and the workers as they process, so it holds on
Dataflow where no driver stays alive); a lease not renewed for ``ttl_s`` is
stale: its holder was killed (SIGKILL, a preempted VM, a cancelled job), and
the next run takes it over; a holder whose process is gone from this very host
is taken over at once.  Taking over fences the old holder out of the commit log
(``transforms.output.commit_log``), so it cannot publish even if it wakes up
mid-publish; the final step of a run commits at the number its lease reserved,
then releases the lease.  Every change is conditional on the
version that was read (GCS generation match; locally an flock), so two runs
can never both believe they hold it.  docs/concurrency.md says why.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time

import storage
from transforms.output import commit_log
from transforms.output.layout import OutputLayout

_log = logging.getLogger(__name__)

DEFAULT_TTL_S = 600.0


class OutputBusyError(Exception):
    """Another live run holds the output; ``str(e)`` names it, for the user."""

    def __init__(self, out_dir: str, holder: dict):
        self.holder = holder
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder.get("started_at", 0)))
        seen = max(0.0, time.time() - holder.get("renewed_at", 0))
        super().__init__(
            f"{out_dir} is being tagged by run {holder.get('run_id')} (started {started} on "
            f"{holder.get('host')}, last seen {seen:.0f} s ago); this run did nothing. Run again when it "
            f"ends, or after {holder.get('ttl_s', DEFAULT_TTL_S):.0f} s without a sign of life it is "
            "taken over")


class LeaseLostError(Exception):
    """The lease was taken over while this run worked (it went silent for longer than the TTL)."""


def lease_path(out_dir: str) -> str:
    return OutputLayout(out_dir).lease_path()


def check_ttl(ttl_s: float) -> str | None:
    """Why ``ttl_s`` cannot be a lease's time to live (one sentence), or None."""
    if not ttl_s > 0:
        return f"--lease_ttl_s must be a positive number of seconds (got {ttl_s:g}); the default is " \
               f"{DEFAULT_TTL_S:.0f}"
    return None


@dataclasses.dataclass(frozen=True)
class Lease:
    """A handle on the lease of ``out_dir`` held by ``run_id``; picklable, so workers renew it too.

    ``base_commit``: the head of the commit log when the lease was taken; the run commits at the
    number after it, and only there."""

    out_dir: str
    run_id: str
    ttl_s: float = DEFAULT_TTL_S
    base_commit: int = 0

    def __post_init__(self):
        if problem := check_ttl(self.ttl_s):
            raise ValueError(problem)

    @property
    def path(self) -> str:
        return lease_path(self.out_dir)

    @property
    def commit_number(self) -> int:
        return self.base_commit + 1

    def _document(self, started_at: float, host: str | None = None, pid: int | None = None) -> bytes:
        # host and pid are the taker's (the driver), kept by renewals from workers: a takeover by pid
        # asks whether the run's driver is alive, not a worker that renewed it once.
        return json.dumps({"run_id": self.run_id, "started_at": started_at, "renewed_at": time.time(),
                           "ttl_s": self.ttl_s, "host": host or socket.gethostname(),
                           "pid": pid or os.getpid()}).encode()

    def acquire(self) -> Lease:
        """Takes the lease, or takes over a stale one (fencing its holder out of the commit log);
        raises OutputBusyError when a live run holds it. Returns the lease with its ``base_commit``."""
        for _ in range(5):  # a lost race re-reads; five in a row means something is very wrong
            current = storage.read_versioned(self.path)
            if current is None:
                if storage.write_versioned(self.path, self._document(time.time()), None):
                    return self._based(commit_log.head(self.out_dir))
                continue
            data, version = current
            holder = _parse(data)
            if holder.get("run_id") == self.run_id:
                return self._based(commit_log.head(self.out_dir))
            if is_live(holder):
                raise OutputBusyError(self.out_dir, holder)
            if storage.write_versioned(self.path, self._document(time.time()), version):
                silent = holder.get("ttl_s", DEFAULT_TTL_S)
                why = ("the holder's process is gone" if _dead_here(holder)
                       else f"{silent:.0f} s without a sign of life")
                reason = f"run {self.run_id} took the output over: {why}"
                return self._based(commit_log.fence(self.out_dir, commit_log.head(self.out_dir),
                                                    str(holder.get("run_id")), reason))
        raise OutputBusyError(self.out_dir, _parse((storage.read_versioned(self.path) or (b"{}", ""))[0]))

    def _based(self, head: int) -> Lease:
        return dataclasses.replace(self, base_commit=head)

    def renew(self) -> None:
        """Marks the holder alive; raises LeaseLostError when another run holds the lease now."""
        current = storage.read_versioned(self.path)
        holder = _parse(current[0]) if current else {}
        if holder.get("run_id") != self.run_id:
            raise LeaseLostError(f"run {self.run_id} lost its lease on {self.out_dir} to run "
                                 f"{holder.get('run_id')}: it was silent for more than {self.ttl_s:.0f} s")
        storage.write_versioned(self.path, self._document(holder.get("started_at", time.time()),
                                                          holder.get("host"), holder.get("pid")), current[1])

    def held(self) -> bool:
        current = storage.read_versioned(self.path)
        return current is not None and _parse(current[0]).get("run_id") == self.run_id

    def release(self) -> None:
        """Gives the lease up if this run still holds it (never another run's)."""
        current = storage.read_versioned(self.path)
        if current is not None and _parse(current[0]).get("run_id") == self.run_id:
            storage.delete_versioned(self.path, current[1])


class Renewer:
    """Renews a lease at most every ``ttl_s / 4`` seconds when ``tick`` is called (cheap otherwise)."""

    def __init__(self, lease: Lease | None):
        self._lease = lease
        self._next = 0.0

    def tick(self) -> None:
        if self._lease is None or time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self._lease.ttl_s / 4
        try:
            self._lease.renew()
        except Exception as e:  # noqa: BLE001 - work goes on; the publish step checks the lease
            _log.warning("could not renew the lease on %s: %s", self._lease.out_dir, e)


def _parse(data: bytes) -> dict:
    try:
        value = json.loads(data.decode())
    except ValueError:
        return {}  # half-written by a crashed writer: stale by definition
    return value if isinstance(value, dict) else {}


def _dead_here(holder: dict) -> bool:
    """The holder's driver ran on this host and its process is gone (killed, crashed, rebooted)."""
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return False  # this process: a run of ours that did not release (tests, the demo)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def is_live(holder: dict) -> bool:
    """A lease or read pin renewed within its TTL whose process, on this host, still runs."""
    return not (_stale(holder) or _dead_here(holder))


def _stale(holder: dict) -> bool:
    renewed = holder.get("renewed_at")
    ttl = holder.get("ttl_s", DEFAULT_TTL_S)
    return not isinstance(renewed, int | float) or time.time() - renewed > ttl
