"""Beam RunInference with ``TFModelHandlerTensor`` on per-file waveforms, as Beam's docs lead to it.

    files -> decode each whole (the product's decoder) -> (uri, 1-D waveform tensor)
          -> RunInference(KeyedModelHandler(TFModelHandlerTensor(hub SavedModel)))
          -> one row per frame -> WriteToParquet

Two things a user has to add to the documented defaults, both forced by the
Hub-format SavedModel:

* loading: ``TFModelHandlerTensor`` loads through ``tf.keras.models.load_model``,
  which Keras 3 (TensorFlow >= 2.16) refuses for a SavedModel that is not a
  Keras model; the handler below loads it with ``tf.saved_model.load``
  (``hub.load``) instead;
* inference: the default ``inference_fn`` stacks the batch (``tf.stack``) and
  calls the model once, but the Hub signature takes one 1-D waveform, so a
  custom ``inference_fn`` calls the model once per element.  Beam's batching
  is left at its defaults: it groups elements, each is still one model call.
"""

from __future__ import annotations

import threading

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.parquetio import WriteToParquet
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference
from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerTensor
from apache_beam.options.pipeline_options import PipelineOptions

SAMPLE_RATE = 16000
HOP_S = 0.48

ROW_SCHEMA = pa.schema([
    ("uri", pa.string()),
    ("frame_index", pa.int32()),
    ("start_s", pa.float64()),
    ("scores", pa.list_(pa.float32())),
    ("embedding", pa.list_(pa.float32())),
])

_loaded: dict[str, object] = {}
_loaded_lock = threading.Lock()


def load_saved_model(model_path: str):
    """``tf.saved_model.load``, once per process.

    Kept across pipelines so that, like the other measurements, the timed run
    leaves out loading (the benchmark loads it before timing).
    """
    import tensorflow as tf

    with _loaded_lock:
        if model_path not in _loaded:
            _loaded[model_path] = tf.saved_model.load(model_path)
        return _loaded[model_path]


class HubSavedModelHandler(TFModelHandlerTensor):
    """``TFModelHandlerTensor`` that loads a Hub-format (non-Keras) SavedModel."""

    def load_model(self):
        return load_saved_model(self._model_uri)


def per_waveform_inference(model, batch, inference_args, model_id=None) -> list[PredictionResult]:
    """The Hub signature takes one 1-D waveform and no batch axis: one call per element."""
    return [PredictionResult(waveform, model(waveform), model_id) for waveform in batch]


def decode_file(uri: str):
    import tensorflow as tf

    from transforms.decoding.stream import decode_all

    return uri, tf.constant(decode_all(uri, SAMPLE_RATE))


def frame_rows(keyed_result: tuple[str, PredictionResult]):
    uri, result = keyed_result
    scores, embeddings, _log_mel = result.inference
    scores, embeddings = scores.numpy(), embeddings.numpy()
    for k in range(scores.shape[0]):
        yield {"uri": uri, "frame_index": k, "start_s": k * HOP_S,
               "scores": scores[k].tolist(), "embedding": embeddings[k].tolist()}


def run_pipeline(files: list[str], model_path: str, output_prefix: str, runner: str = "FnApiRunner") -> None:
    """Tags ``files`` into ``output_prefix-*.parquet`` with RunInference."""
    handler = KeyedModelHandler(HubSavedModelHandler(model_path, inference_fn=per_waveform_inference))
    options = PipelineOptions(runner=runner)
    with beam.Pipeline(options=options) as pipeline:
        _ = (pipeline
             | "Files" >> beam.Create(files)
             | "Decode" >> beam.Map(decode_file)
             | "RunInference" >> RunInference(handler)
             | "Rows" >> beam.FlatMap(frame_rows)
             | "Write" >> WriteToParquet(output_prefix, ROW_SCHEMA, file_name_suffix=".parquet"))
