"""Where TensorFlow runs: GPU memory growth, thread pools, and the device a model is placed on.

``configure_tensorflow`` must run before TensorFlow initialises its devices
(the first op, tensor or model load): memory growth and thread pools cannot be
changed afterwards.  On Dataflow GPU workers several SDK processes share one
GPU, and without memory growth the first would reserve all of its memory.
"""

from __future__ import annotations

import logging

CPU = "/CPU:0"
GPU = "/GPU:0"
DEVICE_CHOICES = ("auto", "cpu", "gpu")

# The fastest batch measured by `python -m bench.model_throughput` on CPU (docs/performance.md):
# beyond a few dozen windows the activations no longer stay in cache.
CPU_BATCH_SIZE = 32
# The rule (``python -m bench.gpu`` applies it to what it measures on the worker): the smallest batch
# whose model-only rate is within 10% of the best one, since beyond it a larger batch buys little and
# costs memory (~1 MB of activations per window) and latency.  YAMNet is small (69 M multiply-adds a
# window): a data-centre GPU needs a few hundred windows per call to fill its cores.  No GPU was at
# hand to measure; 256 is the guess until bench.gpu's rule says otherwise on the worker type.
GPU_BATCH_SIZE = 256

_log = logging.getLogger(__name__)
_selected: str | None = None


def visible_gpus() -> list:
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def _device_name(device: str, have_gpu: bool) -> str:
    choice = device.strip()
    if choice.lower() == "auto":
        return GPU if have_gpu else CPU
    if choice.lower() == "cpu":
        return CPU
    if choice.lower() == "gpu" or choice.upper().lstrip("/").startswith("GPU"):
        if not have_gpu:
            raise ValueError(f"device {device!r} asked for, but TensorFlow sees no GPU "
                             "(check the CUDA libraries and drivers, or use --device cpu)")
        return GPU if choice.lower() == "gpu" else "/" + choice.upper().lstrip("/")
    if choice.upper().lstrip("/").startswith("CPU"):
        return "/" + choice.upper().lstrip("/")
    raise ValueError(f"unknown device {device!r}: use one of {', '.join(DEVICE_CHOICES)} or '/GPU:N'")


def configure_tensorflow(device: str = "auto", intra_op_threads: int = 0, inter_op_threads: int = 0) -> str:
    """Prepares TensorFlow for inference in this process; returns the device models will use.

    Enables memory growth on every visible GPU, sets the thread pools when
    given (0 = TensorFlow's default, one thread per core), and remembers the
    chosen device ('/GPU:0' when ``device`` is 'auto' and a GPU is visible,
    else '/CPU:0').  Safe to call again and without a GPU; settings that can no
    longer change (TensorFlow already initialised) are left as they are, with
    a warning when they differ from what was asked.
    """
    global _selected
    import tensorflow as tf

    gpus = visible_gpus()
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # devices already initialised: growth can no longer change
            if not tf.config.experimental.get_memory_growth(gpu):
                _log.warning("TensorFlow initialised %s before memory growth was enabled; "
                             "it may reserve the whole GPU", gpu.name)
    _set_threads("intra-op", intra_op_threads, tf.config.threading.get_intra_op_parallelism_threads,
                 tf.config.threading.set_intra_op_parallelism_threads)
    _set_threads("inter-op", inter_op_threads, tf.config.threading.get_inter_op_parallelism_threads,
                 tf.config.threading.set_inter_op_parallelism_threads)
    _selected = _device_name(device, bool(gpus))
    return _selected


def _set_threads(what: str, wanted: int, get, set_) -> None:
    if wanted <= 0 or get() == wanted:
        return
    try:
        set_(wanted)
    except RuntimeError:
        _log.warning("TensorFlow is already initialised; keeping %d %s threads (asked for %d)",
                     get(), what, wanted)


def selected_device() -> str:
    """The device chosen by ``configure_tensorflow``, or the 'auto' choice if it was never called."""
    return _selected or _device_name("auto", bool(visible_gpus()))


def default_batch_size(device: str = "auto") -> int:
    """Windows per model call that run fastest on ``device`` ('auto', 'cpu', 'gpu' or '/XPU:N').

    'gpu' needs no GPU here: a driver may plan for GPU workers on a machine without one.
    """
    choice = device.strip().upper().lstrip("/")
    if choice == "AUTO":
        choice = "GPU" if visible_gpus() else "CPU"
    return GPU_BATCH_SIZE if choice.startswith("GPU") else CPU_BATCH_SIZE
