"""The 'savedmodel' kind: any SavedModel that maps waveforms to an embedding (and optionally scores).

    python -m beam_jobs.tag_audio --model savedmodel --model_path DIR [--sample_rate 16000] \\
        [--window_s 1.0] [--hop_s 0.5] [--embedding_output NAME] [--scores_output NAME] [--pooling mean]

Spec resolution, field by field; the first source that answers wins:

- sample rate: ``--sample_rate``; ``assets/model_spec.json`` ``sample_rate``; 16000.
- window: ``--window_s``; ``model_spec.json`` ``window_samples``; the signature's fixed input
  length.  Otherwise the job stops and asks for ``--window_s``.  A flag that contradicts a
  fixed input length is an error.
- hop: ``--hop_s``; ``model_spec.json`` ``hop_samples``; the window (frames do not overlap).
- signature: ``model_spec.json`` ``signature``; ``serving_default``; the only signature.
  Its input: ``model_spec.json`` ``input``; the only input.
- embedding output: ``--embedding_output``; ``model_spec.json`` ``embedding_output``; the output
  named ``embedding``; the only float output besides the scores.  None is allowed when there
  are scores (a classifier).
- scores output: ``--scores_output``; ``model_spec.json`` ``scores_output``; the output named
  ``scores``; none (the scores column then holds empty lists).
- labels (with scores only): ``ModelSource.class_map``; ``model_spec.json`` ``labels``;
  ``assets/labels.txt``; the only ``assets/*.csv`` class map (``display_name``, as TF Hub
  models ship); else ``class_0``, ``class_1``, ...
- pooling of sequence outputs: ``--pooling``; ``model_spec.json`` ``pooling``; ``mean``.

Signatures: ``[B, N]`` (or ``[None, None]``) runs whole batches.  A 1-D ``[N]`` signature (TF
Hub style) or a fixed ``[1, N]`` one cannot batch: it runs window by window, with a warning.

Sequence outputs: a batched output ``[B, T, D]`` (or ``[T, D]`` per window from a 1-D
signature, e.g. wav2vec2's hidden states) is pooled over T into one ``[D]`` vector per window.
A frames row still spans its whole window: ``start_s = frame_index * hop_s``, ``end_s =
start_s + window_s``; the encoder's own step times within the window (e.g. wav2vec2's 20 ms)
are not kept.  A per-window ``[1, D]`` output (YAMNet-like Hub models fed one window) pools to
itself.

The model's fingerprint hashes ``saved_model.pb``, the variables and which outputs are read
with which pooling, so choosing other outputs gives a new ``config_id``.

``--features logmel`` works here too: the YAMNet log-mel frontend (``audio_models.logmel``)
runs on each window in the same ``predict`` call; it needs a 16 kHz model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading

import numpy as np

import storage
from audio_models import model_assets
from audio_models.loading import ModelSource, ModelUnavailableError, read_errors_as_unavailable, register_kind
from audio_models.spec import EMBEDDING, LOGMEL, SCORES, ModelSpec, checked_windows

KIND = "savedmodel"
DEFAULT_SAMPLE_RATE = 16000
DEFAULT_SIGNATURE = "serving_default"
POOLINGS = ("mean", "max")
DEFAULT_POOLING = "mean"

# Keys of ``ModelSource.options`` this kind reads (tag_audio's flags of the same names).
OPT_SAMPLE_RATE = "sample_rate"
OPT_WINDOW_S = "window_s"
OPT_EMBEDDING_OUTPUT = "embedding_output"
OPT_SCORES_OUTPUT = "scores_output"
OPT_POOLING = "pooling"

LOGMEL_SAMPLE_RATE = 16000  # the YAMNet frontend's rate

_log = logging.getLogger(__name__)
_warned_unbatched: set[str] = set()
_warn_lock = threading.Lock()


# --- what the SavedModel declares ---------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """A signature tensor: ``shape`` with None for unknown sizes (None = unknown rank), dtype name."""

    shape: tuple[int | None, ...] | None
    dtype: str

    @property
    def is_float(self) -> bool:
        return self.dtype in ("float16", "bfloat16", "float32", "float64")

    def describe(self) -> str:
        dims = "?" if self.shape is None else ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype}[{dims}]"


@dataclasses.dataclass(frozen=True)
class Signature:
    name: str
    input_name: str
    input: TensorInfo
    outputs: dict[str, TensorInfo]

    @property
    def batched(self) -> bool:
        """True for ``[B, N]`` inputs; False for 1-D ``[N]`` and fixed ``[1, N]`` (run window by window)."""
        return self.input.shape is not None and len(self.input.shape) == 2 and self.input.shape[0] != 1

    @property
    def has_batch_axis(self) -> bool:
        return self.input.shape is not None and len(self.input.shape) == 2

    @property
    def fixed_length(self) -> int | None:
        return None if not self.input.shape else self.input.shape[-1]


def read_signature(model_dir: str, wanted_signature: str | None = None,
                   wanted_input: str | None = None) -> Signature:
    """The serving signature as ``saved_model.pb`` declares it (no graph is built, no weights read)."""
    from tensorflow.core.protobuf import saved_model_pb2

    pb_path = storage.join(model_dir, "saved_model.pb")
    if not storage.exists(pb_path):
        raise ModelUnavailableError(f"{model_dir} is not a SavedModel directory (no saved_model.pb)")
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(storage.read_bytes(pb_path))
    signatures = {}
    for meta_graph in proto.meta_graphs:
        # Keys like '__saved_model_init_op' are TensorFlow's bookkeeping, not callable signatures.
        signatures.update({k: v for k, v in meta_graph.signature_def.items() if not k.startswith("__")})
    if not signatures:
        raise ModelUnavailableError(
            f"{model_dir} has no serving signature: save it with "
            "tf.saved_model.save(module, dir, signatures={'serving_default': module.serve})")
    name = _choose(wanted_signature, DEFAULT_SIGNATURE, sorted(signatures), "signature", model_dir)
    definition = signatures[name]
    input_name = _choose(wanted_input, None, sorted(definition.inputs), f"input of signature {name!r}",
                         model_dir)
    signature = Signature(name, input_name, _tensor_info(definition.inputs[input_name]),
                          {k: _tensor_info(v) for k, v in definition.outputs.items()})
    shape = signature.input.shape
    if shape is None or len(shape) not in (1, 2) or not signature.input.is_float:
        raise ModelUnavailableError(
            f"{model_dir}: input {input_name!r} of signature {name!r} is {signature.input.describe()}; "
            "a waveform model takes float [B, N] or [N]")
    if len(shape) == 2 and shape[0] not in (None, 1):
        raise ModelUnavailableError(
            f"{model_dir}: input {input_name!r} has a fixed batch of {shape[0]}; export it with [None, N]")
    return signature


def _choose(wanted: str | None, default: str | None, names: list[str], what: str, where: str) -> str:
    if wanted is not None:
        if wanted not in names:
            raise ModelUnavailableError(f"{where} has no {what} {wanted!r} (it has: {', '.join(names)})")
        return wanted
    if default is not None and default in names:
        return default
    if len(names) == 1:
        return names[0]
    raise ModelUnavailableError(
        f"{where} has several of {what}s ({', '.join(names)}): name one in assets/model_spec.json")


def _tensor_info(proto) -> TensorInfo:
    import tensorflow as tf

    dtype = tf.dtypes.as_dtype(proto.dtype).name
    if proto.tensor_shape.unknown_rank:
        return TensorInfo(None, dtype)
    return TensorInfo(tuple(None if d.size < 0 else int(d.size) for d in proto.tensor_shape.dim), dtype)


# --- the resolved configuration -----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class GenericConfig:
    """Everything that decides what the model's frames mean, resolved once from flags, assets and pb."""

    spec: ModelSpec
    signature: Signature
    embedding_output: str | None
    scores_output: str | None
    pooling: str


def _option(options: dict[str, str], document: dict, key: str, document_key: str | None = None):
    if key in options:
        return options[key]
    return document.get(document_key or key)


def _to_samples(seconds: float, sample_rate: int, what: str) -> int:
    samples = int(round(float(seconds) * sample_rate))
    if samples <= 0:
        raise ModelUnavailableError(f"{what} must be positive (got {seconds} s at {sample_rate} Hz)")
    return samples


def _select_outputs(signature: Signature, options: dict[str, str], document: dict,
                    model_dir: str) -> tuple[str | None, str | None]:
    """(embedding output, scores output) by the rules in the module docstring."""
    available = ", ".join(f"{k} {v.describe()}" for k, v in sorted(signature.outputs.items()))

    def checked(name: str | None, flag: str) -> str | None:
        if name is None:
            return None
        info = signature.outputs.get(name)
        if info is None:
            raise ModelUnavailableError(
                f"{model_dir} has no output {name!r} ({flag}); its outputs: {available}")
        if not info.is_float:
            raise ModelUnavailableError(f"output {name!r} of {model_dir} is {info.describe()}, not float")
        return name

    scores = checked(_option(options, document, OPT_SCORES_OUTPUT), "--scores_output")
    if scores is None and SCORES in signature.outputs and signature.outputs[SCORES].is_float:
        scores = SCORES
    embedding = checked(_option(options, document, OPT_EMBEDDING_OUTPUT), "--embedding_output")
    if embedding is None:
        if EMBEDDING in signature.outputs and signature.outputs[EMBEDDING].is_float:
            embedding = EMBEDDING
        else:
            candidates = [k for k, v in signature.outputs.items() if v.is_float and k != scores]
            if len(candidates) == 1:
                embedding = candidates[0]
            elif candidates or scores is None:
                raise ModelUnavailableError(
                    f"which output of {model_dir} is the embedding? pass --embedding_output "
                    f"(and --scores_output if it has scores); its outputs: {available}")
    return embedding, scores


def _declared_width(info: TensorInfo, has_batch_axis: bool) -> int | None:
    """Vector size per window after pooling, from a declared shape (None when not declared)."""
    if info.shape is None:
        return None
    per_window = info.shape[1:] if has_batch_axis else info.shape
    if len(per_window) == 0:
        return 1
    if len(per_window) > 2:
        raise ModelUnavailableError(
            f"an output of shape {info.describe()} is neither a vector nor a sequence of vectors per window")
    return per_window[-1]


def resolve_config(source: ModelSource, runner: _Runner | None = None) -> GenericConfig:
    """The spec and output selection of ``source``; runs the model once only when a width is undeclared."""
    path = source.local_path()
    options = dict(source.options)
    document = model_assets.read_spec_document(path) or {}
    signature = read_signature(path, document.get("signature"), document.get("input"))

    sample_rate = int(_option(options, document, OPT_SAMPLE_RATE) or DEFAULT_SAMPLE_RATE)
    if sample_rate <= 0:
        raise ModelUnavailableError(f"--sample_rate must be positive (got {sample_rate})")
    fixed = signature.fixed_length
    if OPT_WINDOW_S in options:
        window = _to_samples(float(options[OPT_WINDOW_S]), sample_rate, "--window_s")
    elif document.get("window_samples"):
        window = int(document["window_samples"])
    elif fixed is not None:
        window = fixed
    else:
        raise ModelUnavailableError(
            f"{path} takes waveforms of any length: pass --window_s (seconds per window) "
            "or put window_samples in assets/model_spec.json")
    if fixed is not None and window != fixed:
        raise ModelUnavailableError(
            f"{path} takes exactly {fixed} samples ({fixed / sample_rate:g} s at {sample_rate} Hz), "
            f"not a window of {window}")
    if source.hop_s is not None:
        hop = _to_samples(source.hop_s, sample_rate, "--hop_s")
    else:
        hop = int(document.get("hop_samples") or window)

    pooling = str(_option(options, document, OPT_POOLING) or DEFAULT_POOLING)
    if pooling not in POOLINGS:
        raise ModelUnavailableError(f"--pooling must be one of {', '.join(POOLINGS)} (got {pooling!r})")
    embedding, scores = _select_outputs(signature, options, document, path)
    if not signature.batched:
        _warn_unbatched(path, signature)

    widths = {name: _declared_width(signature.outputs[name], signature.has_batch_axis)
              for name in (embedding, scores) if name is not None}
    if any(width is None for width in widths.values()):  # e.g. [None, None]: ask the model itself
        runner = runner or _Runner(path, signature)
        probe = runner.run(np.zeros((1, window), np.float32), [n for n in widths], pooling)
        widths = {name: int(value.shape[1]) for name, value in probe.items()}

    class_names: tuple[str, ...] = ()
    if scores is not None:
        class_names = _labels(source, document, path, widths[scores])
    spec = ModelSpec(
        name=KIND, sample_rate=sample_rate, window_samples=window, hop_samples=hop,
        class_names=class_names, embedding_dim=widths[embedding] if embedding is not None else 0,
        fingerprint=_fingerprint(path, signature, embedding, scores, pooling))
    return GenericConfig(spec, signature, embedding, scores, pooling)


def _labels(source: ModelSource, document: dict, path: str, num_scores: int) -> tuple[str, ...]:
    if source.class_map:
        labels, origin = model_assets.read_labels_file(source.class_map), source.class_map
    elif document.get("labels"):
        labels, origin = tuple(str(label) for label in document["labels"]), "assets/model_spec.json"
    else:
        labels, origin = model_assets.find_labels(path), "the labels in assets/"
    if labels is None:
        _log.warning("%s ships no labels: its %d scores are named class_0 .. class_%d",
                     path, num_scores, num_scores - 1)
        return tuple(f"class_{i}" for i in range(num_scores))
    if len(labels) != num_scores:
        raise ModelUnavailableError(
            f"{path} gives {num_scores} scores per window but {origin} lists {len(labels)} labels")
    return labels


def _fingerprint(path: str, signature: Signature, embedding: str | None, scores: str | None,
                 pooling: str) -> str:
    """SHA-256 over the graph, the variables (names and bytes) and the output selection."""
    files = [storage.join(path, "saved_model.pb")]
    variables_dir = storage.join(path, "variables")
    if storage.is_dir(variables_dir):
        files += [storage.join(variables_dir, n) for n in storage.list_names(variables_dir)]
    selection = f"{signature.name}|{signature.input_name}|{embedding}|{scores}|{pooling}"
    return storage.fingerprint(files, with_names=True, extra=selection.encode())


def _warn_unbatched(path: str, signature: Signature) -> None:
    with _warn_lock:
        if path in _warned_unbatched:
            return
        _warned_unbatched.add(path)
    _log.warning(
        "%s: signature %r takes one waveform %s, so it cannot batch: windows run one at a time "
        "(slower; export a [None, N] signature to batch)", path, signature.name, signature.input.describe())


# --- running it ---------------------------------------------------------------------------------

def pool_windows(values: np.ndarray, pooling: str) -> np.ndarray:
    """Per-window outputs ``[B]``, ``[B, D]`` or ``[B, T, D]`` -> ``[B, D]`` float32 (T pooled away)."""
    values = np.asarray(values)
    if values.ndim == 1:
        values = values[:, None]
    elif values.ndim == 3:
        values = values.max(axis=1) if pooling == "max" else values.mean(axis=1)
    elif values.ndim != 2:
        raise ValueError(f"model output of shape {values.shape} is not [B, D] or [B, T, D]")
    return values.astype(np.float32, copy=False)


class _Runner:
    """The loaded SavedModel's signature, called on ``[B, N]`` windows (a loop for unbatched ones)."""

    def __init__(self, path: str, signature: Signature, device: str | None = None):
        import tensorflow as tf

        # Keeps the variables alive as long as the function.
        self._loaded = tf.saved_model.load(storage.local_copy(path))
        self._function = self._loaded.signatures[signature.name]
        self._signature = signature
        self._dtype = tf.dtypes.as_dtype(signature.input.dtype)
        self.device = device

    def run(self, windows: np.ndarray, names: list[str], pooling: str) -> dict[str, np.ndarray]:
        """``{name: [B, D]}`` for the ``names`` outputs, pooled per window."""
        import tensorflow as tf

        with tf.device(self.device) if self.device else contextlib.nullcontext():
            if self._signature.batched:
                outputs = self._call(tf.constant(windows, self._dtype))
                return {name: pool_windows(outputs[name].numpy(), pooling) for name in names}
            per_window = {name: [] for name in names}
            fixed_batch = self._signature.has_batch_axis  # [1, N]: add and drop the batch axis
            for window in windows:
                outputs = self._call(tf.constant(window[None] if fixed_batch else window, self._dtype))
                for name in names:
                    value = outputs[name].numpy()
                    per_window[name].append(value[0] if fixed_batch else value)
        return {name: pool_windows(np.stack(values), pooling) for name, values in per_window.items()}

    def _call(self, tensor):
        return self._function(**{self._signature.input_name: tensor})


class SavedModelAdapter:
    """A waveform SavedModel behind the ``BatchedModel`` interface (``audio_models.spec``)."""

    def __init__(self, config: GenericConfig, runner: _Runner):
        self.spec = config.spec
        self.config = config
        self._runner = runner
        self._outputs = [n for n in (config.embedding_output, config.scores_output) if n is not None]
        self._mel_matrix = None

    def predict(self, windows: np.ndarray, with_logmel: bool = False) -> dict[str, np.ndarray]:
        """``windows [B, window_samples]`` -> ``scores [B, C]`` (C = 0 without scores), ``embedding``
        ``[B, D]`` when the model has one, and ``logmel [B, frames, 64]`` when asked."""
        windows = checked_windows(windows, self.spec)
        if windows.shape[0] == 0:
            raw = {name: np.zeros((0, self._width(name)), np.float32) for name in self._outputs}
        else:
            raw = self._runner.run(windows, self._outputs, self.config.pooling)
        result = {SCORES: np.zeros((windows.shape[0], 0), np.float32)}
        if self.config.scores_output is not None:
            result[SCORES] = raw[self.config.scores_output]
        if self.config.embedding_output is not None:
            result[EMBEDDING] = raw[self.config.embedding_output]
        if with_logmel:
            result[LOGMEL] = self._logmel(windows)
        return result

    def _width(self, name: str) -> int:
        return self.spec.num_classes if name == self.config.scores_output else self.spec.embedding_dim

    def _logmel(self, windows: np.ndarray) -> np.ndarray:
        """YAMNet's log-mel frontend on each window: ``[B, 1 + (N - 400) // 160, 64]``."""
        import tensorflow as tf

        from audio_models import logmel

        reason = logmel_unsupported_reason(self.spec)
        if reason:
            raise ValueError(reason)
        if self._mel_matrix is None:
            self._mel_matrix = logmel.mel_weight_matrix()
        with tf.device(self._runner.device) if self._runner.device else contextlib.nullcontext():
            return logmel.log_mel_spectrogram(windows, self._mel_matrix).numpy()


def logmel_unsupported_reason(spec: ModelSpec) -> str | None:
    """Why this kind cannot add log-mel features for ``spec`` (None when it can)."""
    from audio_models import logmel

    if spec.sample_rate != LOGMEL_SAMPLE_RATE:
        return (f"log-mel features use YAMNet's {LOGMEL_SAMPLE_RATE} Hz frontend; this model runs at "
                f"{spec.sample_rate} Hz")
    if spec.window_samples < logmel.STFT_WINDOW_SAMPLES:
        return f"a window of {spec.window_samples} samples is shorter than one STFT frame"
    return None


# --- the loaders registered for the kind --------------------------------------------------------

def _readable(path: str):
    return read_errors_as_unavailable(f"use {path} as a waveform SavedModel")


def load_savedmodel_spec(source: ModelSource) -> ModelSpec:
    with _readable(source.path):
        return resolve_config(source).spec


def load_savedmodel_model(source: ModelSource) -> SavedModelAdapter:
    from audio_models.device import selected_device

    with _readable(source.path):
        path = source.local_path()
        document = model_assets.read_spec_document(path) or {}
        signature = read_signature(path, document.get("signature"), document.get("input"))
        runner = _Runner(path, signature, selected_device())
        return SavedModelAdapter(resolve_config(source, runner), runner)


register_kind(KIND, load_savedmodel_spec, load_savedmodel_model,
              path_hint="/path/to/model (a local or gs:// SavedModel directory, or a TF Hub handle)",
              needs_graph=True)
