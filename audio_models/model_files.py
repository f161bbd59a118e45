"""Whether a SavedModel directory is whole: the check that runs before any work.

A partial copy (an interrupted ``gsutil cp``, a full disk, a sync that stopped) keeps its labels and
its spec, so reading the spec works; only building the graph or reading the weights fails, on the
workers, long after the job started. Here the driver reads what the loaders will read: the graph
(``saved_model.pb``, when the kind builds it) and every tensor of the variables, whose index records
each tensor's bytes and checksum, so a short or damaged shard shows now.
"""

from __future__ import annotations

import storage

SAVED_MODEL_PB = "saved_model.pb"
_VARIABLES_PREFIX = "variables/variables"
_RECOPY = "copy the whole model directory again"


def damage(path: str, needs_graph: bool) -> str | None:
    """What is missing or damaged in the SavedModel directory ``path`` (None: it looks whole, or it is
    not a directory). ``needs_graph``: the kind builds the graph from ``saved_model.pb``; YAMNet's
    re-implementation reads only the variables."""
    if not storage.is_dir(path):
        return None  # a single weights file (yamnet.h5): its loader reads and checks it
    pb = storage.join(path, SAVED_MODEL_PB)
    if needs_graph:
        if not storage.exists(pb):
            return f"{path} has no {SAVED_MODEL_PB}, so it is not a whole SavedModel: {_RECOPY}"
        if problem := _graph_damage(pb):
            return f"{pb} is damaged ({problem}): {_RECOPY}"
    if problem := _variables_damage(path):
        return f"the variables of {path} are damaged ({problem}): {_RECOPY}"
    return None


def _graph_damage(pb: str) -> str | None:
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    try:
        saved_model_pb2.SavedModel().ParseFromString(storage.read_bytes(pb))
    except DecodeError as e:
        return f"it does not parse: {_one_line(e)}"
    return None


def _variables_damage(path: str) -> str | None:
    variables = storage.join(path, "variables")
    names = storage.list_names(variables) if storage.is_dir(variables) else []
    shards = [n for n in names if n.startswith("variables.data-")]
    if not shards:
        return None  # a model whose weights are all constants of the graph
    if "variables.index" not in names:
        return f"{len(shards)} data shard(s) but no variables.index"
    declared = {int(n.rsplit("-of-", 1)[1]) for n in shards if n.rsplit("-of-", 1)[-1].isdigit()}
    if len(declared) == 1 and len(shards) < declared.pop():
        return f"{len(shards)} data shard(s) of the {int(shards[0].rsplit('-of-', 1)[1])} their names declare"
    if storage.is_remote(path):
        return None  # on gs:// the file list only: reading every tensor would download it on the driver too
    return _tensor_damage(storage.join(path, _VARIABLES_PREFIX))


def _tensor_damage(prefix: str) -> str | None:
    """Reads every tensor once: TensorFlow checks each one's length and CRC32C against the index."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, IndexError, ValueError) as e:  # a short shard is an IndexError
        return _one_line(e.message if isinstance(e, tf.errors.OpError) else e)
    return None


def _one_line(error: object, limit: int = 160) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
