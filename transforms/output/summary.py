"""Counting what a run did, from its files rows, and saying it on one screen."""

from __future__ import annotations

import collections

import apache_beam as beam

from schemas.tables import STATUS_FAILED, STATUS_OK, STATUS_PARTIAL, error_kind
from transforms.output.layout import FILES, FRAMES, RunRecord


class SummarizeFiles(beam.CombineFn):
    """files rows -> {'files', 'ok', 'partial', 'failed', 'frames', 'audio_seconds', 'failures_by_kind'}."""

    def create_accumulator(self):
        return collections.Counter(), collections.Counter()

    def add_input(self, acc, row: dict):
        counts, kinds = acc
        counts["files"] += 1
        counts[row["status"]] += 1
        counts["frames"] += row["num_frames"]
        counts["audio_seconds"] += row["duration_s"] or 0.0
        if row["status"] != STATUS_OK:
            kinds[error_kind(row["error"])] += 1
        return acc

    def merge_accumulators(self, accumulators):
        counts, kinds = collections.Counter(), collections.Counter()
        for c, k in accumulators:
            counts.update(c)
            kinds.update(k)
        return counts, kinds

    def extract_output(self, acc) -> dict:
        counts, kinds = acc
        summary = {key: counts.get(key, 0) for key in
                   ("files", STATUS_OK, STATUS_PARTIAL, STATUS_FAILED, "frames")}
        summary["audio_seconds"] = float(counts.get("audio_seconds", 0.0))
        summary["failures_by_kind"] = dict(kinds.most_common())
        return summary


def format_summary(record: RunRecord) -> str:
    """The one-screen summary printed at the end of a run."""
    counts = record.counts or {}
    wall = record.wall_s or 0.0
    audio = counts.get("audio_seconds", 0.0)
    lines = [
        f"tag_audio run {record.run_id}: {record.status}",
        f"  files      {counts.get('files', 0)} total: {counts.get('ok', 0)} ok, "
        f"{counts.get('partial', 0)} partial, {counts.get('failed', 0)} failed",
        f"  audio      {audio / 3600:.3f} h ({audio:.1f} s), {counts.get('frames', 0)} frames",
        f"  time       {wall:.1f} s wall, {audio / wall if wall else 0.0:.1f}x realtime",
        f"  model      {record.model['identity']} ({record.model['num_classes']} classes)",
    ]
    for kind, n in counts.get("failures_by_kind", {}).items():
        lines.append(f"  problem    {n} x {kind or 'unknown'}")
    if record.reason:
        lines.append(f"  FAILED     {record.reason}")
    layout = record.layout
    lines += [
        f"  frames     {layout.table_dir(FRAMES)}/",
        f"  files      {layout.table_dir(FILES)}/  (one row per input file, with status and error)",
        f"  record     {layout.record_path()}",
    ]
    return "\n".join(lines)
