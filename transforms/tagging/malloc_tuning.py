"""One glibc malloc setting for worker processes, so memory stays flat on long runs.

glibc serves allocations above its mmap threshold (128 KB at start) with fresh
mappings, and raises the threshold each time such a block is freed, up to 32 MB.
A worker frees blocks of every size from 128 KB (decoded chunks) to tens of MB
(batches, Arrow tables) on several threads, so the threshold climbs and those
blocks land in malloc's arenas instead, which fragment and keep growing.
Pinning the threshold (which also stops its dynamic adjustment) keeps large
blocks in their own mappings, returned to the system when freed; the trim
threshold, which the adjustment raised along with it, goes back to its default
so freed heap tops are returned too.  The chosen value and what the others cost
are in docs/performance.md ("Memory").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 128 * 1024  # glibc's default, which the dynamic adjustment had raised
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h
_done = False
_lock = threading.Lock()


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Sets glibc's mmap threshold once per process; False where the C library is not glibc."""
    global _done
    with _lock:
        if _done:
            return True
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):  # macOS, musl: nothing to tune
            return False
        _done = bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(
            mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
        return _done
