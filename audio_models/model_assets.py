"""The files a SavedModel carries about itself in ``assets/``: ``model_spec.json`` and its labels.

``model_spec.json`` is the layout ``audio_models.keyword`` exports (keys, all
optional here): ``kind``, ``sample_rate``, ``window_samples``, ``hop_samples``,
``labels``, ``signature``, ``input``, ``scores_output``, ``embedding_output``,
``embedding_dim``.  Any exporter can write it to make its model run with no
flags.  Readers here only read: they never judge whether a model is of a kind.
Paths may be local or ``gs://``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from collections.abc import Iterator, Sequence

import storage
from audio_models.spec import EMBEDDING, SCORES, ModelSpec

SPEC_ASSET = "model_spec.json"
LABELS_ASSET = "labels.txt"
CLASS_MAP_SUFFIX = ".csv"  # a YAMNet-style class map (index, mid, display_name), as TF Hub models ship
SIGNATURE = "serving_default"  # the serving signature of the models this project exports
WAVEFORM_INPUT = "waveform"


def waveform_spec_document(kind: str, sample_rate: int, window_samples: int, hop_samples: int,
                           labels: Sequence[str], embedding_dim: int, **extra) -> dict:
    """The ``model_spec.json`` of a model this project exports: its serving signature takes a
    ``waveform`` batch and gives ``scores`` and ``embedding``; ``extra`` keys describe what made it."""
    return {"kind": kind, "sample_rate": sample_rate, "window_samples": window_samples,
            "hop_samples": hop_samples, "labels": list(labels), "signature": SIGNATURE,
            "input": WAVEFORM_INPUT, "scores_output": SCORES, "embedding_output": EMBEDDING,
            "embedding_dim": embedding_dim, **extra}


def spec_of_document(document: dict, fingerprint: str, hop_samples: int | None = None) -> ModelSpec:
    """The spec a ``waveform_spec_document`` describes (its stored hop unless ``hop_samples``)."""
    return ModelSpec(
        name=document["kind"],
        sample_rate=int(document["sample_rate"]),
        window_samples=int(document["window_samples"]),
        hop_samples=int(document["hop_samples"] if hop_samples is None else hop_samples),
        class_names=tuple(document["labels"]),
        embedding_dim=int(document.get("embedding_dim", 0)),
        fingerprint=fingerprint,
    )


@contextlib.contextmanager
def spec_assets(module, document: dict, labels: Sequence[str]) -> Iterator[None]:
    """Attaches ``model_spec.json`` and ``labels.txt`` to ``module`` as tracked assets for as long as
    the block runs: ``tf.saved_model.save`` inside it copies them into ``<export_dir>/assets/``."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as staging:
        spec_path, labels_path = os.path.join(staging, SPEC_ASSET), os.path.join(staging, LABELS_ASSET)
        with open(spec_path, "w") as f:
            json.dump(document, f, indent=2)
        with open(labels_path, "w") as f:
            f.write("".join(f"{label}\n" for label in labels))
        module.spec_asset = tf.saved_model.Asset(spec_path)
        module.labels_asset = tf.saved_model.Asset(labels_path)
        yield


def asset_path(model_dir: str, name: str) -> str:
    return storage.join(model_dir, "assets", name)


def read_spec_document(model_dir: str) -> dict | None:
    """``assets/model_spec.json`` as a dict, or None when the model has none."""
    path = asset_path(model_dir, SPEC_ASSET)
    if not storage.exists(path):
        return None
    document = storage.read_json(path)
    if not isinstance(document, dict):
        raise ValueError(f"{path} is not a JSON object")
    return document


def read_labels_file(path: str) -> tuple[str, ...]:
    """Class names from a labels file: one per line (``.txt``) or a class map CSV's ``display_name``."""
    text = storage.read_text(path)
    if path.lower().endswith(CLASS_MAP_SUFFIX):
        rows = list(csv.DictReader(text.splitlines()))
        if not rows or "display_name" not in rows[0]:
            raise ValueError(f"{path}: a class map CSV needs a display_name column")
        return tuple(row["display_name"] for row in rows)
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def find_labels(model_dir: str) -> tuple[str, ...] | None:
    """Class names shipped in ``assets/``: ``labels.txt``, else the only ``*.csv`` class map; else None."""
    labels_path = asset_path(model_dir, LABELS_ASSET)
    if storage.exists(labels_path):
        return read_labels_file(labels_path)
    assets = storage.join(model_dir, "assets")
    if not storage.is_dir(assets):
        return None
    class_maps = [n for n in storage.list_names(assets) if n.lower().endswith(CLASS_MAP_SUFFIX)]
    if len(class_maps) == 1:
        return read_labels_file(storage.join(assets, class_maps[0]))
    return None
