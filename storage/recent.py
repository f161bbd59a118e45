"""A small process-wide cache of the most recently used entries, safe across threads."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Hashable


class RecentlyUsed:
    """Keeps entries while ``too_many(entries)`` is false, dropping the least recently used first (never
    the last one): footers and row groups a worker reads again, DoFns a worker thread sets up once."""

    def __init__(self, too_many: Callable[[collections.OrderedDict], bool]):
        self._entries: collections.OrderedDict = collections.OrderedDict()
        self._too_many = too_many
        self._lock = threading.Lock()

    def get(self, key: Hashable, default=None):
        with self._lock:
            if key not in self._entries:
                return default
            self._entries.move_to_end(key)
            return self._entries[key]

    def put(self, key: Hashable, value) -> list:
        """Keeps ``value``; returns the values dropped to make room (their owner may need to close them)."""
        with self._lock:
            self._entries[key] = value
            dropped = []
            while len(self._entries) > 1 and self._too_many(self._entries):
                dropped.append(self._entries.popitem(last=False)[1])
            return dropped

    def pop_where(self, wanted: Callable[[Hashable], bool]) -> list:
        """Removes and returns the values whose key is ``wanted``."""
        with self._lock:
            return [self._entries.pop(key) for key in list(self._entries) if wanted(key)]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def at_most(count: int) -> Callable[[collections.OrderedDict], bool]:
    return lambda entries: len(entries) > count
