"""Events as files that audio tools open beside the recording: Raven selection tables, Audacity labels.

One file per recording, named after it (``dawn.wav`` -> ``dawn.Table.1.selections.txt`` for Raven,
``dawn.labels.txt`` for Audacity); recordings that share a name get a short hash of their URI
appended.  Raven: File > Open Selection Table with the sound open; Audacity: File > Import > Labels.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable

import pyarrow as pa

import storage

RAVEN = "raven"
AUDACITY = "audacity"
FORMATS = (RAVEN, AUDACITY)
RAVEN_SUFFIX = ".Table.1.selections.txt"
AUDACITY_SUFFIX = ".labels.txt"
RAVEN_COLUMNS = ("Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
                 "High Freq (Hz)", "Annotation", "Peak Score", "Mean Score", "Begin UTC")


def _stem(uri: str) -> str:
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


def file_stems(uris: Iterable[str]) -> dict[str, str]:
    """URI -> a file name stem unique among ``uris``."""
    uris = sorted(set(uris))
    counts = Counter(_stem(u) for u in uris)
    return {u: _stem(u) if counts[_stem(u)] == 1 else f"{_stem(u)}-{hashlib.sha1(u.encode()).hexdigest()[:8]}"
            for u in uris}


def _clean(text: str) -> str:
    return " ".join(str(text).replace("\t", " ").split())


def raven_table(rows: list[dict], high_freq_hz: float) -> str:
    """A Raven Pro selection table (tab-separated) of one recording's events, in time order."""
    lines = ["\t".join(RAVEN_COLUMNS)]
    for number, row in enumerate(sorted(rows, key=lambda r: (r["start_s"], r["label"])), start=1):
        utc = row.get("start_utc")
        lines.append("\t".join([
            str(number), "Spectrogram 1", "1", f"{row['start_s']:.6f}", f"{row['end_s']:.6f}", "0",
            f"{high_freq_hz:g}", _clean(row["label"]), f"{row['peak_score']:.4f}", f"{row['mean_score']:.4f}",
            utc.isoformat() if utc is not None else ""]))
    return "\n".join(lines) + "\n"


def audacity_labels(rows: list[dict]) -> str:
    """An Audacity label track: ``start<TAB>end<TAB>label`` per event, in seconds."""
    return "".join(f"{row['start_s']:.6f}\t{row['end_s']:.6f}\t{_clean(row['label'])}\n"
                   for row in sorted(rows, key=lambda r: (r["start_s"], r["label"])))


def export_events(events: pa.Table, out_dir: str, formats: Iterable[str] = FORMATS,
                  sample_rate: int | None = None) -> list[str]:
    """Writes one file per recording and format under ``out_dir`` (local or ``gs://``); returns the
    paths.  ``sample_rate`` (the model's) sets the selections' upper frequency."""
    formats = list(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown export format(s) {unknown}; expected some of {FORMATS}")
    by_uri: dict[str, list[dict]] = {}
    for row in events.select([c for c in ("uri", "label", "start_s", "end_s", "peak_score", "mean_score",
                                          "start_utc") if c in events.column_names]).to_pylist():
        by_uri.setdefault(row["uri"], []).append(row)
    stems = file_stems(by_uri)
    high = (sample_rate or 16000) / 2
    written = []
    for uri, rows in sorted(by_uri.items()):
        if RAVEN in formats:
            path = storage.join(out_dir, stems[uri] + RAVEN_SUFFIX)
            storage.write_text(path, raven_table(rows, high))
            written.append(path)
        if AUDACITY in formats:
            path = storage.join(out_dir, stems[uri] + AUDACITY_SUFFIX)
            storage.write_text(path, audacity_labels(rows))
            written.append(path)
    return written
