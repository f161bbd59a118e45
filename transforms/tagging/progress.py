"""Progress of a local run: workers count, the driver prints one line every few seconds.

Beam metrics counters (shown by Dataflow's UI) are only readable on local
runners once the pipeline ends, and multi-processing workers are separate
processes.  So on local runners every worker process writes its counters to a
small JSON file in a shared directory (at most every second), and a thread in
the driver sums them and prints ``files, audio hours, x realtime, ETA``.  The
directory reaches workers through an environment variable, which local worker
processes inherit; on Dataflow it is unset and recording does nothing.  Each
run has a directory of its own, and a process's counts belong to the
directory they were recorded for: a second run in the same process (a
notebook, the demo, tests) starts again from zero.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import tempfile
import threading
import time

_lock = threading.Lock()
_counts: collections.Counter = collections.Counter()
_counts_directory: str | None = None  # the run's directory _counts were recorded for
_last_write = 0.0

ENV_VAR = "TAG_AUDIO_PROGRESS_DIR"
WRITE_INTERVAL_S = 1.0


def record(**increments: float) -> None:
    """Adds to this process's counters; writes them out at most once a second."""
    global _last_write
    directory = os.environ.get(ENV_VAR)
    if not directory:
        return
    with _lock:
        _switch_run(directory)
        _counts.update(increments)
        now = time.monotonic()
        if now - _last_write >= WRITE_INTERVAL_S:
            _last_write = now
            _write(directory)


def flush() -> None:
    """Writes this process's counters now (end of a bundle)."""
    directory = os.environ.get(ENV_VAR)
    if directory:
        with _lock:
            _switch_run(directory)
            _write(directory)


def _switch_run(directory: str) -> None:
    """Starts counting from zero when a new run (a new directory) begins in this process."""
    global _counts_directory, _last_write
    if directory != _counts_directory:
        _counts.clear()
        _counts_directory, _last_write = directory, 0.0


def _write(directory: str) -> None:
    path = os.path.join(directory, f"{os.getpid()}.json")
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(dict(_counts), f)
        os.replace(tmp, path)  # readers never see half a file
    except OSError:
        pass  # progress is best effort; the directory may be gone after the run


def read_totals(directory: str) -> collections.Counter:
    totals: collections.Counter = collections.Counter()
    try:
        names = [n for n in os.listdir(directory) if n.endswith(".json")]
    except OSError:
        return totals
    for name in names:
        try:
            with open(os.path.join(directory, name)) as f:
                totals.update(json.load(f))
        except (OSError, ValueError):
            continue
    return totals


def format_progress(totals: collections.Counter, elapsed_s: float) -> str:
    planned, done = totals.get("units_planned", 0), totals.get("units_done", 0)
    audio = totals.get("audio_seconds", 0.0)
    speed = audio / elapsed_s if elapsed_s > 0 else 0.0
    line = (f"[tag_audio] {totals.get('files_listed', 0)} files listed, work units {done}/{planned} done, "
            f"{audio / 3600:.2f} h audio, {totals.get('frames', 0)} frames, {speed:.1f}x realtime")
    if totals.get("failures", 0):
        line += f", {totals['failures']} failures"
    if done and planned > done:
        line += f", ETA {elapsed_s * (planned - done) / done:.0f} s"
    return line


class ProgressMonitor:
    """Driver side: prints a progress line every ``interval_s`` while a local run goes on."""

    def __init__(self, interval_s: float = 10.0, stream=None):
        self.directory = tempfile.mkdtemp(prefix="tag_audio_progress_")
        self._interval_s = interval_s
        self._stream = stream or sys.stderr
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tag_audio-progress", daemon=True)
        self._started = time.monotonic()

    def __enter__(self) -> ProgressMonitor:
        self._previous = os.environ.get(ENV_VAR)
        os.environ[ENV_VAR] = self.directory
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self._previous is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = self._previous
        for name in os.listdir(self.directory):
            os.remove(os.path.join(self.directory, name))
        os.rmdir(self.directory)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            totals = read_totals(self.directory)
            if totals:
                line = format_progress(totals, time.monotonic() - self._started)
                print(line, file=self._stream, flush=True)
