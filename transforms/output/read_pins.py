"""Jobs that read an output say so, so that compaction leaves the runs they read.

A job that reads committed runs of an OUT_DIR (``beam_jobs.events``,
``beam_jobs.search``, ``build_training_set``) writes ``OUT/_readers/<id>.json``
naming those runs, renews it while it works and removes it when it ends.
Compaction removes no run that a live pin names; a pin not renewed for its TTL
(its job was killed), or whose job is gone from this host, is ignored.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterable, Iterator

import storage
from transforms.output.layout import OutputLayout
from transforms.output.lease import DEFAULT_TTL_S, is_live

_log = logging.getLogger(__name__)


def _document(run_ids: list[str], job: str, ttl_s: float, started_at: float) -> dict:
    return {"runs": run_ids, "job": job, "started_at": started_at, "renewed_at": time.time(), "ttl_s": ttl_s,
            "host": socket.gethostname(), "pid": os.getpid()}


@contextlib.contextmanager
def reading(out_dir: str, run_ids: Iterable[str], job: str, ttl_s: float = DEFAULT_TTL_S) -> Iterator[str]:
    """Pins ``run_ids`` of ``out_dir`` while the block runs; yields the pin's path."""
    runs = sorted(set(run_ids))
    path = OutputLayout(out_dir).reader_path(f"{job}-{secrets.token_hex(4)}")
    started = time.time()
    try:
        storage.write_json_atomic(path, _document(runs, job, ttl_s, started))
    except OSError as e:  # a read-only view of someone else's output: read it anyway, unpinned
        _log.warning("could not pin the runs read in %s (%s); a compaction meanwhile may remove them",
                     out_dir, e)
        yield path
        return
    stop = threading.Event()

    def keep_alive():
        while not stop.wait(min(5.0, ttl_s / 4)):
            with contextlib.suppress(Exception):  # a missed renewal only risks what a dead reader risks
                storage.write_json_atomic(path, _document(runs, job, ttl_s, started))

    thread = threading.Thread(target=keep_alive, name="read-pin", daemon=True)
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        thread.join()
        with contextlib.suppress(Exception):
            storage.delete([path])


def pinned_runs(out_dir: str) -> dict[str, str]:
    """{run id: the job reading it} of the live pins of ``out_dir``."""
    directory = OutputLayout(out_dir).readers_dir()
    pinned: dict[str, str] = {}
    for name in storage.list_names(directory, missing_ok=True):
        if not name.endswith(".json"):
            continue
        try:
            pin = json.loads(storage.read_text(storage.join(directory, name)))
        except (OSError, ValueError):
            continue  # removed meanwhile, or not ours
        if isinstance(pin, dict) and is_live(pin):
            pinned.update({run_id: str(pin.get("job")) for run_id in pin.get("runs", [])})
    return pinned
