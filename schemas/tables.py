"""The one place that says what a frames row and a files row are.

Frames: one row per model window of a file.  Files: exactly one row per input
file, whatever happened to it.  Both carry Parquet key-value metadata that lets
a reader interpret the numbers without the model: class names, model
fingerprint, sample rate, window, hop and the package version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from importlib import metadata

import pyarrow as pa
import pyarrow.compute as pc

from schemas.model_spec import ModelSpec

try:
    PACKAGE_VERSION = metadata.version("audio-tagger")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    PACKAGE_VERSION = "0+unknown"
METADATA_PREFIX = "audio_tagger."

STATUS_OK = "ok"
STATUS_PARTIAL = "partial"
STATUS_FAILED = "failed"

# A files row's ``error`` is 'kind: reason' (kind short and machine-readable, reason for people).


def error_kind(error: str) -> str:
    """'not_audio: no audio stream' -> 'not_audio' (the whole text when it has no ':')."""
    return error.split(":", 1)[0].strip() if error else ""


def error_kinds(errors: pa.Array) -> pa.Array:
    """``error_kind`` of every value of a string column, computed by Arrow."""
    return pc.utf8_trim_whitespace(pc.list_element(pc.split_pattern(errors, ":", max_splits=1), 0))


# How many clip-level labels a files row keeps (by mean and by max over frames).
FILE_TOP_LABELS = 5

# Frames columns, by name (the readers' and writers' one spelling).
URI = "uri"
FRAME_INDEX = "frame_index"
START_S = "start_s"
END_S = "end_s"
SCORES = "scores"
TOP_CLASSES = "top_classes"
EMBEDDING = "embedding"
LOGMEL_STATS = "logmel_stats"
LOGMEL_PATCH = "logmel_patch"
MODEL = "model"
CONFIG_ID = "config_id"

LABEL_SCORE = pa.struct([("label", pa.string()), ("score", pa.float32())])
TOP_CLASS = pa.struct([("index", pa.int32()), ("label", pa.string()), ("score", pa.float32())])


@dataclasses.dataclass(frozen=True)
class FrameColumns:
    """Which optional frame columns a run writes (all chosen by job options)."""

    embedding_dtype: str = "float32"  # 'float32' | 'float16'
    top_k: int = 0  # > 0: keep only the top-k (class, score) pairs instead of all scores
    logmel_stats: bool = False  # mean and std of each mel band over the frame's patch
    logmel_patch: bool = False  # the whole log-mel patch, float16
    scores: bool = True  # False: no scores column (tag_audio --no_base_scores: heads score the frames)


# ``channel``: the file's channel a row is about (0 = first), null when the channels were mixed to
# mono (``--channels mix``, the default).  Frames, files and events rows all carry it.
CHANNEL = pa.field("channel", pa.int32())

# Columns that several tables share are declared once, so a join across tables never meets two types.
URI_FIELD = pa.field(URI, pa.string(), nullable=False)
START_S_FIELD = pa.field(START_S, pa.float64(), nullable=False)  # seconds from the start of the file
END_S_FIELD = pa.field(END_S, pa.float64(), nullable=False)
# Where a frame is: the frames table's key, which search hits carry as well.
FRAME_LOCATION = (URI_FIELD, CHANNEL, pa.field(FRAME_INDEX, pa.int32(), nullable=False), START_S_FIELD,
                  END_S_FIELD)
# Which model and configuration made a row: the last columns of frames, files and events.
PROVENANCE = (pa.field(MODEL, pa.string(), nullable=False), pa.field(CONFIG_ID, pa.string(), nullable=False))


def frames_schema(spec: ModelSpec, columns: FrameColumns = FrameColumns(), config: str | None = None
                  ) -> pa.Schema:
    """``config``: the config id, when not ``config_id(spec)`` (a head scoring another model's frames)."""
    fields = list(FRAME_LOCATION)
    if not columns.scores:
        pass
    elif columns.top_k > 0:
        fields.append(pa.field(TOP_CLASSES, pa.list_(TOP_CLASS)))
    else:
        fields.append(pa.field(SCORES, pa.list_(pa.float32())))
    if spec.embedding_dim > 0:
        fields.append(pa.field(EMBEDDING, pa.list_(pa.from_numpy_dtype(columns.embedding_dtype))))
    if columns.logmel_stats:
        fields.append(pa.field(LOGMEL_STATS, pa.list_(pa.float32())))
    if columns.logmel_patch:
        fields.append(pa.field(LOGMEL_PATCH, pa.list_(pa.float16())))
    fields += PROVENANCE
    return pa.schema(fields, metadata=model_metadata(spec, config))


def files_schema(spec: ModelSpec, config: str | None = None, sidecar: bool = False) -> pa.Schema:
    """The files table; ``sidecar`` adds the ``sidecar`` column (an archive member's JSON sidecar,
    tag_audio --archive_sidecar json)."""
    fields = [
        URI_FIELD,
        CHANNEL,
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string(), nullable=False),
        pa.field("duration_s", pa.float64()),
        pa.field("sample_rate", pa.int32()),
        pa.field("channels", pa.int32()),
        pa.field("codec", pa.string()),
        pa.field("size_bytes", pa.int64()),
        pa.field("last_modified", pa.float64()),  # seconds since the epoch, as listed
        pa.field("num_frames", pa.int32(), nullable=False),
        pa.field("top_labels_mean", pa.list_(LABEL_SCORE)),
        pa.field("top_labels_max", pa.list_(LABEL_SCORE)),
        *PROVENANCE,
    ]
    if sidecar:
        fields.append(pa.field("sidecar", pa.string()))
    return pa.schema(fields, metadata=model_metadata(spec, config))


def config_id(spec: ModelSpec) -> str:
    """Identifies what a frame means: the model's weights plus the framing applied to the audio.

    Two runs with equal config ids produce interchangeable frames; a new model
    version or a different hop produces new rows next to the old.
    """
    key = f"{spec.fingerprint}|{spec.sample_rate}|{spec.window_samples}|{spec.hop_samples}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def head_config_id(base_config_id: str, head_fingerprint: str) -> str:
    """A head's frames scored on another model's pass: that model's config id plus the head's weights.

    The same for ``tag_audio --head`` and ``beam_jobs.apply_head``: their rows are interchangeable.
    """
    return hashlib.sha256(f"{base_config_id}|{head_fingerprint}".encode()).hexdigest()[:16]


def model_metadata(spec: ModelSpec, config: str | None = None) -> dict[bytes, bytes]:
    values = {
        "model": spec.name,
        "model_identity": spec.identity,
        "model_fingerprint": spec.fingerprint,
        "class_names": json.dumps(list(spec.class_names)),
        "sample_rate": str(spec.sample_rate),
        "window_samples": str(spec.window_samples),
        "hop_samples": str(spec.hop_samples),
        "window_s": repr(spec.window_s),
        "hop_s": repr(spec.hop_s),
        "embedding_dim": str(spec.embedding_dim),
        "config_id": config or config_id(spec),
        "version": PACKAGE_VERSION,
    }
    return {(METADATA_PREFIX + k).encode(): v.encode() for k, v in values.items()}


def read_model_metadata(schema: pa.Schema) -> dict[str, str]:
    """The metadata written by ``model_metadata``, keys without prefix (class_names still JSON)."""
    raw = schema.metadata or {}
    prefix = METADATA_PREFIX.encode()
    return {k[len(prefix):].decode(): v.decode() for k, v in raw.items() if k.startswith(prefix)}


def class_names_from(schema: pa.Schema) -> list[str]:
    return json.loads(read_model_metadata(schema).get("class_names", "[]"))
