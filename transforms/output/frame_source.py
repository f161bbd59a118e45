"""Which frames a job reads (training sets, events, search): the runs of a tag_audio OUT_DIR and their model.

Embeddings of different models (or of one model framed differently) live in
different spaces, so a job takes frames of one ``config_id`` only; the runs to
use are the committed runs whose record did not fail, or the ones named.  Of
those, only the current rows count (``transforms.output.current``: the latest
ok result per file, in commit order): a run whose rows were all re-tagged later
is not read, and a run some of whose files were is read for the others only
(``FrameSource.keep``).  The run record says where the model came from, which
the end-to-end export needs to rebuild the same YAMNet.
"""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pyarrow.compute as pc

from schemas import training as ts
from schemas.tables import read_model_metadata
from transforms.output.current import row_states
from transforms.output.layout import FRAMES, RUN_PREFIX, SUCCEEDED, RunRecord
from transforms.output.reader import find_output, read_schema


class FramesNotUsableError(ValueError):
    """The frames directory cannot give the requested training set; ``str(e)`` says why."""


@dataclasses.dataclass(frozen=True)
class FrameRun:
    run_id: str
    frame_files: tuple[str, ...]
    file_files: tuple[str, ...]
    metadata: dict  # Parquet key-value metadata (schemas.tables.read_model_metadata)
    columns: tuple[str, ...]
    record: RunRecord | None  # runs/<id>.json, when present


@dataclasses.dataclass(frozen=True)
class FrameSource:
    """The selected runs of one model, and that model's identity."""

    out_dir: str
    runs: tuple[FrameRun, ...]
    # frames part -> the uris whose rows in it are current; a part not named here is current whole
    partly_current: dict[str, frozenset[str]] = dataclasses.field(default_factory=dict)

    def keep(self, path: str, table: pa.Table) -> pa.Table:
        """The rows of ``table`` (read from the frames part ``path``) that are current."""
        uris = self.partly_current.get(path)
        if uris is None:
            return table
        return table.filter(pc.is_in(table["uri"], pa.array(sorted(uris), pa.string())))

    @property
    def metadata(self) -> dict:
        return self.runs[0].metadata

    @property
    def frame_files(self) -> list[str]:
        return [path for run in self.runs for path in run.frame_files]

    @property
    def file_files(self) -> list[str]:
        return [path for run in self.runs for path in run.file_files]

    @property
    def run_ids(self) -> tuple[str, ...]:
        return tuple(run.run_id for run in self.runs)

    def column_dim(self, column: str) -> int:
        if column == ts.EMBEDDING:
            return int(self.metadata.get("embedding_dim", "0"))
        if column == ts.LOGMEL_STATS:
            return ts.LOGMEL_STATS_DIM
        raise ValueError(f"unknown feature column {column!r}")

    def base_model(self) -> dict:
        """What made the frames: kind, identity, fingerprint, config id and (from the record) its path."""
        meta = self.metadata
        record = next((run.record for run in reversed(self.runs) if run.record), None)
        model = record.model if record else {}
        return {"kind": meta.get("model"), "identity": meta.get("model_identity"),
                "fingerprint": meta.get("model_fingerprint"), "config_id": meta.get("config_id"),
                "sample_rate": int(meta.get("sample_rate", 0)),
                "window_samples": int(meta.get("window_samples", 0)),
                "hop_samples": int(meta.get("hop_samples", 0)),
                "embedding_dim": int(meta.get("embedding_dim", 0)),
                "source": model.get("source")}


def find_frames(out_dir: str, run_ids: tuple[str, ...] = ()) -> FrameSource:
    """The runs of ``out_dir`` to read (its succeeded runs, or ``run_ids``), checked to share one model.

    A run that crossed ``--max_failed_fraction`` is published but skipped here
    unless named: a training set should not quietly learn from a run that failed.
    """
    out_dir = out_dir.rstrip("/")
    try:
        output = find_output(out_dir)
    except FileNotFoundError:
        output = None
    with_frames = {run.run_id: run for run in (output.runs if output else ()) if run.frames}
    if not with_frames:
        raise FramesNotUsableError(f"no frames under {out_dir}/{FRAMES}/{RUN_PREFIX}*/ "
                                   "(is it a tag_audio --output?)")
    if run_ids:
        missing = sorted(set(run_ids) - set(with_frames))
        if missing:
            raise FramesNotUsableError(f"{out_dir} has no frames of run(s) {', '.join(missing)} "
                                       f"(runs present: {', '.join(sorted(with_frames))})")
    states = row_states(output) if not run_ids else None
    current = states.kept_runs() if states is not None else set(with_frames)
    runs, partly_current = [], {}
    for run in output.published:
        run_id = run.run_id
        if run_id not in with_frames or (run_ids and run_id not in run_ids):
            continue
        if not run_ids and (run.status != SUCCEEDED or run_id not in current):
            continue  # a failed run is used only when named; a run re-tagged whole is stale
        if states is not None and states.counts(run_id)["superseded"]:  # some files tagged again later
                uris = frozenset(uri for group in states.current_keys(run_id).values() for uri in group)
                partly_current.update({part.path: uris for part in run.frames})
        schema = read_schema(run.frames)
        runs.append(FrameRun(run_id, tuple(f.path for f in run.frames), tuple(f.path for f in run.files),
                             read_model_metadata(schema), tuple(schema.names), run.record))
    if not runs:
        raise FramesNotUsableError(f"{out_dir} has no succeeded run: name runs with --runs to use others")
    configs = {run.metadata.get("config_id") for run in runs}
    if len(configs) > 1:
        listing = "; ".join(f"{run.run_id}: {run.metadata.get('model_identity')} "
                            f"(config {run.metadata.get('config_id')})" for run in runs)
        raise FramesNotUsableError(f"{out_dir} holds frames of {len(configs)} different models or framings; "
                                   f"pick the runs of one with --runs ({listing})")
    return FrameSource(out_dir, tuple(runs), partly_current)


def check_columns(source: FrameSource, columns: tuple[str, ...]) -> None:
    for run in source.runs:
        missing = [c for c in columns if c not in run.columns]
        if missing:
            hint = " (tag with tag_audio --features logmel)" if ts.LOGMEL_STATS in missing else ""
            raise FramesNotUsableError(f"run {run.run_id} has no {', '.join(missing)} column{hint}")
        if ts.EMBEDDING in columns and source.column_dim(ts.EMBEDDING) <= 0:
            raise FramesNotUsableError(f"the model of run {run.run_id} has no embedding")
