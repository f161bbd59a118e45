"""Classifier heads on one pass of a base model (``tag_audio --head H1 --head H2``).

A head (an export of ``train_head``) reads YAMNet's embedding (and, for some
layouts, log-mel statistics) of a window.  Run end to end, each head decodes
the audio and runs YAMNet again; here the audio is decoded once, YAMNet runs
once per window, and every head scores the batch's embeddings through its
``from_features`` signature: a matrix product per head.

Layout: each head's output is an OUT_DIR of its own, ``OUT/heads/<name>/``,
with ``frames`` (``uri``, ``channel``, ``frame_index``, ``start_s``, ``end_s``,
``scores`` over the head's classes, ``model``, ``config_id``), ``files`` and
``runs/<run id>.json`` of the same run id as the base run.  Its Parquet
metadata carries the head's class names; its config id is the base model's
config id plus the head's fingerprint (``schemas.tables.head_config_id``), the
same as ``beam_jobs.apply_head`` gives, so every reader (pandas, DuckDB, the
current view, ``beam_jobs.events``, ``plot``, ``inspect``) reads a head by
pointing at its directory.  Embeddings stay in the base ``OUT/frames``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import storage
from audio_models.loading import ModelSource, ModelUnavailableError, load_spec, resolve_source
from audio_models.spec import ModelSpec
from schemas.tables import FrameColumns, head_config_id
from transforms.output.layout import RunRecord
from transforms.output.publish import PublishRun, commit
from transforms.tagging.frame_table import FrameTableBuilder

HEADS_DIR = "heads"  # OUT/heads/<name>/ holds each head's tables
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclasses.dataclass(frozen=True)
class HeadOutput:
    """One head of a run: where it is, what it is, and where its tables go."""

    name: str
    source: ModelSource
    spec: ModelSpec  # the head's own: its classes and fingerprint
    config: str  # head_config_id(base config id, head fingerprint)
    out_dir: str  # OUT/heads/<name>
    columns: tuple[str, ...] = ("embedding",)  # the frame columns it reads

    @property
    def table_spec(self) -> ModelSpec:
        """What its frames rows hold: the head's classes on the base model's windows, no embedding."""
        return dataclasses.replace(self.spec, embedding_dim=0)

    def builder(self) -> FrameTableBuilder:
        return FrameTableBuilder(self.table_spec, FrameColumns(), self.config)

    def record(self, base: RunRecord) -> RunRecord:
        """The head's run record: the base run's id and parameters, the head as its model."""
        spec = self.spec
        return dataclasses.replace(
            base, out_dir=self.out_dir, model={
                "kind": spec.name, "identity": spec.identity, "fingerprint": spec.fingerprint,
                "config_id": self.config, "sample_rate": spec.sample_rate,
                "window_samples": spec.window_samples, "hop_samples": spec.hop_samples,
                "num_classes": spec.num_classes, "embedding_dim": 0, "source": self.source.path,
                "head": self.name, "base": {"identity": base.model.get("identity"),
                                            "config_id": base.model.get("config_id")}})


def head_name(path: str) -> str:
    """``HEAD_DIR/export`` -> ``HEAD_DIR``'s last segment; any other path -> its last segment."""
    segments = [s for s in path.rstrip("/").split("/") if s]
    if len(segments) > 1 and segments[-1] == "export":
        return segments[-2]
    return segments[-1] if segments else path


def split_name(argument: str) -> tuple[str, str]:
    """``NAME=PATH`` or ``PATH`` -> (name, path)."""
    name, sep, path = argument.partition("=")
    if sep and _NAME.match(name) and path:
        return name, path
    return head_name(argument), argument


def resolve_heads(arguments: Sequence[str], base_spec: ModelSpec, base_config: str, output: str
                  ) -> tuple[HeadOutput, ...]:
    """The heads named by ``--head`` arguments, checked against the base model; ValueError says what to do."""
    if not arguments:
        return ()
    # Here, not at the top: audio_models.head imports TensorFlow, which runs without heads never need.
    from audio_models.head import KIND as HEAD_KIND
    from audio_models.head import read_base_model, read_head_layout

    if base_spec.name != "yamnet":
        raise ValueError(f"heads score YAMNet's embedding: use --model yamnet (the base model here is "
                         f"{base_spec.identity})")
    heads: list[HeadOutput] = []
    for argument in arguments:
        name, path = split_name(argument)
        if not _NAME.match(name):
            raise ValueError(f"{argument!r}: a head's name (from its directory, or NAME=PATH) must be "
                             "letters, digits, '_', '-' or '.'")
        if any(h.name == name for h in heads):
            raise ValueError(f"two heads are named {name!r}: name them with --head NAME=PATH")
        try:
            source = resolve_source(HEAD_KIND, path)
            spec = load_spec(source)
            base = read_base_model(source)
            layout = read_head_layout(source)
        except ModelUnavailableError as e:
            raise ValueError(str(e)) from None
        trained_on = base.get("config_id")
        if trained_on and trained_on != base_config:
            raise ValueError(f"head {name} was trained on frames of {base.get('identity')} (config "
                             f"{trained_on}); --model_path gives {base_spec.identity} (config "
                             f"{base_config}): its embeddings would mean something else")
        heads.append(HeadOutput(name, source, spec, head_config_id(base_config, spec.fingerprint),
                                storage.join(output, HEADS_DIR, name), tuple(layout.columns)))
    return tuple(heads)


class PublishHeadRun(PublishRun):
    """A head's tables published like any run, in the head's own output (``OUT/heads/NAME``).

    The base run's publish step runs after every head's and gives the output's lease up; a head only
    checks that the run still holds it, and commits in its own log at the next free number: the base
    run's lease on OUT covers OUT/heads/NAME, so nobody else commits there meanwhile.
    """

    def _commit(self, final: RunRecord) -> RunRecord:
        return commit(final, None)
