"""From what the user passed (``--model KIND``, ``--model_path PATH``) to a model a worker can load.

The driver calls ``resolve_source`` (cheap: locates the model, downloading a
TF Hub handle into the hub cache) and ``load_spec`` (reads only labels and
hashes the weights); the resulting ``ModelSource`` is a small picklable value
that travels to workers, which call ``load_model`` once per process.

Kinds register their loaders with ``register_kind``.  'yamnet' is registered
here; the modules of the other kinds are imported on first use and register
themselves on import, so adding a kind needs no edit to this file beyond its
entry in ``_KIND_MODULES``.  A loader takes the ``ModelSource``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import socket
from collections.abc import Callable, Iterator

import storage
from audio_models import model_assets, model_files
from audio_models.spec import BatchedModel, ModelSpec

YAMNET = "yamnet"
YAMNET_HUB_HANDLE = "https://tfhub.dev/google/yamnet/1"
# Per socket operation while fetching a hub handle: an unreachable host fails within this, not minutes.
NETWORK_TIMEOUT_S = 30.0

# Kinds whose modules register themselves when imported (see module docstring).
_KIND_MODULES = {
    "keyword": "audio_models.keyword",
    "head": "audio_models.head",
    "savedmodel": "audio_models.savedmodel",
}


class ModelUnavailableError(Exception):
    """The model cannot be fetched, opened or used as asked.  ``str(e)`` is one line for the user."""


class UnknownModelKindError(ModelUnavailableError, ValueError):
    """No loader is registered for the requested model kind."""


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """Where a model's files are (a local or ``gs://`` path) and how to read them; picklable."""

    kind: str
    path: str
    class_map: str | None = None  # class map CSV, when not the format's default place
    hop_s: float | None = None  # hop between windows, for kinds where it is configurable
    handle: str | None = None  # the TF Hub handle ``path`` was resolved from, if any
    # Kind-specific settings as (name, value) string pairs, e.g. the 'savedmodel' kind's
    # ('window_s', '1.0'); a tuple so the source stays hashable and picklable.
    options: tuple[tuple[str, str], ...] = ()

    def local_path(self) -> str:
        """``path`` on this machine: a worker without the driver's hub cache resolves the handle again."""
        if self.handle is not None and not _exists(self.path):
            return _resolve_hub_handle(self.kind, self.handle, NETWORK_TIMEOUT_S)
        return self.path


SpecLoader = Callable[[ModelSource], ModelSpec]
ModelLoader = Callable[[ModelSource], BatchedModel]


@dataclasses.dataclass(frozen=True)
class _Kind:
    spec_loader: SpecLoader
    model_loader: ModelLoader
    default_path: str | None
    path_hint: str  # what --model_path should be, for error messages
    needs_graph: bool  # loads a SavedModel's graph: saved_model.pb must be there and whole


_REGISTRY: dict[str, _Kind] = {}


def register_kind(kind: str, spec_loader: SpecLoader, model_loader: ModelLoader,
                  default_path: str | None = None,
                  path_hint: str = "/path/to/model (a local or gs:// SavedModel directory)",
                  needs_graph: bool = False) -> None:
    """Makes ``kind`` loadable: ``spec_loader(source)`` on the driver, ``model_loader(source)`` on workers.

    ``needs_graph``: the loader builds a SavedModel's graph, so a directory without a whole
    ``saved_model.pb`` is refused before work (YAMNet's re-implementation reads only the variables).
    Any kind's variables shards are checked whole."""
    _REGISTRY[kind] = _Kind(spec_loader, model_loader, default_path, path_hint, needs_graph)


@contextlib.contextmanager
def read_errors_as_unavailable(what: str, hint: str = "") -> Iterator[None]:
    """Turns a missing, unreadable or malformed model (OS, JSON, TensorFlow errors) into the one-line
    ``ModelUnavailableError`` the user sees: ``could not {what}: {cause}{hint}``."""
    import tensorflow as tf

    try:
        yield
    except ModelUnavailableError:
        raise
    except (OSError, ValueError, KeyError, tf.errors.OpError) as e:
        message = e.message if isinstance(e, tf.errors.OpError) else str(e)
        raise ModelUnavailableError(f"could not {what}: {one_line(message)}{hint}") from None


def known_kinds() -> list[str]:
    return sorted(set(_REGISTRY) | set(_KIND_MODULES))


def _kind(kind: str) -> _Kind:
    if kind not in _REGISTRY and kind in _KIND_MODULES:
        try:
            importlib.import_module(_KIND_MODULES[kind])
        except ModuleNotFoundError as e:
            if e.name != _KIND_MODULES[kind]:
                raise
            raise UnknownModelKindError(
                f"model kind {kind!r} is not available in this installation "
                f"(module {_KIND_MODULES[kind]} is missing)") from None
    if kind not in _REGISTRY:
        raise UnknownModelKindError(
            f"unknown model kind {kind!r}: use one of {', '.join(known_kinds())}")
    return _REGISTRY[kind]


# --- driver side --------------------------------------------------------------------------------

def infer_kind(path: str | None) -> str:
    """The kind an exported model declares in ``assets/model_spec.json`` (keyword, head ...), else
    yamnet."""
    if path and not _is_hub_handle(path):
        try:
            document = model_assets.read_spec_document(path) or {}
        except Exception:  # noqa: BLE001 - an unreadable path is reported when the model is resolved
            document = {}
        if document.get("kind") in known_kinds():
            return document["kind"]
    return YAMNET


def resolve_source(kind: str | None, path: str | None = None, *, class_map: str | None = None,
                   hop_s: float | None = None, options: tuple[tuple[str, str], ...] = (),
                   network_timeout_s: float = NETWORK_TIMEOUT_S) -> ModelSource:
    """Locates the model: a TF Hub handle (fetched into the hub cache), a local or ``gs://`` path.

    ``kind`` None: the kind the model declares (``infer_kind``).  Cheap (no
    graph is built).  Raises ``ModelUnavailableError`` with one line saying
    what failed and how to point at a local copy.
    """
    kind = kind or infer_kind(path)
    entry = _kind(kind)
    path = path or entry.default_path
    if not path:
        raise ModelUnavailableError(f"--model {kind} needs --model_path {entry.path_hint}")
    if _is_hub_handle(path):
        local = _resolve_hub_handle(kind, path, network_timeout_s)
        return ModelSource(kind, local, class_map, hop_s, handle=path, options=options)
    path = os.path.expanduser(path).rstrip("/") or "/"
    if not _exists(path):
        raise ModelUnavailableError(
            f"model path {path} does not exist: pass --model_path {entry.path_hint}")
    return ModelSource(kind, path, class_map, hop_s, options=options)


def load_spec(source: ModelSource) -> ModelSpec:
    """The model's spec (labels, window, hop, fingerprint) without building its graph, once its files
    are checked whole: a partial copy fails here in one line, not on the workers."""
    entry = _kind(source.kind)
    # The spec first: a folder that is no export of this kind says so (and how to make one) before a
    # partial copy of one is looked for.
    spec = entry.spec_loader(source)
    path = source.local_path()
    with read_errors_as_unavailable(f"check the model files in {path}"):
        problem = model_files.damage(path, entry.needs_graph)
    if problem:
        raise ModelUnavailableError(problem)
    return spec


# --- worker side --------------------------------------------------------------------------------

def load_model(source: ModelSource) -> BatchedModel:
    """The model itself, ready to ``predict``; call once per process (it costs seconds)."""
    return _kind(source.kind).model_loader(source)


# --- TF Hub and file system ---------------------------------------------------------------------

def _is_hub_handle(path: str) -> bool:
    """URLs (tfhub.dev, kaggle.com/models, any host) and ``gs://`` tarballs, as ``hub.resolve`` takes them."""
    return path.startswith(("https://", "http://")) or (
        path.startswith("gs://") and path.endswith((".tar", ".tar.gz", ".tgz")))


def _exists(path: str) -> bool:
    try:
        return storage.exists(path)
    except Exception as e:  # noqa: BLE001 - e.g. gs:// without network or credentials
        raise ModelUnavailableError(
            f"could not reach {path} ({one_line(str(e))}): check the network and credentials, "
            "or pass --model_path with a local copy") from None


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """tensorflow_hub opens URLs without a timeout; the process default bounds them."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _resolve_hub_handle(kind: str, handle: str, timeout_s: float) -> str:
    """The handle's directory in the hub cache (``TFHUB_CACHE_DIR``), downloading it if needed."""
    import tensorflow_hub as hub

    try:
        with _socket_timeout(timeout_s):
            return hub.resolve(handle)
    except Exception as e:  # urllib, socket, HTTP and tarfile errors all mean the same to the user
        hint = _kind(kind).path_hint
        cache = os.environ.get("TFHUB_CACHE_DIR")
        where = f" into TFHUB_CACHE_DIR={cache}" if cache else ""
        raise ModelUnavailableError(
            f"could not download {handle}{where} (no network? {one_line(str(e))}): "
            f"download it once and pass --model_path {hint}") from None


def one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


# --- yamnet -------------------------------------------------------------------------------------

def _yamnet_files(source: ModelSource) -> tuple[str, str, bool]:
    """(weights path on this machine, class map path, is_h5); checks the hop asked for and that both
    files exist."""
    from audio_models import yamnet_weights as yw

    _check_yamnet_hop(source)
    path = source.local_path()
    is_h5 = path.lower().endswith((".h5", ".hdf5"))
    if is_h5:
        class_map = source.class_map or storage.join(storage.parent(path) if "/" in path else ".",
                                                     yw.CLASS_MAP_NAME)
        if not _exists(class_map):
            raise ModelUnavailableError(
                f"{path} has no class names: put {yw.CLASS_MAP_NAME} (from the YAMNet release) next to it "
                f"or pass its path as class_map (looked for {class_map})")
    else:
        if not _exists(yw.savedmodel_checkpoint_prefix(path) + ".index"):
            raise ModelUnavailableError(
                f"{path} is not a YAMNet SavedModel (no variables/variables.index): pass --model_path "
                f"{_REGISTRY[YAMNET].path_hint}")
        class_map = source.class_map or storage.join(path, "assets", yw.CLASS_MAP_NAME)
        if not _exists(class_map):
            raise ModelUnavailableError(f"{path} has no class map ({class_map} is missing)")
    return path, class_map, is_h5


def _check_yamnet_hop(source: ModelSource) -> None:
    from audio_models.yamnet import HOP_SAMPLES, SAMPLE_RATE

    if source.hop_s is not None and round(source.hop_s * SAMPLE_RATE) != HOP_SAMPLES:
        raise ModelUnavailableError(
            f"YAMNet's hop is fixed at {HOP_SAMPLES / SAMPLE_RATE} s (got --hop_s {source.hop_s})")


def _yamnet_spec(source: ModelSource) -> ModelSpec:
    from audio_models import yamnet_weights as yw
    from audio_models.yamnet import yamnet_spec

    path, class_map, is_h5 = _yamnet_files(source)
    with read_errors_as_unavailable(f"read YAMNet from {path}"):
        weight_files = [path] if is_h5 else yw.savedmodel_weight_files(path)
        return yamnet_spec(yw.read_class_names(class_map), storage.fingerprint(weight_files))


def _yamnet_model(source: ModelSource) -> BatchedModel:
    from audio_models.yamnet import YamnetModel

    path, class_map, is_h5 = _yamnet_files(source)
    with read_errors_as_unavailable(f"read YAMNet from {path}"):
        if is_h5:
            return YamnetModel.from_h5(path, class_map)
        return YamnetModel.from_savedmodel(path, class_map)


register_kind(YAMNET, _yamnet_spec, _yamnet_model, default_path=YAMNET_HUB_HANDLE,
              path_hint="/path/to/yamnet (a SavedModel directory) or yamnet.h5")
