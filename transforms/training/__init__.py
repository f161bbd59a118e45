"""Training: from frames and clips to classifiers.

- ``build``: ``build_training_set`` (frames + labels -> tf.Transform'ed TFRecord splits).
- ``labelled_rows`` / ``report``: its parts: labels and splits, the report (which runs:
  ``output.frame_source``).
- ``head_trainer``: a classifier head on a training set and its end-to-end export.
- ``keyword_clips`` / ``keyword_trainer``: the keyword CNN from labelled clips.
- ``evaluation``: confusion matrices and per-label accuracy; ``feature_comparison``: log-mel vs encoder.
"""
