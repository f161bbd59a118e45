"""Decoder processes: work units decode in parallel, outside the process that holds the model.

Decoding is Python and FFmpeg work that holds the GIL for long stretches.  In
the worker's own process it runs on the bundle's thread, one unit at a time,
and competes with the threads that feed the model and run Beam.  Here each
worker process keeps a few decoder processes (``transforms.decoding.worker``):

* units decode on every core while the worker's process runs the model,
  builds tables and writes Parquet;
* a file that crashes FFmpeg (a segfault on hostile input) or makes it loop
  costs that file a failed row ('decoder_crash', 'decoder_timeout'); a fresh
  decoder takes the next unit, and the worker and its other units carry on.

One pool per worker process (``shared_pool``), shared by its DoFn instances.
A bundle talks to it through a ``DecodeSession``: it submits units and reads
their messages from one bounded mailbox in whatever order they arrive, so
decoders never wait on each other and memory stays bounded by the mailbox,
whatever the files' lengths.  Jobs go to decoders first come, first served,
and every consumer drains its own mailbox, so no job can wait forever behind
another consumer's.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from transforms.decoding.messages import ERROR, FINAL_KINDS, DecodeRequest, read_message, write_message

DEFAULT_TIMEOUT_S = 600.0  # a unit whose decoder sends nothing for this long is given up
MAILBOX_MESSAGES = 64  # per session: ~8 MB of 2-second chunks
_WATCH_INTERVAL_S = 5.0
_PROJECT_ROOT = str(Path(__file__).resolve().parents[1])


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_processes(requested: int, processes_per_machine: int = 1) -> int:
    """Decoder processes for this worker: ``requested``, or (< 0) the cores left to each SDK process.

    ``processes_per_machine`` is how many SDK processes share the machine; 0 means one per core
    (Dataflow's default), which leaves each one decoder.
    """
    if requested >= 0:
        return requested
    cores = available_cores()
    sharing = processes_per_machine if processes_per_machine > 0 else cores
    return max(1, cores // sharing)


class _Mailbox:
    """A bounded FIFO of ``(tag, message)``; once closed, puts are dropped instead of blocking."""

    def __init__(self, capacity: int):
        self._items: collections.deque = collections.deque()
        self._capacity = capacity
        self.closed = False
        self._changed = threading.Condition()

    def put(self, item) -> None:
        with self._changed:
            while len(self._items) >= self._capacity and not self.closed:
                self._changed.wait()
            if not self.closed:
                self._items.append(item)
                self._changed.notify_all()

    def get(self, timeout: float):
        """The oldest item, or None after ``timeout`` seconds without one."""
        with self._changed:
            if not self._items:
                self._changed.wait(timeout)
            if not self._items:
                return None
            item = self._items.popleft()
            self._changed.notify_all()
            return item

    def close(self) -> None:
        with self._changed:
            self.closed = True
            self._items.clear()
            self._changed.notify_all()


class _Job:
    __slots__ = ("request", "mailbox", "tag", "decoder")

    def __init__(self, request: DecodeRequest, mailbox: _Mailbox, tag: object):
        self.request = request
        self.mailbox = mailbox
        self.tag = tag
        self.decoder: _Decoder | None = None


class _Decoder:
    """One decoder process and the thread that reads its replies into the current job's mailbox."""

    def __init__(self, pool: DecoderPool):
        self._pool = pool
        # What the process inherits (cloud credentials, the storage endpoint, the read retry policy) is
        # fixed when it starts; the pool compares this with the parent's before giving it a unit.
        self.environment = dict(os.environ)
        env = dict(self.environment)
        # The child imports this package by name, whether or not it is installed.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PROJECT_ROOT, env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "transforms.decoding.worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.job: _Job | None = None
        self.last_activity = time.monotonic()
        self.stop_reason: str | None = None
        self._reader = threading.Thread(target=self._read_replies, name="decoder-replies", daemon=True)
        self._reader.start()

    def start(self, job: _Job) -> None:
        """Sends ``job`` (called with the pool's lock held, while this decoder is idle)."""
        job.decoder = self
        self.job = job
        self.last_activity = time.monotonic()
        with contextlib.suppress(OSError):  # if the process is gone, the reader reports the job
            write_message(self.process.stdin, job.request)

    def stop(self, reason: str) -> None:
        """Kills the process; its current job ends with ``reason`` ('kind: message')."""
        self.stop_reason = reason
        self.process.kill()

    def close(self) -> None:
        """Asks the process to exit (it stops once its stdin closes)."""
        with contextlib.suppress(OSError):
            self.process.stdin.close()

    def _read_replies(self) -> None:
        while (message := read_message(self.process.stdout)) is not None:
            self.last_activity = time.monotonic()
            job = self.job
            if job is None:  # a reply nobody asked for: the protocol is broken; start afresh
                self.process.kill()
                break
            job.mailbox.put((job.tag, message))
            if message[0] in FINAL_KINDS:
                self.job = None
                self._pool._finished(self)
        self._ended()

    def _ended(self) -> None:
        returncode = self.process.wait()
        job, self.job = self.job, None
        if job is not None:
            job.mailbox.put((job.tag, (ERROR, self.stop_reason or _crash_reason(returncode), None)))
        self._pool._lost(self)


def _crash_reason(returncode: int) -> str:
    if returncode < 0:
        try:
            how = f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"was killed by signal {-returncode}"
    else:
        how = f"exited with status {returncode}"
    return f"decoder_crash: the decoder process {how} while decoding this file"


class DecoderPool:
    """Up to ``processes`` decoder processes, started when first needed."""

    def __init__(self, processes: int, timeout_s: float = DEFAULT_TIMEOUT_S):
        if processes < 1:
            raise ValueError("a decoder pool needs at least one process")
        self.processes = processes
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._decoders: list[_Decoder] = []
        self._idle: list[_Decoder] = []
        self._waiting: collections.deque[_Job] = collections.deque()
        self._closed = False

    def submit(self, request: DecodeRequest, mailbox: _Mailbox, tag: object) -> _Job:
        job = _Job(request, mailbox, tag)
        with self._lock:
            if self._closed:
                raise RuntimeError("the decoder pool is closed")
            self._waiting.append(job)
            self._dispatch()
        return job

    def pids(self, busy_only: bool = False) -> list[int]:
        """Process ids of the running decoders (busy ones only: those decoding a unit now)."""
        with self._lock:
            return [d.process.pid for d in self._decoders if d.job is not None or not busy_only]

    def stop_stalled(self, jobs) -> None:
        """Stops the decoders of ``jobs`` that have sent nothing for ``timeout_s``."""
        now = time.monotonic()
        for job in jobs:
            decoder = job.decoder
            if decoder is not None and decoder.job is job and now - decoder.last_activity > self.timeout_s:
                decoder.stop(f"decoder_timeout: decoding made no progress for {self.timeout_s:.0f} s; "
                             "the decoder process was stopped")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            decoders = list(self._decoders)
        for decoder in decoders:
            decoder.close()
        deadline = time.monotonic() + 2.0
        for decoder in decoders:
            try:
                decoder.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                decoder.process.kill()

    def _dispatch(self) -> None:
        """Gives waiting jobs to idle decoders, starting decoders up to the limit (lock held)."""
        while self._waiting and not self._closed:
            if self._idle:
                decoder = self._idle.pop()
                if decoder.environment != os.environ:
                    # A long-lived process ran another job since (new credentials, another endpoint or
                    # retry policy): a decoder started before must not decode for this one.
                    self._decoders.remove(decoder)
                    decoder.close()
                    continue
            elif len(self._decoders) < self.processes:
                decoder = _Decoder(self)
                self._decoders.append(decoder)
            else:
                return
            job = self._waiting.popleft()
            if job.mailbox.closed:  # its session was abandoned: nobody would read the replies
                self._idle.append(decoder)
                continue
            decoder.start(job)

    def _finished(self, decoder: _Decoder) -> None:
        with self._lock:
            self._idle.append(decoder)
            self._dispatch()

    def _lost(self, decoder: _Decoder) -> None:
        with self._lock:
            if decoder in self._decoders:
                self._decoders.remove(decoder)
            if decoder in self._idle:
                self._idle.remove(decoder)
            self._dispatch()  # a replacement takes the next job


class DecodeSession:
    """One consumer's view of the pool: submit units, then read their messages as they arrive."""

    def __init__(self, pool: DecoderPool, mailbox_messages: int = MAILBOX_MESSAGES):
        self._pool = pool
        self._mailbox = _Mailbox(mailbox_messages)
        self._jobs: dict[object, _Job] = {}

    @property
    def in_flight(self) -> int:
        """Units submitted whose last message has not been read yet."""
        return len(self._jobs)

    def submit(self, request: DecodeRequest, tag: object) -> None:
        if tag in self._jobs:
            raise ValueError(f"tag {tag!r} is already in flight")
        self._jobs[tag] = self._pool.submit(request, self._mailbox, tag)

    def next_message(self) -> tuple[object, tuple]:
        """``(tag, message)``, waiting for one; stops decoders that make no progress."""
        if not self._jobs:
            raise RuntimeError("no unit in flight")
        interval = min(_WATCH_INTERVAL_S, self._pool.timeout_s / 2)
        while (item := self._mailbox.get(interval)) is None:
            self._pool.stop_stalled(list(self._jobs.values()))
        tag, message = item
        if message[0] in FINAL_KINDS:
            del self._jobs[tag]
        return tag, message

    def close(self) -> None:
        """Abandons what is in flight: replies still coming are dropped, decoders move on."""
        self._mailbox.close()
        self._jobs.clear()


_pools: dict[tuple[int, float], DecoderPool] = {}
_pools_lock = threading.Lock()


def shared_pool(processes: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> DecoderPool:
    """This process's pool of ``processes`` decoders (created on first use, closed at exit)."""
    key = (processes, timeout_s)
    with _pools_lock:
        if key not in _pools:
            if not _pools:
                atexit.register(_close_pools)
            _pools[key] = DecoderPool(processes, timeout_s)
        return _pools[key]


def _close_pools() -> None:
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()
