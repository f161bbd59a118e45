"""Detected events against labelled ones: one-to-one matching by overlap (pure functions).

A detection can only match a truth of the same file and class that it overlaps
in time.  Pairs are taken greedily, largest overlap first, each detection and
each truth at most once: the matching the events benchmarks and the head
metrics of ``train_head`` share, so their precision and recall mean the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def match_by_overlap(detections: Sequence[Mapping], truths: Sequence[Mapping]) -> list[tuple[int, int]]:
    """(detection index, truth index) pairs; each row has ``file``, ``class``, ``start_s`` and ``end_s``."""
    pairs = []
    for d_i, d in enumerate(detections):
        for t_i, t in enumerate(truths):
            if d["file"] == t["file"] and d["class"] == t["class"]:
                overlap = min(d["end_s"], t["end_s"]) - max(d["start_s"], t["start_s"])
                if overlap > 0:
                    pairs.append((overlap, d_i, t_i))
    used_d, used_t, matched = set(), set(), []
    for _, d_i, t_i in sorted(pairs, reverse=True):
        if d_i not in used_d and t_i not in used_t:
            used_d.add(d_i)
            used_t.add(t_i)
            matched.append((d_i, t_i))
    return matched
