"""Small tag_audio outputs written directly (no pipeline), for the plot and inspect tests.

Frames tables come from the product's own ``FrameTableBuilder`` and files rows
from ``schemas.tables.files_schema``, so the Parquet (schema, metadata) is what
a real run writes; only the numbers are made up.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from audio_models.spec import EMBEDDING, SCORES, ModelSpec
from schemas.tables import (
    FILE_TOP_LABELS,
    STATUS_FAILED,
    STATUS_OK,
    FrameColumns,
    config_id,
    files_schema,
)
from transforms.output.layout import RunLayout
from transforms.tagging.frame_table import FrameTableBuilder

CLASS_NAMES = ("Speech", "Dog bark", "Siren", "Sine wave", "White noise", "Music",
               "Inside, small room", "Silence", "Rain", "Engine", "Bird", "Applause")

SPEC = ModelSpec(name="head", sample_rate=16000, window_samples=15600, hop_samples=7680,
                 class_names=CLASS_NAMES, embedding_dim=8, fingerprint="c0ffee" * 10 + "abcd")

ALL_SCORES = FrameColumns()



@dataclasses.dataclass(frozen=True)
class FakeFile:
    """One input file's outcome: its files row and, unless failed, a score matrix ``[frames, classes]``."""

    uri: str
    status: str
    error: str = ""
    scores: np.ndarray | None = None
    duration_s: float | None = None

    @property
    def num_frames(self) -> int:
        return 0 if self.scores is None else int(self.scores.shape[0])


def scores_with_peaks(num_frames: int, peaks: dict[int, float], spec: ModelSpec = SPEC,
                      seed: int = 0) -> np.ndarray:
    """Low random scores, with class ``c`` at ``peaks[c]`` in every frame."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0.0, 0.05, size=(num_frames, spec.num_classes)).astype(np.float32)
    for cls, value in peaks.items():
        scores[:, cls] = value
    return scores


def files_row(f: FakeFile, spec: ModelSpec = SPEC) -> dict:
    top_mean = top_max = []
    if f.scores is not None and f.num_frames:
        mean, peak = f.scores.mean(axis=0), f.scores.max(axis=0)
        top_mean = [{"label": spec.class_names[i], "score": float(mean[i])}
                    for i in np.argsort(-mean, kind="stable")[:FILE_TOP_LABELS]]
        top_max = [{"label": spec.class_names[i], "score": float(peak[i])}
                   for i in np.argsort(-peak, kind="stable")[:FILE_TOP_LABELS]]
    duration = f.duration_s
    if duration is None and f.status != STATUS_FAILED:
        duration = f.num_frames * spec.hop_s
    return {
        "uri": f.uri, "status": f.status, "error": f.error, "duration_s": duration,
        "sample_rate": spec.sample_rate if f.status != STATUS_FAILED else None,
        "channels": 1 if f.status != STATUS_FAILED else None, "codec": "pcm_s16le",
        "size_bytes": 1000 + f.num_frames, "last_modified": 1.7e9, "num_frames": f.num_frames,
        "top_labels_mean": top_mean, "top_labels_max": top_max, "model": spec.identity,
        "config_id": config_id(spec),
    }


def frames_table(files: list[FakeFile], spec: ModelSpec = SPEC,
                 columns: FrameColumns = ALL_SCORES) -> pa.Table:
    builder = FrameTableBuilder(spec, columns)
    tables = []
    for f in files:
        if not f.num_frames:
            continue
        rng = np.random.default_rng(zlib.crc32(f.uri.encode()))
        outputs = {SCORES: f.scores,
                   EMBEDDING: rng.normal(size=(f.num_frames, spec.embedding_dim)).astype(np.float32)}
        tables.append(builder.build([f.uri] * f.num_frames, np.arange(f.num_frames), outputs))
    return pa.concat_tables(tables) if tables else builder.schema.empty_table()


def _split(table: pa.Table, parts: int) -> list[pa.Table]:
    size = max(1, -(-table.num_rows // parts))
    return [table.slice(i * size, size) for i in range(parts)] or [table]


def write_run(out_dir: Path, files: list[FakeFile], run_id: str = "20250101T000000Z-aaaaaa",
              spec: ModelSpec = SPEC, columns: FrameColumns = ALL_SCORES,
              frames_parts: int = 2, row_group_size: int = 16,
              status: str = "succeeded") -> dict[str, list[Path]]:
    """Writes one run's frames and files Parquet and its run record, in the product's layout (a
    ``RunLayout``); returns the Parquet paths by table."""
    layout = RunLayout(str(out_dir), run_id)
    dirs = {t: Path(layout.table_dir(t)) for t in ("frames", "files")}
    record_path = Path(layout.record_path())
    written: dict[str, list[Path]] = {"frames": [], "files": []}
    frames = frames_table(files, spec, columns)
    for i, part in enumerate(_split(frames, frames_parts)):
        path = dirs["frames"] / f"part-{i:05d}-of-{frames_parts:05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(part, path, row_group_size=row_group_size)
        written["frames"].append(path)
    files_table = pa.Table.from_pylist([files_row(f, spec) for f in files], schema=files_schema(spec))
    path = dirs["files"] / "part-00000-of-00001.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(files_table, path)
    written["files"].append(path)
    record_path.parent.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps({"run_id": run_id, "status": status, "started_at": 1.7e9,
                                       "out_dir": str(out_dir), "version": "test", "wall_s": 12.5,
                                       "model": {"identity": spec.identity}}))
    return written


def three_files(prefix: str = "/data/in") -> list[FakeFile]:
    """An ok file, a partial one and a failed one."""
    return [
        FakeFile(f"{prefix}/ok.wav", STATUS_OK, scores=scores_with_peaks(20, {2: 0.9})),
        FakeFile(f"{prefix}/partial.mp3", "partial", error="decoder_error: 12 damaged packets at 3.1 s",
                 scores=scores_with_peaks(7, {1: 0.7}, seed=1)),
        FakeFile(f"{prefix}/broken.txt", STATUS_FAILED, error="not_audio: not an audio or video file"),
    ]
